"""``vqspeech sample``: new speech in a voice, made up by the prior and decoded by the model (issue #8).

Image and video models (docs/vision.md) sample an image grid or roll out a video instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vqspeech.runs import sample_run
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Device, Model, Quiet, Temperature


def sample_command(
    model: Model,
    prior: Annotated[
        Path,
        typer.Option(
            "--prior", help="Prior checkpoint (from vqspeech prior train) for --model.", metavar="PRIOR"
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Audio file to write (.wav, .flac or .ogg); images: a .png grid; video: a .gif (plus a "
            ".png frame strip beside it) or a .png strip.",
            metavar="FILE",
        ),
    ],
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0.0, help="Speech: length in seconds (required).")
    ] = None,
    speaker: Annotated[
        str | None,
        typer.Option(
            "--speaker",
            "-s",
            help="Voice (a speaker of the model; see vqspeech speakers). Default: the prior unconditioned, "
            "decoded in a voice picked by --seed.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed + settings = the same speech.")] = 0,
    count: Annotated[int, typer.Option("--count", min=1, help="Images: how many to sample.")] = 16,
    label: Annotated[
        int | None,
        typer.Option("--label", help="Images: the class to sample (default: one column per class)."),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Video: frames to roll out.")] = 16,
    temperature: Temperature = 1.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --output if it exists.")] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Sample new speech: codes from the prior (--temperature applies to it), decoded by the model.

    With an image or video --model: a grid of images from the PixelCNN prior, or a rollout of
    --frames frames under random actions, predicted in latent space and decoded.
    """
    with boundary():
        made = sample_run(
            model,
            prior,
            output,
            seconds=seconds,
            speaker=speaker,
            seed=seed,
            count=count,
            label=label,
            frames=frames,
            temperature=temperature,
            overwrite=overwrite,
            device=device,
        )
    if not quiet:
        stderr.print(f"{', '.join(map(str, made.files))}: {made.summary}")
