"""The typer app and the one error boundary.

Each command lives in its own module and makes one library call. Library errors
(:class:`vqspeech.errors.VQSpeechError`) become one red line on stderr and exit code 1;
usage errors are typer's (exit code 2). Nothing else is caught: a traceback means a bug.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vqspeech import __version__
from vqspeech_cli import (
    convert,
    data,
    decode,
    demo,
    encode,
    evaluate,
    export,
    info,
    prior,
    probe,
    sample,
    score,
    speakers,
    train,
)

app = typer.Typer(
    name="vqspeech",
    help="Discrete speech tokens with a VQ-VAE: train, encode, decode, convert voices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vqspeech {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Discrete speech tokens with a VQ-VAE: train, encode, decode, convert voices."""


app.command("info")(info.info)
app.command("encode")(encode.encode)
app.command("decode")(decode.decode)
app.command("convert")(convert.convert)
app.command("speakers")(speakers.speakers)
app.command("train")(train.train_command)
app.command("demo")(demo.demo_command)
app.command("eval")(evaluate.eval_command)
app.command("probe")(probe.probe_command)
app.command("export")(export.export_command)
app.command("score")(score.score_command)
app.add_typer(data.app, name="data")
app.add_typer(prior.app, name="prior")
app.command("sample")(sample.sample_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # torchrun -m vqspeech_cli.main ...
    main()
