"""``vqspeech convert``: voice conversion, audio -> tokens -> audio in another speaker's voice."""

from __future__ import annotations

from typing import Annotated

import typer

from vqspeech.audio import AUDIO_EXTENSIONS, FORMATS
from vqspeech.inference import Codec, convert_files
from vqspeech_cli import io
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import (
    DecoderFamily,
    Device,
    Jobs,
    Model,
    Output,
    Overwrite,
    Quiet,
    SampleRate,
    Seed,
    Temperature,
)

Speaker = Annotated[
    str, typer.Option("--speaker", "-s", help="Target speaker (see vqspeech speakers --model CKPT).")
]


def convert(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (anything soundfile reads), folders (searched recursively for "
            ".wav/.flac/.ogg), or - to read paths from stdin, one per line.",
            metavar="INPUT",
        ),
    ],
    model: Model,
    speaker: Speaker,
    output: Output = None,
    sample_rate: SampleRate = None,
    seed: Seed = 0,
    temperature: Temperature = 1.0,
    decoder: DecoderFamily = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    jobs: Jobs = 1,
    quiet: Quiet = False,
) -> None:
    """Convert speech to another speaker's voice: encode, then decode with --speaker.

    The same audio as encode followed by decode --speaker with the same --seed.

    Without -o: x.wav -> x.SPEAKER.wav next to it.

    -o DIR: DIR/x.wav, mirroring folder inputs; -o FILE: .wav/.flac/.ogg; -o -: WAV on stdout.

    Output is at the model's rate unless --sample-rate. Existing outputs are kept unless --overwrite.

    Exit code 0: all inputs converted; 1: some failed (each named on stderr, the rest still done).
    """
    with boundary():
        found, problems = io.expand_inputs(inputs, AUDIO_EXTENSIONS)
        suffix = f".{speaker}.wav"
        tasks = io.plan_outputs(
            found, output, n_args=len(inputs), next_to_input=suffix, in_folder=".wav", file_suffixes=FORMATS
        )
        codec = Codec.load(model, device)
        with io.Reporter("convert", len(tasks), quiet, problems) as report:
            convert_files(
                codec,
                tasks,
                speaker=speaker,
                seed=seed,
                temperature=temperature,
                sample_rate=sample_rate,
                decoder=decoder,
                overwrite=overwrite,
                stream=io.stdout_for(tasks),
                workers=jobs,
                on_outcome=report.on_outcome,
                on_progress=report.on_progress,
            )
    report.summary()
    raise typer.Exit(report.exit_code)
