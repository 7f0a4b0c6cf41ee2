"""``vqspeech decode``: token files -> audio, in the source speaker's voice or another one."""

from __future__ import annotations

from typing import Annotated

import typer

from vqspeech import corpus_encode
from vqspeech.batch import decode_files
from vqspeech.bundled import model_or_bundled, prior_or_bundled
from vqspeech.codec import Codec
from vqspeech.inference import DecodeOptions
from vqspeech.prior_checkpoint import load_prior
from vqspeech.tokens import TOKEN_SUFFIX
from vqspeech_cli import io
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import (
    DecoderFamily,
    DefaultModel,
    Device,
    Jobs,
    Output,
    Overwrite,
    Precision,
    Prior,
    Quiet,
    Reference,
    SampleRate,
    Seed,
    Temperature,
)

Speaker = Annotated[
    str | None,
    typer.Option(
        "--speaker",
        "-s",
        help="Decode in this speaker's voice (voice conversion on tokens, no re-encoding). "
        "Default: the source's voice: the speaker vector in each file's header (models with a speaker "
        "encoder), else the source speaker named there, if the model knows it.",
    ),
]
Force = Annotated[
    bool, typer.Option("--force", help="Decode tokens made by another model (fingerprint mismatch) anyway.")
]


def decode(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Token files (.vqt), folders (searched recursively for .vqt), encode manifests "
            "(.jsonl: their ok/skipped outputs), or - to read paths from stdin, one per line.",
            metavar="TOKENS",
        ),
    ],
    model: DefaultModel = None,
    speaker: Speaker = None,
    reference: Reference = None,
    output: Output = None,
    sample_rate: SampleRate = None,
    seed: Seed = 0,
    temperature: Temperature = 1.0,
    decoder: DecoderFamily = None,
    force: Force = False,
    prior: Prior = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    jobs: Jobs = 1,
    quiet: Quiet = False,
) -> None:
    """Decode token files to audio, chunk by chunk at bounded memory.

    Without -o: x.vqt -> x.SPEAKER.wav next to it with --speaker, x.ref-VOICE.wav with --reference,
    else x.decoded.wav (never x.wav).

    A manifest from encode (OUT/manifest.jsonl) decodes every output it lists as ok or skipped,
    mirroring the tree under the manifest's folder with -o DIR.

    -o DIR: DIR/x.wav, mirroring folder inputs; -o FILE: .wav/.flac/.ogg; -o -: WAV on stdout.

    Output is at the model's rate unless --sample-rate. Existing outputs are kept unless --overwrite.

    Without -m: the model bundled with vqspeech (decode needs the model that encoded the tokens).

    Files entropy-coded with a prior (encode --prior) need --prior with that prior; without -m and
    --prior, the prior bundled with vqspeech is used (files encoded with --prior bundled).

    Under torchrun (torchrun --nproc_per_node N -m vqspeech_cli.main decode ...) each rank decodes
    its share of the inputs, balanced by duration.

    Exit code 0: all inputs decoded; 1: some failed (each named on stderr, the rest still done).
    """
    target = io.voice_label(speaker, reference, required=False)
    with boundary():
        tasks, problems = io.audio_tasks(inputs, output, {TOKEN_SUFFIX}, target or "decoded", manifests=True)
        rank, world, local_rank = corpus_encode.torchrun_place()
        if world > 1:  # under torchrun: this rank's share, balanced by the headers' durations
            durations = [corpus_encode.token_duration(t.source) for t in tasks]
            tasks = corpus_encode.my_tasks(tasks, rank, world, durations)
            problems = problems if rank == 0 else []
        codec = Codec.load(model_or_bundled(model), device, local_rank, precision)
        prior = prior_or_bundled(prior, model, implicit=True)
        coding_prior = load_prior(prior) if prior is not None else None
        with io.Reporter("decode", len(tasks), quiet, problems) as report:
            decode_files(
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
                force=force,
                stream=io.stdout_for(tasks),
                workers=jobs,
                on_outcome=report.on_outcome,
                on_progress=report.on_progress,
                prior=coding_prior,
            )
    report.summary()
    raise typer.Exit(report.exit_code)
