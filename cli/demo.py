"""``vqspeech demo``: synthesise, train, encode, decode, convert, evaluate and report, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from vqspeech.demo import run_demo
from vqspeech.report import summary_lines
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Device, Overrides, Quiet
from vqspeech_cli.progress import ProgressBar, TrainProgress


class _DemoReport(TrainProgress):
    """Training's progress bar and lines (:class:`vqspeech_cli.progress.TrainProgress`), plus a line per
    stage and the synthesis progress bar (:class:`vqspeech_cli.progress.ProgressBar`)."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        self.bar: ProgressBar | None = None

    def on_stage(self, stage: str, text: str) -> None:
        self._close_bar()
        if not self.quiet:
            stderr.print(f"[bold]{stage:>8}[/] {escape(text)}")

    def on_message(self, text: str) -> None:
        if not self.quiet:  # the evaluation's progress: indented under its stage's line
            stderr.print(f"{'':>8} {escape(text)}", style="dim")

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = ProgressBar(self.quiet, stage)
        self.bar(stage, done, total)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._close_bar()
        super().close()


def demo_command(
    out: Annotated[
        Path,
        typer.Argument(help="Folder for everything: data/, run/, tokens/, audio/, eval.json, report.html."),
    ] = Path("demo-out"),
    steps: Annotated[
        int | None,
        typer.Option("--steps", min=1, help="Training steps in total (default: the demo recipe's, 1000)."),
    ] = None,
    speakers: Annotated[
        int, typer.Option("--speakers", min=3, help="Synthetic speakers in the corpus (s01, s02, ...).")
    ] = 8,
    utterances: Annotated[
        int, typer.Option("--utterances", min=4, help="Utterances per speaker (~3 s each).")
    ] = 40,
    eval_utterances: Annotated[
        int,
        typer.Option(
            "--eval-utterances", min=1, help="Held-out utterances to encode, decode, convert, score."
        ),
    ] = 8,
    engines: Annotated[
        list[str] | None,
        typer.Option(
            "--engine",
            help="Synthesiser for the corpus (espeak, flite, festival; repeatable). Default: all installed.",
            metavar="NAME",
        ),
    ] = None,
    overrides: Overrides = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Run the whole demo: corpus, training, tokens, conversions, evaluation, OUT/report.html.

    Synthesises a corpus, trains the demo recipe, encodes the held-out utterances to token files,
    decodes them, converts each to two other speakers, scores everything, and writes a report.
    Running it again reuses what is done (corpus, finished training, evaluation).
    Ctrl-C during training saves a checkpoint; the same command continues from it.
    The report's path goes to stdout.
    """
    report = _DemoReport(quiet)
    with boundary():
        try:
            result = run_demo(
                out,
                steps=steps,
                speakers=speakers,
                utterances=utterances,
                overrides=overrides or (),
                engines=engines or None,
                max_utterances=eval_utterances,
                device=device,
                callback=report,
            )
        finally:
            report.close()
    if result.interrupted or result.report is None:
        stderr.print(
            f"[bold red]interrupted[/] at step {result.step}/{result.total_steps}; "
            "run the same command again to continue"
        )
        raise typer.Exit(130)
    if not quiet:
        for aim in result.aims:
            mark = "[green]met[/]" if aim.met else "[red]not met[/]"
            stderr.print(f"{escape(aim.aim.label)}: {aim.value_text} (aim >= {aim.target_text}) {mark}")
        for line in summary_lines(result.metrics):
            stderr.print(escape(line))
        stderr.print(f"report: [bold]{escape(str(result.report))}[/] (open it in a web browser)")
    typer.echo(str(result.report))
