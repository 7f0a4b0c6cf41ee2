"""Writing our own outputs (reports, JSON, pictures) so that a reader never sees half a file."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from vqspeech.errors import OutputError


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; 022 in between, so a file another thread
    # creates at that instant gets the usual mode rather than a world-writable one
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike[str]) -> None:
    """Give a finished temp file the mode ``open()`` would have: 0666 less the umask.

    ``mkstemp`` makes files 0600, private to whoever wrote them: a surprise for checkpoints,
    audio and token files that are meant to be shared. Call it before the rename.
    """
    os.chmod(path, 0o666 & ~_umask())


def write_atomic(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], what: str = "file"
) -> Path:
    """Call ``write(handle)`` on a temp file in ``path``'s folder, then rename it to ``path``.

    The folder is created; the file gets the mode ``open()`` would give it (see
    :func:`make_readable`). OS errors become :class:`OutputError` naming ``what``; the
    temp file never outlives a failure.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        make_readable(tmp)
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


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomic`)."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data), what)
