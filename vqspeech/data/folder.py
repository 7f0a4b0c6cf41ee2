"""Corpora that are not VCTK: a folder of speaker folders, or a manifest file.

* Folder: ``ROOT/<speaker>/**/*.{wav,flac,ogg}``; the first-level folder names the
  speaker, files may sit in any sub-folder below it. Hidden files and folders are ignored.
  The utterance id is the path below ROOT without its extension (``alice/day1/take3``).
* Manifest: a UTF-8 TSV file, one utterance a line: ``path<TAB>speaker[<TAB>text]``.
  Relative paths are resolved against the manifest's folder. An optional header line
  starting with ``path`` is skipped, as are blank lines and lines starting with ``#``.
  The utterance id is the path as written, without its extension.

This module imports no torch.
"""

from __future__ import annotations

from pathlib import Path

from vqspeech.audio import is_audio_file
from vqspeech.data.cache import Source
from vqspeech.errors import DataError


def scan_folder(root: Path) -> tuple[list[Source], list[str]]:
    """Utterances of a speaker-folder corpus: ``(sources, warnings)``, sorted by id."""
    sources: list[Source] = []
    warnings: list[str] = []
    loose = [p for p in root.iterdir() if p.is_file() and is_audio_file(p)]
    if loose:
        warnings.append(
            f"{len(loose)} audio files directly in {root} were ignored; put them in {root}/<speaker>/"
        )
    for speaker_dir in sorted(root.iterdir()):
        if not speaker_dir.is_dir() or speaker_dir.name.startswith("."):
            continue
        for path in sorted(speaker_dir.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not is_audio_file(path):
                continue
            if not path.is_file():
                continue
            utt_id = rel.with_suffix("").as_posix()
            sources.append(Source(id=utt_id, speaker=speaker_dir.name, path=path))
    return sources, warnings


def scan_manifest(manifest: Path) -> tuple[list[Source], list[str]]:
    """Utterances listed in a manifest TSV: ``(sources, warnings)``; DataError for bad lines."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {manifest} ({exc}); it must be a UTF-8 text file") from None
    base = manifest.parent
    sources: list[Source] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r\n").split("\t")
        if number == 1 and fields[0].strip().lower() == "path":
            continue
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(
                f"{manifest}:{number}: expected 'path<TAB>speaker', got {line[:80]!r}; "
                "separate the columns with a tab"
            )
        written = fields[0].strip()
        speaker = fields[1].strip()
        text = fields[2].strip() if len(fields) > 2 and fields[2].strip() else None
        path = Path(written).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise DataError(f"{manifest}:{number}: audio file {path} does not exist; fix or remove the line")
        utt_id = Path(written).with_suffix("").as_posix()
        if utt_id in seen:
            warnings.append(f"{manifest}:{number}: {written} is listed twice; the repeat was ignored")
            continue
        seen.add(utt_id)
        sources.append(Source(id=utt_id, speaker=speaker, path=path, text=text))
    return sources, warnings
