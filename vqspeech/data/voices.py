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

Determinism: flite and Festival give identical output for identical input. eSpeak NG's
wave generator keeps state (glottal phase, noise generator) from one utterance to the
next, so its output depends on what the same process synthesised before; callers get
byte-identical corpora by synthesising each speaker's utterances in a fixed order in a
fresh process (see :mod:`vqspeech.data.synth`) after :func:`ESpeak` seeds its noise.

This module imports no torch.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vqspeech.audio import audio_info, load_audio
from vqspeech.errors import DataError

ESPEAK = "espeak"
FLITE = "flite"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FLITE, FESTIVAL)


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


def available_engines() -> tuple[str, ...]:
    """Engines usable here: always ``espeak`` (a pip dependency), plus installed binaries."""
    found = [ESPEAK]
    if shutil.which("flite"):
        found.append(FLITE)
    if shutil.which("festival") and _festival_voices():
        found.append(FESTIVAL)
    return tuple(found)


def _festival_voices() -> set[str]:
    names: set[str] = set()
    for base in (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")):
        if base.is_dir():
            names.update(p.name for p in base.glob("*/*") if p.is_dir())
    return names


def voice_catalogue(engines: tuple[str, ...] | None = None) -> list[Voice]:
    """Voices in the order speakers get them: natural-sounding first, genders alternating.

    ``engines=None`` uses every available engine (:func:`available_engines`); an engine
    that is asked for but missing raises DataError.
    """
    have = available_engines()
    wanted = have if engines is None else tuple(engines)
    for engine in wanted:
        if engine not in ENGINES:
            raise DataError(f"unknown synthesis engine {engine!r}; use one of {', '.join(ENGINES)}")
        if engine not in have:
            raise DataError(
                f"synthesis engine {engine!r} is not installed here; available: {', '.join(have)}"
            )
    natural: list[Voice] = []
    if FLITE in wanted:
        natural.extend(FLITE_VOICES)
    if FESTIVAL in wanted:
        festival = _festival_voices()
        natural.extend(
            v
            for v in FESTIVAL_VOICES
            if v.name in festival and not (FLITE in wanted and v.name == "kal_diphone")
        )
    female = [v for v in natural if v.gender == "F"]
    male = [v for v in natural if v.gender == "M"]
    if ESPEAK in wanted:
        female.extend(ESPEAK_FEMALE)
        male.extend(ESPEAK_MALE)
    order: list[Voice] = []
    for i in range(max(len(female), len(male))):
        order.extend(group[i] for group in (female, male) if i < len(group))
    return order


def voices_for(n_speakers: int, engines: tuple[str, ...] | None = None) -> list[Voice]:
    """``n_speakers`` distinct voices: the catalogue, then its voices again with new vocal tracts.

    The first ``len(voice_catalogue(engines))`` voices are the catalogue itself (so small
    corpora do not change). Each later pass over the catalogue gives every voice a vocal-tract
    scale (:attr:`Voice.tract`, between 0.87 and 1.15, spread so that no two copies of a
    voice share one) and moves eSpeak's pitch and rate: new timbres, not copies, which is
    what a speaker encoder needs to learn to generalise (issue 7).
    """
    catalogue = voice_catalogue(engines)
    out = catalogue[:n_speakers]
    k = 0
    while len(out) < n_speakers:
        cycle = 1 + k // len(catalogue)
        v = catalogue[k % len(catalogue)]
        # Golden-ratio spread over [0, 1) along the catalogue, shifted by sqrt(2) - 1 per pass,
        # so one voice's copies in successive passes get different tracts.
        position = ((k % len(catalogue) + 1) * 0.6180339887 + (cycle - 1) * 0.4142135624) % 1.0
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
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
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
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise DataError(
                f"eSpeak NG failed to initialise with data at {data_path}; reinstall espeakng-loader"
            )
        self.sample_rate = int(rate)
        self._lib = lib
        self._chunks: list[np.ndarray] = []

        def collect(wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _SYNTH_CALLBACK(collect)  # kept on self: ctypes must not free it
        lib.espeak_SetSynthCallback(self._callback)

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
        """Speak ``text`` with ``voice`` -> ``(int16 [T], sample_rate)`` (22050 Hz)."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice.name!r}; reinstall espeakng-loader")
        lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        lib.espeak_SetParameter(_PARAM_RANGE, voice.pitch_range, 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, 60, 0)  # below 100: loud voices clip inside eSpeak
        lib.espeak_ng_SetRandSeed(seed)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data)
        status = lib.espeak_Synth(buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise DataError(f"eSpeak NG failed to speak {text[:40]!r} (status {status})")
        return np.concatenate(self._chunks), self.sample_rate


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


def _synthesize_many(texts: Sequence[str], voice: Voice, seeds: list[int]) -> list[tuple[np.ndarray, int]]:
    if voice.engine == ESPEAK:
        engine = ESpeak()
        out = []
        for text, seed in zip(texts, seeds, strict=True):
            samples, rate = engine.synthesize(text, voice, seed=seed)
            out.append((samples.astype(np.float32) / np.float32(32768.0), rate))
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
