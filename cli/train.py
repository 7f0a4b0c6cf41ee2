"""``vqspeech train``: learn a VQ-VAE on VCTK, a speaker folder or a manifest (or an image/video recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.config import load_recipe
from vqspeech.errors import ConfigError
from vqspeech.loop import FitResult
from vqspeech.train import TrainResult, train
from vqspeech.vision import is_vision_recipe, load_vision_recipe
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import CacheDir, Device, Overrides, Quiet, Resume, RunOut, Steps
from vqspeech_cli.progress import TrainProgress, note_ignored_overrides


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
    cache_dir: CacheDir = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a VQ-VAE (speech, or the image and video recipes of docs/vision.md).

    Ctrl-C (or SIGTERM) saves a checkpoint and exits with 130; --resume continues it.

    Multi-GPU: torchrun --nproc_per_node N -m vqspeech_cli.main train ...
    """
    report = TrainProgress(quiet)
    with boundary():
        try:
            result: TrainResult | FitResult
            if is_vision_recipe(recipe):
                from vqspeech.vision.train import train_vision  # torch-heavy: only when asked for

                vision = load_vision_recipe(recipe, overrides or ())
                note_ignored_overrides(overrides, out, resume, quiet)
                result = train_vision(
                    vision, data, out, steps=steps, resume=resume, device=device, callback=report
                )
            else:
                speech = load_recipe(recipe, overrides or ())  # a missing recipe file is named first
                if data is None:
                    raise ConfigError(
                        "speech recipes need --data: a VCTK root, a speaker folder or a manifest"
                    )
                result = train(
                    speech,
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
