"""``vqspeech export``: a slim, shippable copy of a run's checkpoint (weights, recipe, speakers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.bundled import export_model
from vqspeech_cli.errors import boundary, safe, stderr


def export_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint (.pt from vqspeech train) or its run folder (for its last.pt).",
            metavar="RUN_OR_CKPT",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The slim checkpoint to write.", metavar="OUT.pt")
    ],
    card: Annotated[
        Path | None,
        typer.Option(
            "--card",
            help="A model card (JSON: summary, recipe, commands, training.minutes, figures, good_at, "
            "bad_at); written beside the output as OUT.json with the model's fingerprint and step.",
            metavar="CARD.json",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A decode-time setting to change in the copy, KEY=VALUE (model.spectrogram.phase_init, "
            "model.spectrogram.griffin_lim_iters); the weights stay, the fingerprint is new.",
            metavar="KEY=VALUE",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT.pt (and OUT.json) if they exist.")
    ] = False,
) -> None:
    """Write a checkpoint with the weights, recipe and speaker table only, to ship or share.

    The optimizer and RNG state are left out (the training step stays, for vqspeech info).

    The copy encodes and decodes exactly as the original: same fingerprint, fresh content digest
    (unless --set changes how it decodes).

    The bundled model is made this way: -o vqspeech/models/default.pt --card card.json.

    Exit code 0: written (the sizes on stderr); 1: the source or card was unusable.
    """
    with boundary():
        done = export_model(source, output, card, overwrite=overwrite, decode_settings=settings or ())
    stderr.print(
        f"wrote {safe(done.path)}: {_mb(done.size)} (from {safe(done.source)}, {_mb(done.source_size)}), "
        f"model {done.fingerprint}, step {done.step if done.step is not None else '?'}"
    )
    if done.card is not None:
        stderr.print(f"wrote {safe(done.card)}: its card")


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"
