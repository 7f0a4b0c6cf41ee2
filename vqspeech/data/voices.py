"""Synthetic voices for the demo corpus: eSpeak NG (always), flite and Festival (if installed).

eSpeak NG comes from the pip package ``espeakng-loader``, which ships ``libespeak-ng`` and
its data; we call its C API through ctypes (``espeak_Initialize`` in synchronous mode, a
synth callback that collects 16-bit samples at 22050 Hz). Speakers differ by language
variant (accent), voice variant (formants, breathiness: ``+m3``, ``+f2``), pitch and rate.
Past the catalogue, voices repeat with a vocal-tract scale (:attr:`Voice.tract`): the
synthesiser's output is played faster or slower, which moves formants and pitch together
the way a shorter or longer vocal tract does, so a corpus can have many distinct timbres.

flite (``flite`` binary: voices slt, awb, rms, kal16) and Festival (``festival -b``: kal, ked
diphone voices) sound closer to real speech; they are used when the binaries and voices
are installed (Debian: ``apt-get install flite festival festvox-kallpc16k
festvox-kdlpc16k``) and skipped otherwise, so the project works with pip packages only.

Two catalogues (:func:`voice_catalogue`): ``default``, the hand-picked voices above, which
small corpora have always used; and ``broad`` (issue 17), the same voices first and then
every usable voice found on the machine: every English eSpeak accent with every voice
variant (about 80 variants x 8 accents), flite's other voices, and every Festival voice
installed (``festvox-us-slt-hts`` and other HTS voices, and the non-English diphone voices,
which read English by their own language's rules; see :data:`FESTIVAL_KNOWN`).

Determinism: flite and Festival give identical output for identical input. eSpeak NG's
wave generator keeps state (glottal phase, noise generator) from one utterance to the
next, so its output depends on what the same process synthesised before; callers get
byte-identical corpora by synthesising each speaker's utterances in a fixed order in a
fresh process (see :mod:`vqspeech.data.synth`) after :func:`ESpeak` seeds its noise.

This module imports no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from vqspeech.audio import audio_info, load_audio
from vqspeech.errors import DataError

ESPEAK = "espeak"
FLITE = "flite"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FLITE, FESTIVAL)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker's voice.

    ``engine`` is ``espeak``, ``flite`` or ``festival``; ``name`` the engine's voice name
    (``en-gb-scotland+m2``, ``slt``, ``kal_diphone``); ``pitch``, ``rate`` and ``pitch_range``
    are eSpeak's 0-100 base pitch, words per minute and 0-100 intonation range (0: monotone,
    50: eSpeak's default; ignored by the other engines). ``tract`` scales
    every frequency of the engine's output (formants and pitch; durations by ``1 / tract``):
    the samples are declared at ``tract`` times the engine's rate, so nothing is computed and
    any engine can take it. 1.0 is the engine's own voice; 0.87-1.15 spans roughly the
    spread of adult vocal-tract lengths within a gender. ``gender``, ``accent`` and
    ``region`` go into ``speaker-info.txt``.
    """

    engine: str
    name: str
    gender: str
    accent: str
    region: str
    pitch: int = 50
    rate: int = 165
    tract: float = 1.0
    pitch_range: int = 50

    @property
    def label(self) -> str:
        """A short description for ``speaker-info.txt``'s comment column."""
        scaled = f" tract={self.tract:.3f}" if self.tract != 1.0 else ""
        if self.engine == ESPEAK:
            return f"espeak {self.name} pitch={self.pitch} rate={self.rate}{scaled}"
        return f"{self.engine} {self.name}{scaled}"


# Ordered so that the first speakers differ most: genders alternate, accents vary.
ESPEAK_FEMALE: tuple[Voice, ...] = (
    Voice(ESPEAK, "en-us+f2", "F", "American", "Ohio", pitch=58, rate=165),
    Voice(ESPEAK, "en-gb-scotland+f4", "F", "Scottish", "Edinburgh", pitch=54, rate=160),
    Voice(ESPEAK, "en+f3", "F", "English", "Southern England", pitch=62, rate=170),
    Voice(ESPEAK, "en-029+f1", "F", "Caribbean", "Kingston", pitch=50, rate=155),
    Voice(ESPEAK, "en-gb-x-rp+f5", "F", "English", "London", pitch=66, rate=175),
    Voice(ESPEAK, "en-gb-x-gbcwmd+steph", "F", "English", "West Midlands", pitch=56, rate=160),
    Voice(ESPEAK, "en-us-nyc+belinda", "F", "American", "New York", pitch=60, rate=180),
    Voice(ESPEAK, "en-gb-x-gbclan+Annie", "F", "English", "Lancashire", pitch=52, rate=165),
)
ESPEAK_MALE: tuple[Voice, ...] = (
    Voice(ESPEAK, "en+m3", "M", "English", "Southern England", pitch=38, rate=160),
    Voice(ESPEAK, "en-us+m1", "M", "American", "Iowa", pitch=30, rate=170),
    Voice(ESPEAK, "en-gb-scotland+m2", "M", "Scottish", "Glasgow", pitch=42, rate=165),
    Voice(ESPEAK, "en-gb-x-gbcwmd+m4", "M", "English", "Birmingham", pitch=34, rate=155),
    Voice(ESPEAK, "en-029+m5", "M", "Caribbean", "Trinidad", pitch=40, rate=160),
    Voice(ESPEAK, "en-gb-x-rp+m7", "M", "English", "Oxford", pitch=28, rate=175),
    Voice(ESPEAK, "en-us-nyc+m6", "M", "American", "New York", pitch=36, rate=185),
    Voice(ESPEAK, "en-gb-x-gbclan+m8", "M", "English", "Lancashire", pitch=44, rate=160),
)
FLITE_VOICES: tuple[Voice, ...] = (
    Voice(FLITE, "slt", "F", "American", "Pittsburgh"),
    Voice(FLITE, "awb", "M", "Scottish", "Edinburgh"),
    Voice(FLITE, "rms", "M", "American", "Pittsburgh"),
    Voice(FLITE, "kal16", "M", "American", "Pittsburgh"),
)
FESTIVAL_VOICES: tuple[Voice, ...] = (
    Voice(FESTIVAL, "ked_diphone", "M", "American", "Pittsburgh"),
    # The same speaker as flite's kal16: used only when flite is missing.
    Voice(FESTIVAL, "kal_diphone", "M", "American", "Pittsburgh"),
)


#: The catalogues: ``default`` is the 16-21 voices above (what small corpora have always used);
#: ``broad`` is the same voices first, then every other usable voice found here (issue 17).
DEFAULT_CATALOGUE, BROAD_CATALOGUE = "default", "broad"
CATALOGUES = (DEFAULT_CATALOGUE, BROAD_CATALOGUE)

#: eSpeak NG's English accents: ``(language, accent, region)``. ``en-shaw`` (Shavian script) is
#: left out: it reads the Latin alphabet letter by letter.
ESPEAK_ACCENTS: tuple[tuple[str, str, str], ...] = (
    ("en", "English", "Southern England"),
    ("en-us", "American", "General American"),
    ("en-gb-scotland", "Scottish", "Scotland"),
    ("en-029", "Caribbean", "West Indies"),
    ("en-gb-x-rp", "English", "Received Pronunciation"),
    ("en-gb-x-gbcwmd", "English", "West Midlands"),
    ("en-us-nyc", "American", "New York"),
    ("en-gb-x-gbclan", "English", "Lancashire"),
)
#: eSpeak variants that are effects rather than voices (robots, long echoes, a demon, a croak),
#: a speed test, and whispers (no voicing at all: whisper, whisperf, caleb); matched without
#: case, ``robosoft*`` by prefix.
ESPEAK_SKIPPED_VARIANTS = frozenset(
    {"demonic", "unirobot", "anikarobot", "croak", "fast", "whisper", "whisperf", "caleb",
     "ricishaymax", "ricishaymax2", "ricishaymax3"}
)  # fmt: skip

#: flite voices the broad catalogue adds (``kal``: kal16's speaker in 8 kHz diphones); ``awb_time``
#: is a limited-domain voice that can only say the time, so it is never used.
FLITE_EXTRA: tuple[Voice, ...] = (Voice(FLITE, "kal", "M", "American", "Pittsburgh"),)
FLITE_UNUSABLE = frozenset({"awb_time"})

#: What is known about Festival voices, by the name ``(voice_NAME)`` selects. Non-English voices
#: read the English sentences with their own language's letter-to-sound rules and phones:
#: accented, sometimes garbled English, but real recorded voices, and as long as English (4.4-5.2 s
#: against 5.0 s for ked_diphone on the same sentence); the broad catalogue takes them for their
#: timbres (the only child among them: czech_krb), and their accent column names the language.
FESTIVAL_KNOWN: dict[str, tuple[str, str, str]] = {
    "kal_diphone": ("M", "American", "Pittsburgh"),
    "ked_diphone": ("M", "American", "Pittsburgh"),
    "rab_diphone": ("M", "British", "Britain"),
    "don_diphone": ("M", "British", "Britain"),
    "lp_diphone": ("F", "Italian", "Italy"),
    "pc_diphone": ("M", "Italian", "Italy"),
    "suo_fi_lj_diphone": ("F", "Finnish", "Finland"),
    "hy_fi_mv_diphone": ("M", "Finnish", "Finland"),
    "upc_ca_ona_hts": ("F", "Catalan", "Catalonia"),
    "czech_krb": ("M", "Czech", "Czechia (child)"),
    "czech_ph": ("M", "Czech", "Czechia"),
    "czech_dita": ("F", "Czech", "Czechia"),
    "czech_machac": ("M", "Czech", "Czechia"),
    "msu_ru_nsh_clunits": ("M", "Russian", "Russia"),
}
#: CMU ARCTIC speakers, whose voices come as ``cmu_us_<id>_arctic_{hts,clunits}`` and
#: ``nitech_us_<id>_arctic_hts``.
ARCTIC_SPEAKERS: dict[str, tuple[str, str, str]] = {
    "slt": ("F", "American", "Pittsburgh"),
    "clb": ("F", "American", "Pittsburgh"),
    "bdl": ("M", "American", "Pittsburgh"),
    "rms": ("M", "American", "Pittsburgh"),
    "awb": ("M", "Scottish", "Edinburgh"),
    "jmk": ("M", "Canadian", "Ontario"),
    "ksp": ("M", "Indian", "India"),
}
_ARCTIC = re.compile(r"^(?:cmu|nitech)_us_([a-z]+)_arctic_(?:hts|clunits)$")
#: Where Debian and Festival's own installs keep voices: ``BASE/<language>/<voice>/festvox/<voice>.scm``.
FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))


def available_engines() -> tuple[str, ...]:
    """Engines usable here: always ``espeak`` (a pip dependency), plus installed binaries."""
    found = [ESPEAK]
    if shutil.which("flite"):
        found.append(FLITE)
    if shutil.which("festival") and _festival_voices():
        found.append(FESTIVAL)
    return tuple(found)


def festival_voices(bases: Sequence[Path] = FESTIVAL_VOICE_DIRS) -> dict[str, str]:
    """Festival voices installed under ``bases``: ``{voice name: language folder}``, sorted by name.

    A voice is a folder ``BASE/<language>/<name>`` holding ``festvox/<name>.scm``, the file that
    defines ``(voice_<name>)``: diphone voices keep their units in ``group/``, HTS voices in
    ``hts/``, and shared folders (Finnish ``suopuhe.common``) hold no such file, so they are not
    taken for voices. Names that Scheme could not take as a symbol are skipped. Where a name is
    in two bases, the first base wins.
    """
    found: dict[str, str] = {}
    for base in bases:
        try:
            languages = sorted(p for p in Path(base).iterdir() if p.is_dir())
        except OSError:
            continue
        for language in languages:
            try:
                folders = sorted(p for p in language.iterdir() if p.is_dir())
            except OSError:
                continue
            for folder in folders:
                name = folder.name
                if _SCHEME_NAME.match(name) and (folder / "festvox" / f"{name}.scm").is_file():
                    found.setdefault(name, language.name)
    return dict(sorted(found.items()))


_SCHEME_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_ENGLISH_FOLDERS = frozenset({"english", "us", "british", "uk", "en", "american"})


def _festival_voices() -> set[str]:
    return set(festival_voices())


def festival_voice(name: str, language: str) -> Voice:
    """The :class:`Voice` of Festival voice ``name`` found in folder ``language`` (metadata as known).

    Unknown voices get gender ``?`` (read back as unknown) and their language folder as accent.
    """
    if name in FESTIVAL_KNOWN:
        gender, accent, region = FESTIVAL_KNOWN[name]
    elif (arctic := _ARCTIC.match(name)) and arctic.group(1) in ARCTIC_SPEAKERS:
        gender, accent, region = ARCTIC_SPEAKERS[arctic.group(1)]
    else:
        english = language.lower() in _ENGLISH_FOLDERS
        gender, accent, region = "?", "English" if english else language.capitalize(), "unknown"
    return Voice(FESTIVAL, name, gender, accent, region)


def flite_voices() -> tuple[str, ...]:
    """Voice names the ``flite`` binary lists (``flite -lv``); empty when flite is missing."""
    if not shutil.which("flite"):
        return ()
    try:
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    _, _, names = listing.partition(":")
    return tuple(n for n in names.split() if _SCHEME_NAME.match(n))


@dataclass(frozen=True)
class Variant:
    """An eSpeak NG voice variant (``+name``): its file name and gender (``F``/``M``)."""

    name: str
    gender: str


def espeak_variants(data_path: str | Path | None = None) -> tuple[Variant, ...]:
    """eSpeak NG's voice variants (``espeak-ng-data/voices/!v``), sorted by name, effects left out.

    The gender is the file's ``gender`` line; files without one are female when their ``pitch``
    line starts at 130 Hz or more, else male (eSpeak's own default voice is male). Names with
    spaces (``Mr serious``) are skipped: ``+name`` cannot hold them. ``data_path``: the data
    folder (default: the one ``espeakng-loader`` ships).
    """
    if data_path is None:
        try:
            import espeakng_loader
        except ImportError:
            raise DataError(
                "eSpeak NG is missing: pip install espeakng-loader (or pip install 'vqspeech[synth]')"
            ) from None
        data_path = espeakng_loader.get_data_path()
    folder = Path(data_path) / "voices" / "!v"
    try:
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name.lower())
    except OSError as exc:
        raise DataError(f"cannot list eSpeak NG's voice variants in {folder} ({exc})") from None
    variants = []
    for path in files:
        name = path.name
        low = name.lower()
        if not _SCHEME_NAME.match(name) or low in ESPEAK_SKIPPED_VARIANTS or low.startswith("robosoft"):
            continue
        variants.append(Variant(name, _variant_gender(path.read_text(encoding="utf-8", errors="replace"))))
    return tuple(variants)


def _variant_gender(text: str) -> str:
    pitch = None
    for line in text.splitlines():
        words = line.split("//")[0].split()
        if len(words) >= 2 and words[0].lower() == "gender":
            if words[1].lower().startswith("f"):
                return "F"
            if words[1].lower().startswith("m"):
                return "M"
        if len(words) >= 2 and words[0].lower() == "pitch":
            with contextlib.suppress(ValueError):
                pitch = float(words[1])
    return "F" if pitch is not None and pitch >= 130 else "M"


def voice_catalogue(
    engines: tuple[str, ...] | None = None, catalogue: str = DEFAULT_CATALOGUE
) -> list[Voice]:
    """Voices in the order speakers get them: natural-sounding first, genders alternating.

    ``engines=None`` uses every available engine (:func:`available_engines`); an engine
    that is asked for but missing raises DataError. ``catalogue`` is ``default`` or ``broad``
    (see :data:`CATALOGUES`): the broad catalogue starts with the default one, unchanged, then
    adds every other usable flite and Festival voice found here (genders alternating), then
    every English eSpeak accent with every voice variant (:func:`espeak_variants`), in passes
    that each use every variant once (genders alternating), with a different accent each pass.
    """
    if catalogue not in CATALOGUES:
        raise DataError(f"unknown voice catalogue {catalogue!r}; use one of {', '.join(CATALOGUES)}")
    have = available_engines()
    wanted = have if engines is None else tuple(engines)
    for engine in wanted:
        if engine not in ENGINES:
            raise DataError(f"unknown synthesis engine {engine!r}; use one of {', '.join(ENGINES)}")
        if engine not in have:
            raise DataError(
                f"synthesis engine {engine!r} is not installed here; available: {', '.join(have)}"
            )
    festival = festival_voices() if FESTIVAL in wanted else {}
    natural: list[Voice] = []
    if FLITE in wanted:
        natural.extend(FLITE_VOICES)
    natural.extend(
        v for v in FESTIVAL_VOICES if v.name in festival and not (FLITE in wanted and v.name == "kal_diphone")
    )
    female = [v for v in natural if v.gender == "F"]
    male = [v for v in natural if v.gender == "M"]
    if ESPEAK in wanted:
        female.extend(ESPEAK_FEMALE)
        male.extend(ESPEAK_MALE)
    order = _alternate(female, male)
    if catalogue == BROAD_CATALOGUE:
        order.extend(_broad_extra(wanted, festival, order))
    return order


def _alternate(female: Sequence[_T], male: Sequence[_T]) -> list[_T]:
    order: list[_T] = []
    for i in range(max(len(female), len(male))):
        order.extend(group[i] for group in (female, male) if i < len(group))
    return order


def _broad_extra(wanted: tuple[str, ...], festival: dict[str, str], taken: Sequence[Voice]) -> list[Voice]:
    """The broad catalogue's voices past the default ones (see :func:`voice_catalogue`)."""
    seen = {(v.engine, v.name) for v in taken}
    natural: list[Voice] = []
    if FLITE in wanted:
        listed = flite_voices()
        natural.extend(v for v in FLITE_EXTRA if v.name in listed)
        known = {v.name for v in (*FLITE_VOICES, *FLITE_EXTRA)}
        natural.extend(
            Voice(FLITE, name, "?", "American", "unknown")
            for name in listed
            if name not in known and name not in FLITE_UNUSABLE
        )
    for name, language in festival.items():
        if not (FLITE in wanted and name == "kal_diphone"):  # flite's kal16 is the same speaker
            natural.append(festival_voice(name, language))
    natural = [v for v in natural if (v.engine, v.name) not in seen]
    extra = _alternate([v for v in natural if v.gender == "F"], [v for v in natural if v.gender == "M"])
    extra.extend(v for v in natural if v.gender not in ("F", "M"))
    if ESPEAK in wanted:
        found = espeak_variants()
        variants = _alternate([v for v in found if v.gender == "F"], [v for v in found if v.gender == "M"])
        for turn in range(len(ESPEAK_ACCENTS)):
            for i, variant in enumerate(variants):
                language, accent, region = ESPEAK_ACCENTS[(i + turn) % len(ESPEAK_ACCENTS)]
                name = f"{language}+{variant.name}"
                if (ESPEAK, name) in seen:
                    continue
                # eSpeak's 0-100 pitch and its rate, spread by a hash of the name (no RNG state).
                h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
                pitch, rate = 38 + h % 25, 150 + (h // 25) % 36
                extra.append(Voice(ESPEAK, name, variant.gender, accent, region, pitch=pitch, rate=rate))
    return extra


def voices_for(
    n_speakers: int, engines: tuple[str, ...] | None = None, catalogue: str = DEFAULT_CATALOGUE
) -> list[Voice]:
    """``n_speakers`` distinct voices: the catalogue, then its voices again with new vocal tracts.

    The first ``len(voice_catalogue(engines, catalogue))`` voices are the catalogue itself (so
    small corpora do not change, and the broad catalogue's first voices are the default one's).
    Each later pass over the catalogue gives every voice a vocal-tract scale
    (:attr:`Voice.tract`, between 0.87 and 1.15, spread so that no two copies of a voice share
    one) and moves eSpeak's pitch and rate: new timbres, not copies, which is what a speaker
    encoder needs to learn to generalise (issue 7).
    """
    voices = voice_catalogue(engines, catalogue)
    out = voices[:n_speakers]
    k = 0
    while len(out) < n_speakers:
        cycle = 1 + k // len(voices)
        v = voices[k % len(voices)]
        # Golden-ratio spread over [0, 1) along the catalogue, shifted by sqrt(2) - 1 per pass,
        # so one voice's copies in successive passes get different tracts.
        position = ((k % len(voices) + 1) * 0.6180339887 + (cycle - 1) * 0.4142135624) % 1.0
        tract = round(float(2.0 ** (0.4 * (position - 0.5))), 3)  # 0.87 .. 1.15
        shift = 8 * ((cycle + 1) // 2) * (1 if cycle % 2 else -1)
        out.append(
            replace(v, pitch=int(np.clip(v.pitch + shift, 0, 99)), rate=v.rate + 10 * cycle, tract=tract)
        )
        k += 1
    return out


# --------------------------------------------------------------------------------------
# eSpeak NG through ctypes

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from eSpeak NG's ``speak_lib.h`` (API revision 12).

    ``sample`` is the event's position in the output, in samples from the start of the
    utterance; for a phoneme event ``id`` holds its mnemonic (up to 8 UTF-8 bytes, NUL-padded).
    """

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class ESpeak:
    """The eSpeak NG library, initialised once per process (the library is a singleton).

    ``ESpeak().synthesize(text, voice) -> (int16 [T], sample_rate)``. Raises DataError
    when ``espeakng-loader`` is not installed or the library fails to load.
    """

    _instance: ESpeak | None = None

    def __new__(cls) -> ESpeak:
        if cls._instance is None:
            instance = super().__new__(cls)
            instance._load()
            cls._instance = instance
        return cls._instance

    def _load(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise DataError(
                "eSpeak NG is missing: pip install espeakng-loader (or pip install 'vqspeech[synth]')"
            ) from None
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise DataError(
                f"cannot load eSpeak NG from espeakng-loader ({exc}); reinstall espeakng-loader"
            ) from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetPhonemeEvents.argtypes = [ctypes.c_int, ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise DataError(
                f"eSpeak NG failed to initialise with data at {data_path}; reinstall espeakng-loader"
            )
        self.sample_rate = int(rate)
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._phones: list[tuple[int, str]] = []

        def collect(wav: ctypes._Pointer[ctypes.c_short], n: int, events: ctypes._Pointer[_Event]) -> int:
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events and events[i].type != _EVENT_LIST_TERMINATED:
                if events[i].type == _EVENT_PHONEME:
                    name = events[i].id.decode("utf-8", errors="replace")  # c_char array: up to NUL
                    self._phones.append((int(events[i].sample), name))
                i += 1
            return 0

        self._callback = _SYNTH_CALLBACK(collect)  # kept on self: ctypes must not free it
        lib.espeak_SetSynthCallback(self._callback)

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
        """Speak ``text`` with ``voice`` -> ``(int16 [T], sample_rate)`` (22050 Hz)."""
        samples, rate, _ = self._speak(text, voice, seed, phones=False)
        return samples, rate

    def synthesize_phones(
        self, text: str, voice: Voice, seed: int = 0
    ) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
        """:meth:`synthesize` plus eSpeak's phoneme events: ``(int16 [T], sample_rate, [(sample, phone)])``.

        Each event is the sample where a phoneme starts and its mnemonic as eSpeak writes it
        (``'i:``: a stress mark, then the phoneme; ``_:``/``_``: pauses), in order. The audio is
        the same, sample for sample, as :meth:`synthesize` gives in the same state: the events
        are only reported (checked in ``tests/test_phones.py``).
        """
        return self._speak(text, voice, seed, phones=True)

    def _speak(
        self, text: str, voice: Voice, seed: int, phones: bool
    ) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice.name!r}; reinstall espeakng-loader")
        lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        lib.espeak_SetParameter(_PARAM_RANGE, voice.pitch_range, 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, 60, 0)  # below 100: loud voices clip inside eSpeak
        lib.espeak_ng_SetRandSeed(seed)
        lib.espeak_ng_SetPhonemeEvents(int(phones), 0)
        self._chunks, self._phones = [], []
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data)
        try:
            status = lib.espeak_Synth(buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        finally:
            lib.espeak_ng_SetPhonemeEvents(0, 0)
        if status != 0 or not self._chunks:
            raise DataError(f"eSpeak NG failed to speak {text[:40]!r} (status {status})")
        return np.concatenate(self._chunks), self.sample_rate, list(self._phones)


# --------------------------------------------------------------------------------------
# flite and Festival through their command-line tools


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise DataError(f"{what} failed ({exc}; {detail.decode(errors='replace').strip()[-200:]})") from None


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak ``text`` with any engine -> ``(float32 [T] in [-1, 1], sample_rate)``."""
    return synthesize_many([text], voice, [seed])[0]


def synthesize_many(
    texts: Sequence[str], voice: Voice, seeds: Sequence[int] | None = None
) -> list[tuple[np.ndarray, int]]:
    """Speak each text with ``voice``, in order -> ``[(float32 [T], sample_rate), ...]``.

    Festival runs once for all texts (its start-up costs more than a sentence); eSpeak
    seeds its noise generator with ``seeds[i]`` before text ``i``.
    """
    seeds = list(seeds) if seeds is not None else [0] * len(texts)
    spoken = _synthesize_many(texts, voice, seeds)
    # The vocal-tract scale: the same samples, declared at a higher or lower rate.
    return [(audio, round(rate * voice.tract)) for audio, rate in spoken]


def synthesize_with_phones(
    text: str, voice: Voice, seed: int = 0
) -> tuple[np.ndarray, int, list[tuple[int, str]]]:
    """:func:`synthesize` for an eSpeak voice, plus where each phoneme starts.

    -> ``(float32 [T], sample_rate, [(sample, phoneme), ...])``: the audio and rate exactly as
    :func:`synthesize` gives them (the rate scaled by the vocal tract), and eSpeak's phoneme
    events as indices into that audio (see :meth:`ESpeak.synthesize_phones`). DataError for
    another engine: only eSpeak reports its phonemes.
    """
    if voice.engine != ESPEAK:
        raise DataError(
            f"phoneme timings come from eSpeak NG only, not from {voice.engine} voice {voice.name}"
        )
    samples, rate, events = ESpeak().synthesize_phones(text, voice, seed=seed)
    return _espeak_float(samples), round(rate * voice.tract), events


def _espeak_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / np.float32(32768.0)


def _synthesize_many(texts: Sequence[str], voice: Voice, seeds: list[int]) -> list[tuple[np.ndarray, int]]:
    if voice.engine == ESPEAK:
        engine = ESpeak()
        out = []
        for text, seed in zip(texts, seeds, strict=True):
            samples, rate = engine.synthesize(text, voice, seed=seed)
            out.append((_espeak_float(samples), rate))
        return out
    if voice.engine not in (FLITE, FESTIVAL):
        raise DataError(f"unknown synthesis engine {voice.engine!r}; use one of {', '.join(ENGINES)}")
    with tempfile.TemporaryDirectory(prefix="vqspeech-synth-") as tmp:
        wavs = [Path(tmp) / f"{i:05d}.wav" for i in range(len(texts))]
        if voice.engine == FLITE:
            for text, wav in zip(texts, wavs, strict=True):
                text_file = Path(tmp) / "text.txt"
                text_file.write_text(text + "\n", encoding="utf-8")
                _run(
                    ["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(wav)],
                    f"flite voice {voice.name}",
                )
        else:
            script = [f"(voice_{voice.name})"]
            for text, wav in zip(texts, wavs, strict=True):
                quoted = text.replace("\\", " ").replace('"', "'")
                script.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{wav}" \'riff)')
            script_file = Path(tmp) / "script.scm"
            script_file.write_text("\n".join(script) + "\n", encoding="utf-8")
            _run(["festival", "-b", str(script_file)], f"Festival voice {voice.name}")
        out = []
        for wav in wavs:
            if not wav.is_file():
                raise DataError(
                    f"{voice.engine} voice {voice.name} wrote no audio; check that it is installed"
                )
            _, rate, _ = audio_info(wav)
            out.append((load_audio(wav, rate), rate))
        return out
