"""``vqspeech train``: learn a VQ-VAE on VCTK, a speaker folder or a manifest (or an image/video recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.runs import train_run
from vqspeech.vision import is_vision_recipe
from vqspeech_cli.options import CacheDir, Device, Overrides, Quiet, Resume, RunOut, Steps
from vqspeech_cli.progress import note_ignored_overrides, run_training


def train_command(
    recipe: Annotated[
        str,
        typer.Argument(
            help="Built-in recipe (speech: demo, paper; vision: digits, cifar10, video) or a YAML file."
        ),
    ],
    out: RunOut,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Speech: VCTK root (0.80 or 0.92), a folder of speaker folders, or a TSV manifest. "
            "cifar10: the cifar-10-batches-py folder. digits and video make their data and need none.",
        ),
    ] = None,
    steps: Steps = None,
    overrides: Overrides = None,
    resume: Resume = False,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            metavar="CKPT",
            help="Start from this checkpoint's weights (a .pt or run folder; 'bundled' for the model "
            "shipped with vqspeech) with a fresh optimiser: fine-tuning. The recipe's model settings "
            "must be the checkpoint's; speakers it knows keep their rows. Not with --resume.",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a VQ-VAE (speech, or the image and video recipes of docs/vision.md).

    Ctrl-C (or SIGTERM) saves a checkpoint and exits with 130; --resume continues it.

    Multi-GPU: torchrun --nproc_per_node N -m vqspeech_cli.main train ...
    """
    if is_vision_recipe(recipe):  # a speech run names each ignored setting itself (vqspeech.train)
        note_ignored_overrides(overrides, out, resume, quiet)
    run_training(
        quiet,
        lambda report: train_run(
            recipe,
            data,
            out,
            steps=steps,
            overrides=overrides or (),
            resume=resume,
            device=device,
            callback=report,
            cache_dir=cache_dir,
            init=init,
        ),
    )
