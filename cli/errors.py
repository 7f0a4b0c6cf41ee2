"""The CLI's one error boundary: library errors become a red line on stderr and an exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from vqspeech.errors import VQSpeechError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def boundary() -> Iterator[None]:
    """Run a command body; turn :class:`VQSpeechError` into ``error: ...`` and exit code 1.

    Ctrl-C becomes one line and exit code 130 (128 + SIGINT), like any well-behaved tool;
    outputs are written to temp files and renamed, so nothing half-written is left behind.
    """
    try:
        yield
    except VQSpeechError as exc:
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
