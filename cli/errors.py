"""The CLI's one error boundary: library errors become a red line on stderr and an exit code."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from vqspeech.errors import VQSpeechError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

#: Characters a terminal acts on instead of showing: C0 controls (ESC starts colour and cursor
#: sequences), DEL and the C1 controls (U+009B is a one-character CSI), and the bidirectional
#: overrides that reorder what is shown.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``).

    For anything that comes from a file or a path (headers, names, messages quoting them)
    before it reaches the terminal; Rich markup still needs :func:`rich.markup.escape` on top.
    """
    return UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe(text: object) -> str:
    """:func:`printable` and markup-escaped: a value from a file, ready for ``Console.print``."""
    return escape(printable(str(text)))


@contextlib.contextmanager
def boundary() -> Iterator[None]:
    """Run a command body; turn :class:`VQSpeechError` into ``error: ...`` and exit code 1.

    Ctrl-C becomes one line and exit code 130 (128 + SIGINT), like any well-behaved tool;
    outputs are written to temp files and renamed, so nothing half-written is left behind.
    """
    try:
        yield
    except VQSpeechError as exc:
        stderr.print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
