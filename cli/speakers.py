"""``vqspeech speakers``: the speakers a checkpoint can decode with (ids, names, metadata)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vqspeech.bundled import model_or_bundled
from vqspeech.describe import list_speakers
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import DefaultModel


def speakers(
    model: DefaultModel = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON list of {id, name, <metadata>} objects instead of a table."
        ),
    ] = False,
) -> None:
    """List the checkpoint's speakers: names for decode/convert --speaker, ids and metadata.

    Without --model: the speakers of the model bundled with vqspeech.
    """
    with boundary():
        rows = list_speakers(model_or_bundled(model))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        Console(highlight=False, soft_wrap=True).print(_table(rows))


def _table(rows: list[dict[str, Any]]) -> Table:
    columns = ["id", "name"]
    for row in rows:  # metadata columns that at least one speaker fills, in first-seen order
        columns += [k for k, v in row.items() if k not in columns and v not in (None, "")]
    table = Table(show_header=True, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table
