"""Phone labels with timings for eSpeak NG speech (issue 17: the paper's phoneme claim).

eSpeak NG reports a phoneme event, with its position in the output, for every phoneme it
speaks (:meth:`vqspeech.data.voices.ESpeak.synthesize_phones`). :func:`phone_alignment` turns
those events into spans ``(start_s, end_s, phone)`` that tile the synthesiser's output: each
phoneme lasts until the next one starts, pauses and the lead-in are :data:`SILENCE`. Phones are
eSpeak's mnemonics without stress marks (``'i:`` -> ``i:``); they are per-language, so an
American and a Scottish voice may name the same sound differently (``oU``/``o:``).

A corpus from :func:`vqspeech.data.synth.synthesize_corpus` stores the spans of every eSpeak
utterance beside its audio, in the written file's time (after the silence trimming, the 50 ms
margins and the resampling of :func:`~vqspeech.data.synth.finish`)::

    OUT/phones/s01/s01_001.tsv      start_s<TAB>end_s<TAB>phone, one span a line

They are stored rather than recomputed because the trimming depends on the audio eSpeak made
in that worker (its noise state carries over between utterances). Utterances of flite and
Festival voices have no phone file.

This module imports no torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vqspeech.data.voices import Voice, synthesize_with_phones
from vqspeech.errors import DataError

#: The label of pauses, and of the audio before the first and after the last phoneme.
SILENCE = "_"
#: The corpus folder holding phone files: ``ROOT/phones/<speaker>/<utterance>.tsv``.
PHONES_DIR = "phones"
_HEADER = "start_s\tend_s\tphone"
_STRESS = "',%="

#: ``(start_s, end_s, phone)``.
Span = tuple[float, float, str]


def phone_name(mnemonic: str) -> str:
    """eSpeak's phoneme mnemonic -> the phone label: stress marks dropped, pauses -> :data:`SILENCE`."""
    name = mnemonic.strip().lstrip(_STRESS)
    return SILENCE if not name or name.startswith("_") else name


def spans_from_events(events: Sequence[tuple[int, str]], n_samples: int, sample_rate: float) -> list[Span]:
    """Phoneme onsets ``[(sample, mnemonic), ...]`` in audio of ``n_samples`` -> spans that tile it.

    Each phoneme runs from its onset to the next onset (the last to the end of the audio);
    the audio before the first onset is :data:`SILENCE`. Zero-length spans are dropped and
    neighbouring spans with the same label merged, so spans are strictly increasing,
    non-overlapping, and cover ``[0, n_samples / sample_rate]`` exactly.
    """
    if n_samples <= 0 or sample_rate <= 0:
        raise DataError(f"cannot align phones to {n_samples} samples at {sample_rate} Hz")
    marks = [(0, SILENCE)] + [(min(max(int(s), 0), n_samples), phone_name(p)) for s, p in events]
    spans: list[Span] = []
    for (start, phone), (end, _) in zip(marks, [*marks[1:], (n_samples, SILENCE)], strict=True):
        if end <= start:
            continue
        if spans and spans[-1][2] == phone == SILENCE:
            spans[-1] = (spans[-1][0], end / sample_rate, phone)
        else:
            spans.append((start / sample_rate, end / sample_rate, phone))
    return spans


def phone_alignment(text: str, voice: Voice, seed: int = 0) -> list[Span]:
    """Where each phone of ``text`` spoken by eSpeak ``voice`` lies: ``[(start_s, end_s, phone)]``.

    Times are seconds in the synthesiser's own output (:func:`vqspeech.data.voices.synthesize`,
    untrimmed), with the voice's vocal-tract scale applied: a ``tract`` of 1.25 plays the same
    samples 1.25 times as fast, so every duration is divided by 1.25. The spans tile the audio
    (see :func:`spans_from_events`). DataError for a flite or Festival voice.
    """
    audio, rate, events = synthesize_with_phones(text, voice, seed=seed)
    return spans_from_events(events, audio.shape[0], rate)


def shift_spans(spans: Sequence[Span], offset_s: float, duration_s: float) -> list[Span]:
    """Spans moved by ``offset_s`` seconds and cut to ``[0, duration_s]``, gaps at the ends silent.

    For audio that was trimmed and padded: a sample at ``t`` in the original lies at
    ``t + offset_s`` in the new audio, which lasts ``duration_s``. The result tiles
    ``[0, duration_s]``, as :func:`spans_from_events` does.
    """
    out: list[Span] = []

    def add(start: float, end: float, phone: str) -> None:
        if end - start <= 1e-9:
            return
        if out and out[-1][2] == phone == SILENCE:
            out[-1] = (out[-1][0], end, phone)
        else:
            out.append((start, end, phone))

    cursor = 0.0
    for start, end, phone in spans:
        start, end = max(0.0, start + offset_s), min(duration_s, end + offset_s)
        if end <= start:
            continue
        add(cursor, start, SILENCE)
        add(start, end, phone)
        cursor = end
    add(cursor, duration_s, SILENCE)
    return out


def phones_path(root: str | Path, speaker: str, utterance_id: str) -> Path:
    """Where a corpus keeps an utterance's phone file: ``ROOT/phones/<speaker>/<utterance>.tsv``."""
    return Path(root) / PHONES_DIR / speaker / f"{utterance_id}.tsv"


def write_phones(path: str | Path, spans: Sequence[Span]) -> Path:
    """Write ``spans`` as a TSV (header ``start_s end_s phone``, times to 0.1 ms), atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [_HEADER] + [f"{start:.4f}\t{end:.4f}\t{phone}" for start, end, phone in spans]
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_phones(path: str | Path) -> list[Span]:
    """Read a phone file written by :func:`write_phones`; DataError naming the file and line if bad."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read phone file {source} ({exc})") from None
    if not lines or lines[0].strip() != _HEADER:
        raise DataError(f"{source} is not a phone file: its first line must be {_HEADER!r}")
    spans: list[Span] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 3 or not fields[2]:
                raise ValueError
            start, end = float(fields[0]), float(fields[1])
        except ValueError:
            raise DataError(f"{source} line {number}: expected start_s<TAB>end_s<TAB>phone") from None
        if end < start or (spans and start < spans[-1][1] - 1e-6):
            raise DataError(f"{source} line {number}: spans must not go backwards or overlap")
        spans.append((start, end, fields[2]))
    return spans


def utterance_phones(root: str | Path, speaker: str, utterance_id: str) -> list[Span] | None:
    """The stored phone spans of one corpus utterance (written-audio time), or None if it has none."""
    path = phones_path(root, speaker, utterance_id)
    return read_phones(path) if path.is_file() else None
