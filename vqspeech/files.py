"""Writing files so that a reader never sees half of one: the library's one temp-file-and-rename.

:class:`AtomicFile` is the mechanism: a temp file in the target's folder, written, optionally
fsynced, made readable and renamed over the target, or removed on failure. Everything that
writes a file the project owns goes through it: :func:`write_atomic` (checkpoints, reports,
token files, the data cache's index), :func:`output` (a file *or* a stream, for the
per-file verbs) and :class:`LineSink` (a JSON-lines file that appears only when finished).
Audio files go through it too (:mod:`vqspeech.audio`). No torch here (:mod:`vqspeech.tokens`
uses it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from vqspeech.errors import OutputError

#: Bytes per read when a finished temp file is copied to a stream.
_COPY_BYTES = 1 << 20


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


def _reason(exc: OSError) -> str:
    return str(exc.strerror or exc)


class AtomicFile:
    """A temp file next to ``path`` that becomes ``path`` on :meth:`commit` (or is discarded).

    ``handle`` is the open binary temp file. ``mkdir`` creates missing folders (else a missing
    folder is an error); ``fsync`` flushes the data to disk before the rename, for files that
    must survive a crash whole (checkpoints, token files, the cache). As a context manager it
    commits on success and discards on any exception (which propagates unchanged). OS errors
    of opening and committing become :class:`OutputError` ("<path>: cannot write to <folder>",
    "<path>: cannot write the <what> ...").
    """

    def __init__(
        self, path: str | os.PathLike[str], what: str = "file", *, fsync: bool = False, mkdir: bool = True
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.fsync = fsync
        try:
            if mkdir:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot write to {self.path.parent} ({_reason(exc)}); "
                "check that it is a writable folder"
            ) from None
        self.tmp: Path | None = Path(name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        """Finish the file and rename it over ``path``; the temp file never outlives a failure."""
        try:
            self.handle.flush()
            if self.fsync:
                os.fsync(self.handle.fileno())
            self.handle.close()
            assert self.tmp is not None, "commit after discard"
            make_readable(self.tmp)
            os.replace(self.tmp, self.path)
            self.tmp = None
        except OSError as exc:
            self.discard()
            raise self.error(exc) from None
        return self.path

    def discard(self) -> None:
        """Close and remove the temp file; ``path`` is left as it was."""
        with contextlib.suppress(OSError):
            self.handle.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def error(self, exc: OSError) -> OutputError:
        return OutputError(
            f"{self.path}: cannot write the {self.what} ({_reason(exc)}); check the folder and free space"
        )

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.commit()
        else:
            self.discard()


def write_atomic(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    what: str = "file",
    *,
    fsync: bool = False,
    mkdir: bool = True,
) -> Path:
    """Call ``write(handle)`` on an :class:`AtomicFile` for ``path``, then rename it into place.

    The folder is created (unless ``mkdir=False``); the file gets the mode ``open()`` would give
    it; ``fsync`` before the rename. OS errors become :class:`OutputError` naming ``what``.
    """
    with AtomicFile(path, what, fsync=fsync, mkdir=mkdir) as out:
        try:
            write(out.handle)
        except OSError as exc:
            raise out.error(exc) from None
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomic`)."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data), what)


# --------------------------------------------------------------------------------------------
# Outputs of the per-file verbs: a file or a stream


def target_label(target: str | os.PathLike[str] | BinaryIO) -> str:
    """How messages name an output: its path, or the stream's name (``<stream>``)."""
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    return str(getattr(target, "name", "<stream>"))


def refuse_existing(path: Path, overwrite: bool) -> None:
    """OutputError if ``path`` exists (unless ``overwrite``) or is a folder."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputError(f"{path}: output already exists; pass --overwrite to replace it")
    if path.is_dir():
        raise OutputError(f"{path}: output is a folder; give a file name")


@contextlib.contextmanager
def output(
    target: str | os.PathLike[str] | BinaryIO, overwrite: bool, *, fsync: bool = False
) -> Iterator[BinaryIO]:
    """Yield a seekable binary handle to write; on success its bytes become ``target``.

    For a path: an :class:`AtomicFile` (the folder is created; an existing file is refused
    unless ``overwrite``). For a binary stream: an anonymous temp file, copied to the stream when
    finished, so the stream gets exactly the file's bytes and never a half-written one.
    """
    if isinstance(target, (str, os.PathLike)):
        path = Path(os.fspath(target))
        refuse_existing(path, overwrite)
        with AtomicFile(path, "output", fsync=fsync) as out:
            try:
                yield out.handle
            except OSError as exc:
                raise out.error(exc) from None
        return
    try:
        spool: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise OutputError(
            f"<stream>: cannot write to {tempfile.gettempdir()} ({_reason(exc)}); "
            "check that it is a writable folder"
        ) from None
    with spool:
        try:
            yield spool
            spool.seek(0)
            shutil.copyfileobj(spool, target, _COPY_BYTES)
            target.flush()
        except OSError as exc:
            raise OutputError(
                f"{target_label(target)}: cannot write the output ({_reason(exc)}); "
                "check free space and permissions"
            ) from None


class LineSink:
    """Text lines to a file (an :class:`AtomicFile`, renamed at :meth:`close`) or a stream.

    A file target is refused at once if it exists (unless ``overwrite``), and appears only if
    the sink closes ``ok`` with at least one line written.
    """

    def __init__(self, target: Path | BinaryIO, overwrite: bool) -> None:
        self._count = 0
        self._file: AtomicFile | None = None
        self._name = "<stream>"
        if isinstance(target, Path):
            refuse_existing(target, overwrite)
            self._file = AtomicFile(target, "output")
            self._handle = self._file.handle
            self._name = str(target)
        else:
            self._handle = target

    def add(self, line: str) -> None:
        try:
            self._handle.write(line.encode("utf-8") + b"\n")
            self._handle.flush()
        except OSError as exc:
            raise OutputError(f"{self._name}: cannot write ({_reason(exc)})") from None
        self._count += 1

    def close(self, ok: bool = True) -> None:
        """Finish: a file target appears only if ``ok`` and at least one line was written."""
        if self._file is None:
            return
        if ok and self._count:
            self._file.commit()
        else:
            self._file.discard()
