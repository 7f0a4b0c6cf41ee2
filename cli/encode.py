"""``vqspeech encode``: audio files -> discrete tokens (.vqt token files, .npy, text or JSON lines)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vqspeech import corpus_encode
from vqspeech.audio import AUDIO_EXTENSIONS
from vqspeech.batch import TOKEN_FORMATS, Task, encode_files
from vqspeech.batch_encode import default_batch_size
from vqspeech.bundled import model_or_bundled, prior_or_bundled
from vqspeech.codec import Codec
from vqspeech.prior_checkpoint import load_prior
from vqspeech_cli import io
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import AudioInputs, DefaultModel, Device, Jobs, Output, Overwrite, Prior, Quiet


class TokenFormat(str, Enum):
    vqt = "vqt"
    npy = "npy"
    txt = "txt"
    jsonl = "jsonl"


Format = Annotated[
    TokenFormat | None,
    typer.Option(
        "--format",
        "-f",
        help="vqt (token file with header), npy, txt (codes as text) or jsonl (one record per input, "
        "to -o FILE or stdout). Default: from -o FILE's extension, else vqt.",
    ),
]
SourceSpeaker = Annotated[
    str | None,
    typer.Option(
        "--source-speaker",
        help="Speaker name to record in the headers (default: the parent folder's name, or the file "
        "name's prefix before '_', or an ancestor folder's name, when the model knows that speaker).",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue a killed or partial run: skip inputs whose output exists and is valid (a token "
        "file that loads with its CRC and came from this model; .npy/.txt that parse), encode the rest "
        "and replace any partial or corrupt output. Not with --overwrite.",
    ),
]
Manifest = Annotated[
    Path | None,
    typer.Option(
        "--manifest",
        help="Write a JSON-lines manifest: one line per input with its output, duration, frames, "
        "speaker vector, status (ok/skipped/error) and error (docs/manifest.md); replaced by each run. "
        "Default: none, except under torchrun with -o DIR: DIR/manifest.jsonl.",
        metavar="FILE.jsonl",
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Files per padded batch of similar lengths; the codes equal per-file encoding. "
        "Default: 16 on a GPU, 1 (per file) on a CPU, where batches are not faster.",
    ),
]


def _format(fmt: TokenFormat | None, output: str | None) -> str:
    """--format, else the extension of -o FILE when it is a known one, else vqt."""
    if fmt is not None:
        return fmt.value
    if output is None or output == io.STDIO or Path(output).is_dir():
        return "vqt"
    by_suffix = {suffix: name for name, suffix in TOKEN_FORMATS.items()}
    return by_suffix.get(Path(output).suffix.lower(), "vqt")


def _plan(found: list[io.Input], output: str | None, n_args: int, fmt: str) -> tuple[list[Task], Path | None]:
    """Tasks, plus the jsonl file when every record goes to one (None: stdout)."""
    if fmt != "jsonl":
        suffix = TOKEN_FORMATS[fmt]
        return io.plan_outputs(found, output, n_args=n_args, next_to_input=suffix, in_folder=suffix), None
    if output is None or output == io.STDIO:
        return [Task(i.path) for i in found], None
    if output.endswith("/") or Path(output).is_dir():
        raise typer.BadParameter("jsonl writes one file: give -o FILE.jsonl or -o -", param_hint="-o")
    return [Task(i.path) for i in found], Path(output)


def encode(
    inputs: AudioInputs,
    model: DefaultModel = None,
    output: Output = None,
    fmt: Format = None,
    source_speaker: SourceSpeaker = None,
    prior: Prior = None,
    overwrite: Overwrite = False,
    resume: Resume = False,
    manifest: Manifest = None,
    batch_size: BatchSize = None,
    device: Device = "auto",
    jobs: Jobs = 1,
    quiet: Quiet = False,
) -> None:
    """Encode audio to discrete tokens, exactly (chunked encoding equals whole-file encoding).

    Without -o, each output goes next to its input: x.wav -> x.vqt (x.npy, x.txt); jsonl: stdout.

    -o DIR mirrors folder inputs' trees (file inputs go flat); -o - streams one result to stdout.

    Existing outputs are kept unless --overwrite (an input whose output exists fails); --resume
    skips valid existing outputs and redoes partial or corrupt ones, so a rerun continues a
    killed job. The model is loaded once for all inputs.

    Many processes or GPUs: torchrun --nproc_per_node N -m vqspeech_cli.main encode CORPUS -m
    MODEL -o OUT shards the inputs by duration; each rank writes its own outputs, and rank 0
    merges the ranks' manifests into OUT/manifest.jsonl.

    Without -m the model is the one bundled with vqspeech (vqspeech info says what it is good
    and bad at).

    --prior PRIOR entropy-codes the token files with a trained prior (decode them with --prior too).

    Exit code 0: all inputs encoded; 1: some failed (each named on stderr, the rest still done).
    """
    resolved = _format(fmt, output)
    if resume and overwrite:
        raise typer.BadParameter("give --resume or --overwrite, not both", param_hint="--resume")
    with boundary():
        found, problems = io.expand_inputs(inputs, AUDIO_EXTENSIONS)
        tasks, jsonl = _plan(found, output, len(inputs), resolved)
        checkpoint = model_or_bundled(model)
        prior = prior_or_bundled(prior, model)
        one_file_each = resolved != "jsonl" and all(t.target is not None for t in tasks)
        corpus = (
            corpus_encode.torchrun_world_size() > 1 or resume or manifest is not None or (batch_size or 1) > 1
        )
        if corpus and not one_file_each:
            raise typer.BadParameter(
                "torchrun, --resume, --manifest and --batch-size write one file per input: give -o DIR "
                "(or no -o) and --format vqt, npy or txt",
                param_hint="-o",
            )
        # The corpus path loads the model itself (under torchrun: on this rank's GPU). A plain run
        # on a GPU takes it too, for padded batches by default (the same codes as per-file encoding).
        codec = None if corpus else Codec.load(checkpoint, device)
        if codec is None or (batch_size is None and one_file_each and default_batch_size(codec.device) > 1):
            with io.CorpusReporter(quiet, problems) as corpus_report:
                corpus_encode.run_corpus(
                    checkpoint if codec is None else codec,
                    tasks,
                    fmt=resolved,
                    overwrite=overwrite,
                    resume=resume,
                    speaker=source_speaker,
                    prior=prior,
                    workers=jobs,
                    batch_size=batch_size,
                    manifest=manifest,
                    out_dir=None if output is None or output == io.STDIO else Path(output),
                    device=device,
                    on_start=corpus_report.on_start,
                    on_outcome=corpus_report.on_outcome,
                )
            corpus_report.summary()
            raise typer.Exit(corpus_report.exit_code)
        coding_prior = load_prior(prior) if prior is not None else None
        with io.Reporter("encode", len(tasks), quiet, problems) as report:
            encode_files(
                codec,
                tasks,
                fmt=resolved,
                overwrite=overwrite,
                stream=io.stdout_for(tasks) if jsonl is None else None,
                jsonl=jsonl,
                speaker=source_speaker,
                workers=jobs,
                on_outcome=report.on_outcome,
                prior=coding_prior,
            )
    report.summary()
    raise typer.Exit(report.exit_code)
