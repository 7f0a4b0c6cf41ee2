"""``vqspeech train``: learn a VQ-VAE on VCTK, a speaker folder or a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.config import load_recipe
from vqspeech.train import train
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Device, Overrides, Quiet
from vqspeech_cli.progress import TrainProgress


def train_command(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (demo, paper) or a recipe YAML file.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="VCTK root (0.80 or 0.92), a folder of speaker folders, or a TSV manifest."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt, metrics.csv, tensorboard/.")],
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", help="Total steps (not additional: --resume --steps N extends a run to N).", min=0
        ),
    ] = None,
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Where the 16 kHz copies of the corpus go (default: ROOT/.vqspeech-cache, or "
            "~/.cache/vqspeech if ROOT is read-only; $VQSPEECH_CACHE_DIR overrides).",
        ),
    ] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a VQ-VAE. Ctrl-C (or SIGTERM) saves a checkpoint and exits with 130; --resume continues it.

    Multi-GPU: torchrun --nproc_per_node N -m vqspeech_cli.main train ...
    """
    report = TrainProgress(quiet)
    with boundary():
        try:
            result = train(
                load_recipe(recipe, overrides or ()),
                data,
                out,
                steps=steps,
                resume=resume,
                device=device,
                callback=report,
                cache_dir=cache_dir,
            )
        finally:
            report.close()
    if not quiet:
        stderr.print(f"checkpoint: {result.checkpoint} (step {result.step})")
    if result.interrupted:
        raise typer.Exit(130)
