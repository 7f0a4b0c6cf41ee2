"""Progress rendering shared by the commands: rich bars on a terminal, plain lines otherwise.

The library reports progress through callbacks (``progress(stage, done, total)``, the
:class:`vqspeech.loop.TrainCallback` protocol); these classes draw them on stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vqspeech_cli.errors import boundary, stderr

if TYPE_CHECKING:  # types only: importing the training code (scipy, the data pipeline) costs
    # every command, decode included, ~0.15 s of start-up
    from vqspeech.loop import EvalMetrics, FitResult, StepMetrics
    from vqspeech.train import TrainResult

# Loss terms worth a place on the progress bar, when a task logs them: (name, decimals).
_SHOWN = (("perplexity", 0), ("bits_per_token", 3), ("bits_per_dim", 3))
_SHORT = {"perplexity": "ppl", "bits_per_token": "bits/token", "bits_per_dim": "bits/dim"}


def _number(value: float) -> str:
    """Counts as integers, other figures to four significant digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


class ProgressBar:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, quiet: bool, label: str) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        if not quiet and stderr.is_terminal:
            self.progress = Progress(
                TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), console=stderr,
            )  # fmt: skip
            self.task = self.progress.add_task(label, total=None)
            self.progress.start()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class TrainProgress:
    """Rich progress bar on a terminal; a plain line per evaluation otherwise (logs, CI)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def on_start(self, start_step: int, total_steps: int) -> None:
        if self.quiet:
            return
        if start_step:
            stderr.print(f"resuming at step {start_step}/{total_steps}")
        if stderr.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")
            self.progress.start()

    def on_step(self, m: StepMetrics) -> None:
        if self.progress is not None and self.task is not None:
            extra = "".join(f" {_SHORT[k]} {m.terms[k]:.{d}f}" for k, d in _SHOWN if k in m.terms)
            stats = f"loss {m.loss:.3f}{extra} {m.steps_per_second:.2f} it/s"
            self.progress.update(self.task, completed=m.step, stats=stats)
            if m.step >= m.total_steps:
                self.progress.stop()

    def on_eval(self, m: EvalMetrics) -> None:
        if not self.quiet:
            shown = ", ".join(f"{k.replace('_', ' ')} {_number(v)}" for k, v in m.values.items())
            stderr.print(f"step {m.step}: {shown}")

    def on_message(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_training(quiet: bool, run: Callable[[TrainProgress], TrainResult | FitResult]) -> None:
    """The tail every training command shares: ``run`` with a progress display inside the error
    boundary, then the checkpoint line, and exit code 130 when Ctrl-C stopped the run."""
    report = TrainProgress(quiet)
    with boundary():
        try:
            result = run(report)
        finally:
            report.close()
    if not quiet:
        stderr.print(f"checkpoint: {result.checkpoint} (step {result.step})")
    if result.interrupted:
        raise typer.Exit(130)


def note_ignored_overrides(overrides: list[str] | None, out: Path, resume: bool, quiet: bool) -> None:
    """Say that ``--set`` values are not used by a resumed run (it keeps its saved settings)."""
    if resume and overrides and not quiet:
        shown = ", ".join(f"--set {o}" for o in overrides)
        stderr.print(
            escape(
                f"--resume continues with every setting saved in {out / 'last.pt'} (only --steps changes "
                f"a resumed run); not used: {shown}"
            )
        )
