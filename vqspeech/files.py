"""Writing our own text outputs (reports, JSON) so that a reader never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vqspeech.errors import OutputError


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder and a rename.

    The folder is created; the file gets mode 0644 (``mkstemp`` makes 0600, and these files
    are for reading and sharing). OS errors become :class:`OutputError` naming ``what``.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise OutputError(
            f"{target}: cannot write the {what} ({exc.strerror or exc}); check the folder and free space"
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return target
