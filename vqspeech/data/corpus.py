"""One entry point for every corpus: :func:`open_corpus` -> :class:`Corpus`.

``open_corpus(path)`` detects what ``path`` is:

* a folder with ``wav48_silence_trimmed/`` -> VCTK 0.92 (``mic`` picks mic1/mic2);
* a folder with ``wav48/`` -> VCTK 0.80 (leading/trailing silence trimmed while caching);
* a folder whose only sub-folder is one of the above (e.g. the zip's ``VCTK-Corpus/``);
* a file -> a manifest TSV (``path<TAB>speaker[<TAB>text]``);
* any other folder -> ``ROOT/<speaker>/**/*.{wav,flac,ogg}``.

Every source file is converted once to mono 16-bit WAV at ``sample_rate`` in a cache (see
:mod:`vqspeech.data.cache`); the :class:`Corpus` lists the cached files, so training reads
no 48 kHz audio. :meth:`Corpus.split` makes the deterministic train/validation split.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqspeech.audio import is_audio_file
from vqspeech.data import folder, vctk
from vqspeech.data.cache import Progress, Source, build_cache, cache_dir_for
from vqspeech.data.speakers import Speaker, SpeakerTable
from vqspeech.errors import DataError

FOLDER = "folder"
MANIFEST = "manifest"
KINDS = (vctk.VCTK_080, vctk.VCTK_092, FOLDER, MANIFEST)


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus.

    ``id`` is unique in the corpus (``p225_001`` for VCTK, the relative path without
    extension otherwise); ``path`` is the cached mono 16-bit WAV at the corpus's
    ``sample_rate`` holding ``num_samples`` samples; ``source`` the original file; ``text``
    the transcript, or None where there is none (e.g. VCTK p315).
    """

    id: str
    speaker: str
    path: Path
    source: Path
    num_samples: int
    text: str | None = None


@dataclass(frozen=True)
class Split:
    """A train/validation split: two disjoint tuples of utterances, each sorted by id."""

    train: tuple[Utterance, ...]
    valid: tuple[Utterance, ...]


@dataclass(frozen=True)
class Corpus:
    """A speech corpus ready for training.

    ``kind`` is one of ``vctk-0.80``, ``vctk-0.92``, ``folder``, ``manifest``;
    ``utterances`` are sorted by (speaker, id); ``speakers`` holds every speaker with at
    least one utterance, sorted by name (id = position); ``warnings`` lists what was
    skipped and why (unreadable files, a speaker without the chosen microphone).
    """

    root: Path
    kind: str
    sample_rate: int
    cache_dir: Path
    utterances: tuple[Utterance, ...]
    speakers: SpeakerTable
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def total_seconds(self) -> float:
        """Duration of all (cached, trimmed) audio in seconds."""
        return sum(u.num_samples for u in self.utterances) / self.sample_rate

    def speaker_table(self) -> list[dict[str, Any]]:
        """The speaker table as JSON-safe data for checkpoints: ``[{"id": 0, "name": ...}, ...]``."""
        return self.speakers.to_list()

    def speaker_id(self, utterance: Utterance) -> int:
        """The integer id of ``utterance``'s speaker."""
        return self.speakers.id(utterance.speaker)

    def split(
        self, valid_utterances_per_speaker: int = 2, valid_speakers: Sequence[str] = (), seed: int = 0
    ) -> Split:
        """Hold out utterances for validation, the same way every time.

        Every speaker in ``valid_speakers`` goes to validation whole. From each other
        speaker, the ``valid_utterances_per_speaker`` utterances with the smallest
        ``sha256(seed, id)`` are held out, but never the speaker's last one: a speaker with
        ``n`` utterances keeps at least one for training. The choice depends only on ids and
        ``seed``, not on file-system order, and adding files moves few others.
        """
        if valid_utterances_per_speaker < 0:
            raise DataError("valid_utterances_per_speaker must be >= 0")
        held_speakers = set(valid_speakers)
        unknown = sorted(held_speakers - set(self.speakers.names))
        if unknown:
            raise DataError(
                f"valid_speakers names unknown speaker {unknown[0]!r}; "
                f"known: {', '.join(self.speakers.names[:20])}"
            )
        by_speaker: dict[str, list[Utterance]] = {}
        for utt in self.utterances:
            by_speaker.setdefault(utt.speaker, []).append(utt)
        train: list[Utterance] = []
        valid: list[Utterance] = []
        for speaker, utts in by_speaker.items():
            if speaker in held_speakers:
                valid.extend(utts)
                continue
            ranked = sorted(utts, key=lambda u: (_rank(seed, u.id), u.id))
            k = min(valid_utterances_per_speaker, len(utts) - 1)
            valid.extend(ranked[:k])
            train.extend(ranked[k:])
        return Split(train=tuple(sorted(train, key=_order)), valid=tuple(sorted(valid, key=_order)))


def _rank(seed: int, utt_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{utt_id}".encode()).digest()


def _order(utt: Utterance) -> tuple[str, str]:
    return utt.speaker, utt.id


def detect_kind(path: Path) -> tuple[str, Path]:
    """``(kind, root)`` for ``path``; ``root`` may be a single VCTK sub-folder of ``path``."""
    if not path.exists():
        raise DataError(f"corpus {path} does not exist; give a VCTK folder, a speaker folder or a manifest")
    if path.is_file():
        if is_audio_file(path):
            raise DataError(f"{path} is one audio file, not a corpus; give its folder or a manifest TSV")
        return MANIFEST, path
    found = vctk.detect_vctk(path)
    if found:
        return found, path
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    nested = [(vctk.detect_vctk(p), p) for p in subdirs]
    nested = [(kind, p) for kind, p in nested if kind]
    if len(nested) == 1 and len(subdirs) == 1:
        kind, root = nested[0]
        assert kind is not None
        return kind, root
    return FOLDER, path


def open_corpus(
    path: str | Path,
    sample_rate: int = 16000,
    cache_dir: str | Path | None = None,
    mic: str = "mic1",
    trim_db: float | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """Open a VCTK 0.80/0.92 folder, a speaker folder or a manifest; cache its audio.

    Args:
        path: the corpus root or manifest file (see the module docstring for detection).
        sample_rate: rate of the cached audio in Hz (default 16000).
        cache_dir: where the converted audio goes (default: ``ROOT/.vqspeech-cache/<settings>``,
            or ``~/.cache/vqspeech/...`` for a read-only corpus, or under ``$VQSPEECH_CACHE_DIR``;
            see :func:`vqspeech.data.cache.cache_dir_for`).
        mic: VCTK 0.92 microphone, ``mic1`` (default) or ``mic2``.
        trim_db: cut leading/trailing audio quieter than this many dB below the peak; None
            (default) means 35 dB for VCTK 0.80 and no trimming for everything else.
        num_workers: threads that convert files (default: CPU count, at most 8).
        progress: optional ``progress(stage, done, total)`` callback, e.g. for a progress bar.

    Raises:
        DataError: the path is missing, holds no usable audio, or a manifest line is bad.
    """
    kind, root = detect_kind(Path(path).expanduser().resolve())
    warnings: list[str] = []
    metadata: dict[str, Speaker] = {}
    sources: list[Source]
    if kind in (vctk.VCTK_080, vctk.VCTK_092):
        sources, metadata, warnings = vctk.scan_vctk(root, kind, mic=mic)
        if trim_db is None and kind == vctk.VCTK_080:
            trim_db = vctk.VCTK_080_TRIM_DB
    elif kind == MANIFEST:
        sources, warnings = folder.scan_manifest(root)
    else:
        sources, warnings = folder.scan_folder(root)
    if not sources:
        raise DataError(
            f"no audio found in {root}; expected VCTK (wav48/ or wav48_silence_trimmed/), "
            "ROOT/<speaker>/*.wav|flac|ogg, or a manifest TSV of path<TAB>speaker"
        )

    tag = (
        f"{sample_rate}hz"
        + (f"-{mic}" if kind == vctk.VCTK_092 else "")
        + (f"-trim{trim_db:g}db" if trim_db is not None else "")
    )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_for(root, tag)
    cached, cache_warnings = build_cache(
        sources, cache, sample_rate=sample_rate, trim_db=trim_db, num_workers=num_workers, progress=progress
    )
    warnings.extend(cache_warnings)

    utterances = sorted(
        (
            Utterance(
                id=src.id,
                speaker=src.speaker,
                path=cached[src.id].path,
                source=src.path,
                num_samples=cached[src.id].num_samples,
                text=src.text,
            )
            for src in sources
            if src.id in cached
        ),
        key=_order,
    )
    if not utterances:
        raise DataError(f"none of the {len(sources)} audio files in {root} could be read; see {warnings[0]}")
    names = sorted({u.speaker for u in utterances})
    table = SpeakerTable(metadata.get(name, Speaker(name=name)) for name in names)
    return Corpus(
        root=root,
        kind=kind,
        sample_rate=sample_rate,
        cache_dir=cache,
        utterances=tuple(utterances),
        speakers=table,
        warnings=tuple(warnings),
    )
