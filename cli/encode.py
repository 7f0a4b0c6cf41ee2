"""``vqspeech encode``: audio files -> discrete tokens (.vqt token files, .npy, text or JSON lines)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vqspeech.audio import AUDIO_EXTENSIONS
from vqspeech.batch import TOKEN_FORMATS, Task, encode_files
from vqspeech.bundled import model_or_bundled
from vqspeech.codec import Codec
from vqspeech.prior_checkpoint import load_prior
from vqspeech_cli import io
from vqspeech_cli.errors import boundary
from vqspeech_cli.options import DefaultModel, Device, Jobs, Output, Overwrite, Prior, Quiet


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
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Audio files (anything soundfile reads, any rate, any channels), folders (searched "
            "recursively for .wav/.flac/.ogg), or - to read paths from stdin, one per line.",
            metavar="INPUT",
        ),
    ],
    model: DefaultModel = None,
    output: Output = None,
    fmt: Format = None,
    source_speaker: SourceSpeaker = None,
    prior: Prior = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    jobs: Jobs = 1,
    quiet: Quiet = False,
) -> None:
    """Encode audio to discrete tokens, exactly (chunked encoding equals whole-file encoding).

    Without -o, each output goes next to its input: x.wav -> x.vqt (x.npy, x.txt); jsonl: stdout.

    -o DIR mirrors folder inputs' trees (file inputs go flat); -o - streams one result to stdout.

    Existing outputs are kept unless --overwrite. The model is loaded once for all inputs; without
    -m it is the model bundled with vqspeech (vqspeech info says what it is good and bad at).

    --prior PRIOR entropy-codes the token files with a trained prior (decode them with --prior too).

    Exit code 0: all inputs encoded; 1: some failed (each named on stderr, the rest still done).
    """
    resolved = _format(fmt, output)
    with boundary():
        found, problems = io.expand_inputs(inputs, AUDIO_EXTENSIONS)
        tasks, jsonl = _plan(found, output, len(inputs), resolved)
        codec = Codec.load(model_or_bundled(model), device)
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
