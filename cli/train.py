"""``vqspeech train``: learn a VQ-VAE on VCTK, a speaker folder or a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vqspeech.config import load_recipe
from vqspeech.train import EvalMetrics, StepMetrics, train
from vqspeech_cli.errors import boundary, stderr
from vqspeech_cli.options import Device, Overrides, Quiet


class _Report:
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


def train_command(
    recipe: Annotated[str, typer.Argument(help="Built-in recipe (demo, paper) or a recipe YAML file.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="VCTK root (0.80 or 0.92), a folder of speaker folders, or a TSV manifest."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt, metrics.csv, tensorboard/.")],
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", help="Total steps (not additional: --resume --steps N extends a run to N).", min=0
        ),
    ] = None,
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Where the 16 kHz copies of the corpus go (default: ROOT/.vqspeech-cache, or "
            "~/.cache/vqspeech if ROOT is read-only; $VQSPEECH_CACHE_DIR overrides).",
        ),
    ] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a VQ-VAE. Ctrl-C (or SIGTERM) saves a checkpoint and exits with 130; --resume continues it.

    Multi-GPU: torchrun --nproc_per_node N -m vqspeech_cli.main train ...
    """
    report = _Report(quiet)
    with boundary():
        try:
            result = train(
                load_recipe(recipe, overrides or ()),
                data,
                out,
                steps=steps,
                resume=resume,
                device=device,
                callback=report,
                cache_dir=cache_dir,
            )
        finally:
            report.close()
    if not quiet:
        stderr.print(f"checkpoint: {result.checkpoint} (step {result.step})")
    if result.interrupted:
        raise typer.Exit(130)
