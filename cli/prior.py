"""``vqspeech prior train``: learn a prior over a trained model's speech codes (issue #8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.runs import train_prior_run
from vqspeech_cli.options import CacheDir, Device, Model, Overrides, Quiet, Resume, RunOut, Steps
from vqspeech_cli.progress import note_ignored_overrides, run_training

app = typer.Typer(
    help="A prior over a model's speech codes: train it, then sample speech with vqspeech sample.",
    no_args_is_help=True,
)


@app.command("train")
def train_command(
    model: Model,
    out: RunOut,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The corpus to encode and learn from: VCTK, a folder of speaker folders, or a TSV manifest "
            "(image/video models: only cifar10 needs it, its cifar-10-batches-py folder).",
        ),
    ] = None,
    steps: Steps = None,
    overrides: Overrides = None,
    resume: Resume = False,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a prior over the codes --model gives the corpus: held-out bits/token (float and integer) at
    each evaluation. Ctrl-C saves a checkpoint and exits with 130; --resume continues it.

    Settings (--set): model.channels, model.kernel_size, model.dilations, segment_tokens,
    speaker_dropout, train.steps, train.lr, train.batch_size, ...

    An image or video --model (docs/vision.md) gets its PixelCNN or next-frame prior instead
    (--set prior.*, prior_train.*): held-out bits/dim or next-frame accuracy at each evaluation.
    """
    note_ignored_overrides(overrides, out, resume, quiet)
    run_training(
        quiet,
        lambda report: train_prior_run(
            model,
            data,
            out,
            steps=steps,
            overrides=overrides or (),
            resume=resume,
            device=device,
            callback=report,
            cache_dir=cache_dir,
        ),
    )
