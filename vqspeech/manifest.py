"""The manifest of a corpus encoding run: one JSON line per input (issue 19; docs/manifest.md).

Each line is a :class:`ManifestEntry`: ``input``, ``output``, ``duration`` (s), ``frames``,
``speaker_vector`` (bool), ``status`` (``ok``, ``skipped``: a valid output was already there,
or ``error``) and ``error`` (the one-line reason, or null). Under torchrun every rank writes
``<stem>.rank<N>.jsonl`` next to the manifest; rank 0 merges them into the manifest, sorted by
input path, then removes them (:func:`merge_rank_manifests`). Every file here is written
atomically (temp file + rename), so a reader never sees half a manifest. No torch here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vqspeech.errors import DataError
from vqspeech.files import write_text_atomic

#: The statuses of a manifest line; ``ok`` and ``skipped`` both mean the output is valid.
STATUSES = ("ok", "skipped", "error")
_FIELDS = ("input", "output", "duration", "frames", "speaker_vector", "status", "error")


@dataclass(frozen=True)
class ManifestEntry:
    """One input of an encoding run and what became of it (see the module docstring)."""

    input: str
    output: str | None
    duration: float
    frames: int
    speaker_vector: bool
    status: str
    error: str | None = None

    @property
    def usable(self) -> bool:
        """True when ``output`` holds this input's tokens (status ``ok`` or ``skipped``)."""
        return self.status in ("ok", "skipped") and self.output is not None

    def to_json(self) -> str:
        """The entry as one JSON line (no newline), keys in the documented order."""
        values = asdict(self)
        values["duration"] = round(float(self.duration), 6)
        return json.dumps({key: values[key] for key in _FIELDS}, ensure_ascii=False)


def parse_entry(line: str, name: str = "manifest", number: int = 0) -> ManifestEntry:
    """One manifest line -> a :class:`ManifestEntry`; DataError naming the line if it is not one."""
    where = f"{name} line {number}" if number else name
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg}); is this a vqspeech manifest?") from None
    if not isinstance(value, dict) or not {"input", "output", "status"} <= set(value):
        raise DataError(f"{where}: not a manifest entry (needs input, output and status)")
    try:
        entry = ManifestEntry(
            input=str(value["input"]),
            output=None if value["output"] is None else str(value["output"]),
            duration=float(value.get("duration") or 0.0),
            frames=int(value.get("frames") or 0),
            speaker_vector=bool(value.get("speaker_vector", False)),
            status=str(value["status"]),
            error=None if value.get("error") is None else str(value["error"]),
        )
    except (TypeError, ValueError):
        raise DataError(f"{where}: a field has the wrong type (see docs/manifest.md)") from None
    if entry.status not in STATUSES:
        raise DataError(f"{where}: status {entry.status!r} is not one of {', '.join(STATUSES)}")
    return entry


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """Every entry of the manifest at ``path`` (blank lines skipped); DataError if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DataError(f"{path}: cannot read the manifest ({reason})") from None
    return [parse_entry(line, str(path), n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def write_manifest(path: str | os.PathLike[str], entries: list[ManifestEntry]) -> Path:
    """Write ``entries`` to ``path``, sorted by input path, atomically (an existing one is replaced)."""
    lines = "".join(e.to_json() + "\n" for e in sorted(entries, key=lambda e: e.input))
    return write_text_atomic(path, lines, "manifest")


def rank_manifest_path(path: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` writes its part of manifest ``path``: ``<stem>.rank<N><suffix>`` beside it."""
    p = Path(path)
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix or '.jsonl'}")


def merge_rank_manifests(path: str | os.PathLike[str], world_size: int) -> list[ManifestEntry]:
    """Merge the ranks' parts of manifest ``path`` into it (sorted by input), then remove the parts.

    Call on one process after every rank has written its part; DataError if one is missing.
    """
    parts = [rank_manifest_path(path, rank) for rank in range(world_size)]
    entries = [entry for part in parts for entry in read_manifest(part)]
    write_manifest(path, entries)
    for part in parts:
        part.unlink(missing_ok=True)
    return sorted(entries, key=lambda e: e.input)
