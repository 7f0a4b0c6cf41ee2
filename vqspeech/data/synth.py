"""The demo corpus: a small multi-speaker corpus synthesised offline, in the VCTK 0.92 layout.

:func:`synthesize_corpus` writes::

    OUT/speaker-info.txt                               ID AGE GENDER ACCENTS REGION COMMENTS
    OUT/txt/s01/s01_001.txt                            the sentence
    OUT/wav48_silence_trimmed/s01/s01_001_mic1.flac    48 kHz 16-bit mono FLAC
    OUT/phones/s01/s01_001.tsv                         phone spans, eSpeak voices only

so :func:`vqspeech.data.open_corpus` reads it like the real VCTK 0.92. Speakers ``s01``,
``s02``, ... get distinct voices (:mod:`vqspeech.data.voices`): eSpeak NG always, flite and
Festival when installed. Utterance 001 is the same sentence for every speaker (like VCTK's
shared elicitation paragraph, handy for voice-conversion demos); the others are drawn
without replacement from :data:`~vqspeech.data.sentences.SENTENCES`, per speaker. The
phone files (:mod:`vqspeech.data.phones`) come from the same eSpeak call as the audio, which
reporting them does not change.

The same arguments on a machine with the same engines give byte-identical files: each
speaker is synthesised in a fresh worker process (eSpeak NG carries state across
utterances, see :mod:`vqspeech.data.voices`), in a fixed order, with fixed noise seeds;
FLAC output has no timestamps. Speakers are synthesised in parallel, one process per CPU.

With a :class:`Prosody` (off by default, so the demo corpus is unchanged), every eSpeak NG
utterance gets its own rate, base pitch and intonation range around its speaker's voice,
drawn from ``(seed, speaker, utterance)`` (issue 17: a speaker's utterances should not all
sound alike). flite and Festival voices are left as they are.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import vqspeech
from vqspeech.audio import resample, save_audio
from vqspeech.data.cache import Progress, trim_bounds
from vqspeech.data.phones import PHONES_DIR, phones_path, shift_spans, spans_from_events, write_phones
from vqspeech.data.sentences import SENTENCES
from vqspeech.data.voices import (
    DEFAULT_CATALOGUE,
    ESPEAK,
    FESTIVAL,
    Voice,
    synthesize,
    synthesize_many,
    synthesize_with_phones,
    voices_for,
)
from vqspeech.errors import DataError

#: Sample rate of the written FLAC files (VCTK's).
SAMPLE_RATE = 48000
AUDIO_DIR = "wav48_silence_trimmed"


@dataclass(frozen=True)
class SynthSpeaker:
    """A synthetic speaker: ``name`` (``s01``), its :class:`Voice`, an age and a loudness gain."""

    name: str
    voice: Voice
    age: int
    gain: float


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize_corpus` wrote: the root, the speakers, utterance count, seconds of audio."""

    root: Path
    speakers: tuple[SynthSpeaker, ...]
    n_utterances: int
    seconds: float


@dataclass(frozen=True)
class Prosody:
    """Per-utterance prosody of eSpeak NG voices (issue 17): each utterance's rate is its
    voice's times ``2 ** u``, ``u`` uniform in ``[-rate_octaves, rate_octaves]`` (0.3: 0.81x to
    1.23x); its base pitch is the voice's plus an integer in ``[-pitch_spread, pitch_spread]``
    (eSpeak's 0-99 scale, kept in it); its intonation range is an integer in ``pitch_range``
    (eSpeak's 0-100; 50 is its default, 0 monotone)."""

    rate_octaves: float = 0.3
    pitch_spread: int = 12
    pitch_range: tuple[int, int] = (20, 90)

    def __post_init__(self) -> None:
        lo, hi = self.pitch_range
        if self.rate_octaves < 0 or self.pitch_spread < 0 or not 0 <= lo <= hi <= 100:
            raise DataError(
                "prosody needs rate_octaves >= 0, pitch_spread >= 0 and 0 <= pitch_range low <= high <= 100"
            )

    def draw(self, voice: Voice, rng: np.random.Generator) -> Voice:
        """``voice`` with this utterance's rate, pitch and range (unchanged unless eSpeak)."""
        rate = round(voice.rate * 2.0 ** rng.uniform(-self.rate_octaves, self.rate_octaves))
        pitch = voice.pitch + int(rng.integers(-self.pitch_spread, self.pitch_spread + 1))
        pitch_range = int(rng.integers(self.pitch_range[0], self.pitch_range[1] + 1))
        if voice.engine != ESPEAK:
            return voice
        return replace(voice, rate=max(80, rate), pitch=int(np.clip(pitch, 0, 99)), pitch_range=pitch_range)


def _seed_of(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def plan_corpus(
    n_speakers: int,
    n_utterances: int,
    seed: int = 0,
    engines: Sequence[str] | None = None,
    catalogue: str = DEFAULT_CATALOGUE,
) -> list[tuple[SynthSpeaker, list[str]]]:
    """Who says what: ``[(speaker, [sentence for utterance 001, 002, ...]), ...]``.

    A pure function of its arguments and of which engines (and, for the ``broad`` voice
    ``catalogue``, which voices) are installed.
    """
    if n_speakers < 1:
        raise DataError(f"n_speakers must be at least 1, got {n_speakers}")
    if n_utterances < 1:
        raise DataError(f"n_utterances must be at least 1, got {n_utterances}")
    voices = voices_for(n_speakers, tuple(engines) if engines is not None else None, catalogue)
    shared = int(np.random.default_rng([seed, 0]).integers(len(SENTENCES)))
    width = max(2, len(str(n_speakers)))
    plan: list[tuple[SynthSpeaker, list[str]]] = []
    for i, voice in enumerate(voices):
        rng = np.random.default_rng([seed, 1, i])
        pool = [j for j in range(len(SENTENCES)) if j != shared]
        order = list(rng.permutation(pool))
        while len(order) < n_utterances - 1:  # more utterances than sentences: repeat
            order.extend(rng.permutation(pool))
        sentences = [SENTENCES[shared]] + [SENTENCES[j] for j in order[: n_utterances - 1]]
        speaker = SynthSpeaker(
            name=f"s{i + 1:0{width}d}",
            voice=voice,
            age=int(rng.integers(19, 65)),
            gain=float(np.round(10 ** (-rng.uniform(0.0, 6.0) / 20), 3)),
        )
        plan.append((speaker, sentences))
    return plan


def render(text: str, voice: Voice, gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """One utterance as float32 ``[T]`` at 48 kHz: synthesised, trimmed, levelled (see :func:`finish`)."""
    audio, rate = synthesize(text, voice, seed=seed)
    return finish(audio, rate, gain)


def finish(audio: np.ndarray, rate: int, gain: float = 1.0) -> np.ndarray:
    """Synthesiser output float32 ``[T]`` at ``rate`` -> the corpus's float32 ``[T']`` at 48 kHz.

    Silence beyond 40 dB below the peak is trimmed, 50 ms of silence is kept at each end
    (VCTK 0.92 is "silence trimmed" too), and the peak is set to ``0.9 * gain``.
    """
    return finish_with_offset(audio, rate, gain)[0]


def finish_with_offset(audio: np.ndarray, rate: int, gain: float = 1.0) -> tuple[np.ndarray, float]:
    """:func:`finish`, and where the input's time 0 lands in the output, in seconds.

    A sound at ``t`` seconds in ``audio`` is at ``t + offset`` in the result (negative offset:
    more silence was cut than the margin adds), which is how phone spans follow the audio.
    """
    start, end = trim_bounds(audio, top_db=40.0, frame_length=1024, hop_length=256)
    margin = np.zeros(int(0.05 * rate), dtype=np.float32)
    audio = np.concatenate([margin, audio[start:end], margin])
    peak = float(np.abs(audio).max())
    if peak > 0:
        audio = audio * np.float32(0.9 * gain / peak)
    return np.clip(resample(audio, rate, SAMPLE_RATE), -1.0, 1.0), (margin.shape[0] - start) / rate


def _paths(root: Path, speaker: str, index: int) -> tuple[Path, Path]:
    utt = f"{speaker}_{index:03d}"
    return root / AUDIO_DIR / speaker / f"{utt}_mic1.flac", root / "txt" / speaker / f"{utt}.txt"


def _speaker_info(speakers: Sequence[SynthSpeaker]) -> str:
    lines = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS "]
    for s in speakers:
        v = s.voice
        lines.append(f"{s.name}  {s.age}  {v.gender}    {v.accent}    {v.region}  ({v.label})")
    return "\n".join(lines) + "\n"


def synthesize_corpus(
    out_dir: str | Path,
    n_speakers: int = 8,
    n_utterances: int = 40,
    seed: int = 0,
    engines: Sequence[str] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    prosody: Prosody | None = None,
    catalogue: str = DEFAULT_CATALOGUE,
) -> SynthResult:
    """Synthesise a demo corpus of ``n_speakers`` x ``n_utterances`` into ``out_dir`` (VCTK 0.92 layout).

    Args:
        out_dir: folder to create; must be empty or missing unless ``overwrite``.
        n_speakers: number of speakers (default 8); genders alternate, accents vary.
        n_utterances: utterances per speaker (default 40, ~3 s each).
        seed: picks sentences, ages and loudness; same seed -> byte-identical files.
        engines: ``("espeak", "flite", "festival")`` subset; None (default) = all installed.
            A corpus of some engines only holds the others out: train on one, test on another.
        workers: parallel worker processes (default: CPU count).
        overwrite: replace a previous corpus's ``wav48_silence_trimmed/``, ``txt/``,
            ``phones/`` and ``speaker-info.txt`` in ``out_dir`` (nothing else there is touched).
        progress: optional ``progress("synth", done, total)`` callback.
        prosody: vary eSpeak NG utterances' rate, pitch and intonation range (:class:`Prosody`,
            drawn from ``(seed, speaker, utterance)``); None (default): each voice as it is.
        catalogue: ``default`` (the voices small corpora have always had) or ``broad`` (the
            same first, then every usable voice installed; see
            :func:`vqspeech.data.voices.voice_catalogue`).

    Raises:
        DataError: ``out_dir`` is not empty, an engine is missing or a voice fails.
    """
    root = Path(out_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file; give a folder for the corpus")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise DataError(
                f"{root} is not empty; pick a new folder or pass --overwrite to replace the corpus"
            )
        shutil.rmtree(root / AUDIO_DIR, ignore_errors=True)
        shutil.rmtree(root / "txt", ignore_errors=True)
        shutil.rmtree(root / PHONES_DIR, ignore_errors=True)
        (root / "speaker-info.txt").unlink(missing_ok=True)
    plan = plan_corpus(n_speakers, n_utterances, seed, engines, catalogue)

    jobs: list[dict[str, Any]] = []
    for number, (speaker, sentences) in enumerate(plan):
        items = []
        for index, text in enumerate(sentences, start=1):
            audio_path, text_path = _paths(root, speaker.name, index)
            audio_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.write_text(text + "\n", encoding="utf-8")
            item: dict[str, Any] = {
                "text": text, "path": str(audio_path), "seed": _seed_of(seed, speaker.name, index)
            }  # fmt: skip
            if speaker.voice.engine == ESPEAK:
                item["phones"] = str(phones_path(root, speaker.name, f"{speaker.name}_{index:03d}"))
            if prosody is not None and speaker.voice.engine == ESPEAK:
                spoken = prosody.draw(speaker.voice, np.random.default_rng([seed, 2, number, index]))
                item["voice"] = asdict(spoken)
            items.append(item)
        jobs.append({"voice": asdict(speaker.voice), "gain": speaker.gain, "items": items})
    (root / "speaker-info.txt").write_text(_speaker_info([s for s, _ in plan]), encoding="utf-8")

    seconds = _run_workers(jobs, workers, progress)
    return SynthResult(
        root=root,
        speakers=tuple(s for s, _ in plan),
        n_utterances=sum(len(s) for _, s in plan),
        seconds=seconds,
    )


def _run_workers(jobs: list[dict[str, Any]], workers: int | None, progress: Progress | None) -> float:
    """Run one fresh worker process per job, ``workers`` at a time; return seconds of audio."""
    total = sum(len(job["items"]) for job in jobs)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    env = dict(os.environ)
    package_parent = str(Path(vqspeech.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    events: queue.Queue[tuple[str, float | str]] = queue.Queue()
    pending: queue.Queue[dict[str, Any]] = queue.Queue()
    for job in jobs:
        pending.put(job)

    def run_jobs() -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            command = [sys.executable, "-c", "from vqspeech.data.synth import worker_main; worker_main()"]
            try:
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env, text=True,
                )  # fmt: skip
            except OSError as exc:
                events.put(("error", f"cannot start a synthesis worker ({exc})"))
                continue
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                if line.startswith("ok "):
                    events.put(("ok", float(line.split()[1])))
            err = proc.stderr.read()
            if proc.wait() != 0:
                events.put(
                    ("error", err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}")
                )

    threads = [threading.Thread(target=run_jobs, daemon=True) for _ in range(n_workers)]
    for thread in threads:
        thread.start()
    done, seconds, errors = 0, 0.0, []
    while any(t.is_alive() for t in threads) or not events.empty():
        try:
            kind, value = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if kind == "ok":
            done += 1
            seconds += float(value)
            if progress is not None:
                progress("synth", done, total)
        else:
            errors.append(str(value))
    for thread in threads:
        thread.join()
    if errors:
        raise DataError(f"speech synthesis failed: {errors[0]}")
    return seconds


def worker_main() -> None:
    """Worker process body: read one speaker's job (JSON) on stdin, write its FLAC files.

    Items with a ``phones`` path also get their phone spans written there (eSpeak voices).
    Prints ``ok <seconds>`` per utterance; on failure prints the reason on stderr and
    exits 1. Run by :func:`synthesize_corpus`, never by hand.
    """
    try:
        job = json.loads(sys.stdin.read())
        voice = Voice(**job["voice"])
        items = job["items"]
        if voice.engine == FESTIVAL:  # one Festival run for the whole speaker
            spoken = iter(synthesize_many([i["text"] for i in items], voice))
        for item in items:
            spans = None
            own = Voice(**item["voice"]) if "voice" in item else voice  # its prosody
            if voice.engine == FESTIVAL:
                raw, rate = next(spoken)
            elif item.get("phones"):
                raw, rate, events = synthesize_with_phones(item["text"], own, seed=int(item["seed"]))
                spans = spans_from_events(events, raw.shape[0], rate)
            else:
                raw, rate = synthesize(item["text"], own, seed=int(item["seed"]))
            audio, offset = finish_with_offset(raw, rate, gain=float(job["gain"]))
            save_audio(item["path"], audio, SAMPLE_RATE)
            if spans is not None:
                write_phones(item["phones"], shift_spans(spans, offset, audio.shape[0] / SAMPLE_RATE))
            print(f"ok {audio.shape[0] / SAMPLE_RATE:.3f}", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
