"""Progress rendering shared by the commands: rich bars on a terminal, plain lines otherwise.

The library reports progress through callbacks (``progress(stage, done, total)``, the
:class:`vqspeech.train.TrainCallback` protocol); these classes draw them on stderr.
"""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vqspeech.train import EvalMetrics, StepMetrics
from vqspeech_cli.errors import stderr


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
            stats = f"loss {m.loss:.3f} ppl {m.perplexity:.0f} {m.steps_per_second:.2f} it/s"
            self.progress.update(self.task, completed=m.step, stats=stats)
            if m.step >= m.total_steps:
                self.progress.stop()

    def on_eval(self, m: EvalMetrics) -> None:
        if not self.quiet:
            stderr.print(
                f"step {m.step}: valid loss {m.valid_loss:.3f}, perplexity {m.valid_perplexity:.0f}, "
                f"codes used {m.codes_used}, dead {m.dead_codes}"
            )

    def on_message(self, text: str) -> None:
        if not self.quiet:
            stderr.print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
