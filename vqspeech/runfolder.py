"""The run folder: one training at a time in it, no new run over an old one, no stale temp files.

:func:`claim_run` is what every trainer (speech, prior, image, video) enters before
:func:`vqspeech.loop.fit`: an OS file lock on ``<run folder>/LOCK`` (named in the error a second
training gets), :func:`refuse_existing_run` (``last.pt`` needs ``--resume``) and
:func:`clean_stale_temp_files` (what a killed atomic write left behind). The loop itself only
writes into the folder it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vqspeech.errors import ConfigError

#: The run's latest checkpoint, the one ``--resume`` continues from.
LAST = "last.pt"
#: The run folder's lock file (see :func:`claim_run`); it holds who has the lock, as JSON.
LOCK = ".vqspeech-run.lock"
#: What :func:`vqspeech.files.write_atomic` names its temp files: ``.<target name>.<random>.tmp``.
_TEMP_FILE = re.compile(r"^\..+\.[^.]+\.tmp$")


def refuse_existing_run(out_dir: Path, resume: bool) -> None:
    """A new run never writes over another: ``out_dir/last.pt`` needs ``resume`` (or another folder)."""
    if not resume and (out_dir / LAST).exists():
        raise ConfigError(
            f"{out_dir} already holds a run ({LAST}); pass --resume to continue it or pick another --out"
        )


class RunFolderBusy(ConfigError):
    """Another process is training into the same run folder."""


class _RunLock:
    """An exclusive ``flock`` on ``<run folder>/LOCK``: the OS drops it when the process dies
    (``kill -9`` included), so a crashed run never leaves its folder locked."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / LOCK
        self.handle: IO[str] | None = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (release())
        try:
            import fcntl  # POSIX only; elsewhere two runs are not kept apart
        except ImportError:
            return
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read()
            self.release()
            raise RunFolderBusy(
                f"{out_dir} is in use by another training ({_describe_holder(holder)}); wait for it to "
                "finish (or stop it), or pick another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.handle.write(json.dumps(info))
        self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file drops the flock
            self.handle = None


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {int(info['pid'])} on host {str(info['host'])!r}, since {info['since']!s}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


def clean_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete the temp files an interrupted atomic write left in ``out_dir`` (and its sub-folders).

    A ``kill -9`` during a checkpoint write leaves ``.last.pt.<random>.tmp`` behind; under the
    run lock no other writer is at work, so every such file is stale. Returns what was deleted.
    """
    removed = []
    for path in out_dir.rglob(".*.tmp"):
        if _TEMP_FILE.match(path.name) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def claim_run(out_dir: str | Path, resume: bool, *, main: bool = True) -> Iterator[Path]:
    """Hold ``out_dir`` for one training: lock it, refuse a new run over an old one, tidy it.

    Takes an OS file lock on ``out_dir/LOCK`` (released on exit, and by the OS if the process
    dies), so a second training into the same folder fails at once, naming the process (pid and
    host) that holds it, instead of interleaving ``metrics.csv`` and racing for ``last.pt``.
    Then :func:`refuse_existing_run` and :func:`clean_stale_temp_files`. Under DDP only the main
    rank (``main``) locks and tidies.
    """
    out_dir = Path(out_dir)
    lock = _RunLock(out_dir) if main else None
    try:
        refuse_existing_run(out_dir, resume)
        if main:
            clean_stale_temp_files(out_dir)
        yield out_dir
    finally:
        if lock is not None:
            lock.release()
