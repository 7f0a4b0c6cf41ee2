"""The on-disk cache of 16 kHz mono audio: each source file is decoded and resampled ONCE.

A corpus's cache is a folder holding ``<speaker>/<utterance>.wav`` (16-bit PCM, mono, at
the training ``sample_rate``) and ``index.json``, which records, for every utterance, the
source path, its size and modification time (ns), the cached file and its length in
samples. On the next open an entry is reused when the source's size and mtime and the
cached file are unchanged, and rebuilt otherwise; entries whose source disappeared are
deleted. The default location is ``$VQSPEECH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vqspeech``,
else ``~/.cache/vqspeech``, in a subfolder named after the corpus root plus a hash of its
absolute path and the cache settings.

This module imports no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vqspeech.audio import load_audio, save_audio
from vqspeech.errors import AudioError, DataError
from vqspeech.files import write_atomic

CACHE_VERSION = 1
INDEX_NAME = "index.json"

#: ``progress(stage, done, total)``: called from the library to report work, never required.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Source:
    """One utterance as found in a corpus, before caching."""

    id: str
    speaker: str
    path: Path
    text: str | None = None


@dataclass(frozen=True)
class CachedAudio:
    """Where a source's 16 kHz audio lives in the cache, and its length in samples."""

    path: Path
    num_samples: int


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/vqspeech``, else ``~/.cache/vqspeech``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vqspeech"


def cache_dir_for(root: Path, tag: str) -> Path:
    """The default cache folder of the corpus at ``root`` (a folder or a manifest file).

    ``$VQSPEECH_CACHE_DIR/<name>-<hash>/<tag>`` when that variable is set; else
    ``<corpus folder>/.vqspeech-cache/<tag>`` (for a manifest: ``<its folder>/.vqspeech-cache/
    <manifest name>/<tag>``) when that folder is writable; else the same under
    ``~/.cache/vqspeech/<name>-<hash>/``. ``tag`` names the settings (``16000hz-mic1``), so
    changing them never mixes caches; the hash is of the corpus's absolute path.
    """
    root = root.resolve()
    folder = root.parent if root.is_file() else root
    sub = Path(safe_name(root.name)) / tag if root.is_file() else Path(tag)
    explicit = os.environ.get("VQSPEECH_CACHE_DIR")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    per_corpus = f"{safe_name(root.name or 'corpus')}-{digest}"
    if explicit:
        return Path(explicit).expanduser() / per_corpus / tag
    if os.access(folder, os.W_OK):
        return folder / ".vqspeech-cache" / sub
    return user_cache_root() / per_corpus / tag


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``; a short hash is added when characters had to change."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    if cleaned == text:
        return cleaned
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def trim_silence(
    audio: np.ndarray, top_db: float, frame_length: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Same rule as ``librosa.effects.trim`` (centred frames of ``frame_length`` samples every
    ``hop_length``, RMS in dB relative to the maximum) without importing librosa. Audio
    that is silent throughout is returned unchanged rather than emptied.
    """
    start, end = trim_bounds(audio, top_db, frame_length, hop_length)
    return audio[start:end]


def trim_bounds(
    audio: np.ndarray, top_db: float, frame_length: int = 2048, hop_length: int = 512
) -> tuple[int, int]:
    """``(start, end)`` samples of what :func:`trim_silence` keeps of ``audio`` ``[T]``
    (``(0, T)`` for audio silent throughout)."""
    n = audio.shape[0]
    pad = frame_length // 2
    padded = np.pad(audio.astype(np.float64), (pad, pad))
    cumsum = np.concatenate([[0.0], np.cumsum(padded * padded)])
    n_frames = 1 + (padded.shape[0] - frame_length) // hop_length
    starts = np.arange(n_frames) * hop_length
    power = (cumsum[starts + frame_length] - cumsum[starts]) / frame_length
    amin = 1e-10
    db = 10.0 * np.log10(np.maximum(power, amin)) - 10.0 * np.log10(max(float(power.max()), amin))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, n
    start = int(loud[0]) * hop_length
    end = min(n, (int(loud[-1]) + 1) * hop_length)
    return start, end


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _read_index(cache_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((cache_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_index(cache_dir: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
    write_atomic(cache_dir / INDEX_NAME, lambda handle: handle.write(text), "cache index", fsync=True)


def build_cache(
    sources: Sequence[Source],
    cache_dir: Path,
    sample_rate: int = 16000,
    trim_db: float | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, CachedAudio], list[str]]:
    """Make sure every source has an up-to-date cached copy; return them and warnings.

    Returns ``({utterance id: CachedAudio}, warnings)``. A source that cannot be decoded is
    left out with a warning naming it (one bad file in a 44,000-file corpus should not stop
    training). Files are converted by ``num_workers`` threads (default: CPU count, at most
    8; decoding and soxr release the GIL). ``progress("cache", done, total)`` is called
    after each file that had to be (re)built.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create cache folder {cache_dir} ({exc.strerror}); "
            "pass another cache_dir or set VQSPEECH_CACHE_DIR"
        ) from None
    settings = {"version": CACHE_VERSION, "sample_rate": sample_rate, "trim_db": trim_db}
    index = _read_index(cache_dir)
    old_entries: dict[str, Any] = index.get("entries", {}) if index.get("settings") == settings else {}

    entries: dict[str, Any] = {}
    todo: list[tuple[Source, tuple[int, int], str]] = []
    for src in sources:
        stat = _stat(src.path)
        rel = f"{safe_name(src.speaker)}/{safe_name(src.id.replace('/', '__'))}.wav"
        old = old_entries.get(src.id)
        if (
            isinstance(old, dict)
            and old.get("source") == str(src.path)
            and old.get("size") == stat[0]
            and old.get("mtime_ns") == stat[1]
            and old.get("file") == rel
            and (cache_dir / rel).is_file()
            and (cache_dir / rel).stat().st_size == old.get("cache_size")
            and isinstance(old.get("num_samples"), int)
            and old["num_samples"] > 0  # older caches could hold 0-sample entries: rebuild them
        ):
            entries[src.id] = old
        else:
            todo.append((src, stat, rel))

    def convert(item: tuple[Source, tuple[int, int], str]) -> tuple[str, dict[str, Any] | None, str | None]:
        src, stat, rel = item
        try:
            audio = load_audio(src.path, sample_rate)
        except AudioError as exc:
            return src.id, None, f"skipped {exc}"
        if trim_db is not None:
            audio = trim_silence(audio, trim_db)
        if audio.shape[0] == 0:  # load_audio refuses this already; trimming must not make it
            return src.id, None, f"skipped {src.path}: no samples left after trimming silence"
        out = cache_dir / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        save_audio(out, audio, sample_rate, fsync=True)
        entry = {
            "source": str(src.path),
            "size": stat[0],
            "mtime_ns": stat[1],
            "file": rel,
            "num_samples": int(audio.shape[0]),
            "cache_size": out.stat().st_size,
        }
        return src.id, entry, None

    warnings: list[str] = []
    if todo:
        workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for utt_id, entry, warning in pool.map(convert, todo):
                if entry is not None:
                    entries[utt_id] = entry
                if warning is not None:
                    warnings.append(warning)
                done += 1
                if progress is not None:
                    progress("cache", done, len(todo))

    # Drop cached files whose source is gone, so the cache does not grow without bound.
    for utt_id, old in old_entries.items():
        if utt_id not in entries and isinstance(old, dict) and isinstance(old.get("file"), str):
            with contextlib.suppress(OSError):
                (cache_dir / old["file"]).unlink()
    if todo or set(old_entries) != set(entries):
        _write_index(cache_dir, {"settings": settings, "entries": entries})

    cached = {
        utt_id: CachedAudio(cache_dir / entry["file"], int(entry["num_samples"]))
        for utt_id, entry in entries.items()
    }
    return cached, warnings
