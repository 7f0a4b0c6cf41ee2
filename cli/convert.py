"""``vqspeech convert``: voice conversion, audio -> tokens -> audio in another speaker's voice."""

from __future__ import annotations

from typing import Annotated

import typer

from vqspeech.audio import AUDIO_EXTENSIONS
from vqspeech.batch import convert_files
from vqspeech.bundled import model_or_bundled
from vqspeech.codec import Codec
from vqspeech.inference import DecodeOptions
from vqspeech_cli import io
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import (
    AudioInputs,
    DecoderFamily,
    DefaultModel,
    Device,
    Jobs,
    Output,
    Overwrite,
    Precision,
    Quiet,
    Reference,
    SampleRate,
    Seed,
    Temperature,
)

Speaker = Annotated[
    str | None,
    typer.Option(
        "--speaker", "-s", help="Target speaker (see vqspeech speakers --model CKPT); or give --reference."
    ),
]


def convert(
    inputs: AudioInputs,
    model: DefaultModel = None,
    speaker: Speaker = None,
    reference: Reference = None,
    output: Output = None,
    sample_rate: SampleRate = None,
    seed: Seed = 0,
    temperature: Temperature = 1.0,
    decoder: DecoderFamily = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    jobs: Jobs = 1,
    quiet: Quiet = False,
) -> None:
    """Convert speech to another speaker's voice: encode, then decode with --speaker or --reference.

    --speaker NAME: a speaker of the model's table. --reference VOICE.wav: the voice in that
    recording, whoever it is (models with a speaker encoder). The same audio as encode followed by
    decode with the same --speaker / --reference and --seed.

    Without -o: x.wav -> x.SPEAKER.wav next to it (x.ref-VOICE.wav with --reference).

    -o DIR: DIR/x.wav, mirroring folder inputs; -o FILE: .wav/.flac/.ogg; -o -: WAV on stdout.

    Output is at the model's rate unless --sample-rate. Existing outputs are kept unless --overwrite.

    Without -m: the model bundled with vqspeech (vqspeech speakers lists its speakers).

    Exit code 0: all inputs converted; 1: some failed (each named on stderr, the rest still done).
    """
    target = io.voice_label(speaker, reference, required=True)
    with boundary():
        tasks, problems = io.audio_tasks(inputs, output, AUDIO_EXTENSIONS, str(target))
        codec = Codec.load(model_or_bundled(model), device, precision=precision)
        with io.Reporter("convert", len(tasks), quiet, problems) as report:
            convert_files(
                codec,
                tasks,
                DecodeOptions(
                    speaker=speaker,
                    seed=seed,
                    temperature=temperature,
                    sample_rate=sample_rate,
                    decoder=decoder,
                    overwrite=overwrite,
                ),
                reference=reference or (),
                stream=io.stdout_for(tasks),
                workers=jobs,
                on_outcome=report.on_outcome,
                on_progress=report.on_progress,
            )
    report.summary()
    raise typer.Exit(report.exit_code)
