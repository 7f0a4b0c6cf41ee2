"""Options shared by several commands, defined once (typer ``Annotated`` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

Device = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when available, else CPU), cpu or cuda.", metavar="auto|cpu|cuda"),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr; errors still print.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override one recipe value, KEY=VALUE with a YAML value, e.g. --set train.lr=5e-4 (repeatable).",
        metavar="KEY=VALUE",
    ),
]
