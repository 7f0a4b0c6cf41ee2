"""``vqspeech info``: what a recipe or checkpoint is (rates, receptive fields, sizes, speakers)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vqspeech.inference import ModelInfo, describe
from vqspeech_cli.errors import boundary


def info(
    target: Annotated[
        str,
        typer.Argument(help="A built-in recipe (paper, demo), a recipe YAML file, or a checkpoint.", metavar="RECIPE_OR_CHECKPOINT"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Describe a model: rates, codebook, bitrate, receptive fields, parameter counts, speakers.

    Works on a built-in recipe name, a recipe YAML file or a checkpoint (which adds its speakers,
    fingerprint and training step). --json prints the same as one JSON object.
    """
    with boundary():
        result = describe(target)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        Console(highlight=False).print(_table(result))


def _table(r: ModelInfo) -> Table:
    table = Table(title=f"{r.kind} {r.source}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("recipe", r.recipe),
        ("sample rate", f"{r.sample_rate} Hz"),
        ("hop length", f"{r.hop_length} samples ({r.token_rate:g} tokens/s)"),
        ("codebook", f"{r.n_codebooks} x {r.codebook_size} codes"),
        ("raw bitrate", f"{r.bitrate:g} bits/s"),
        ("encoder receptive field", f"{r.encoder_receptive_field} samples ({r.encoder_receptive_field_ms:.1f} ms)"),
        ("decoder", r.decoder),
        ("decoder receptive field", f"{r.decoder_receptive_field} samples ({r.decoder_receptive_field_ms:.1f} ms)"),
    ]
    rows += [(f"parameters: {k}", f"{v:,}") for k, v in r.parameters.items()]
    names = [str(s.get("name")) for s in r.speakers]
    rows.append(("speakers", f"{r.n_speakers}" + (f": {', '.join(names)}" if names else "")))
    if r.fingerprint:
        rows.append(("fingerprint", r.fingerprint))
    if r.step is not None:
        rows.append(("training step", str(r.step)))
    for key, value in rows:
        table.add_row(key, value)
    return table
