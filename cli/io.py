"""Inputs and outputs shared by encode, decode and convert, and the per-input report.

* :func:`expand_inputs`: files as given; folders searched recursively for the command's
  extensions (hidden files and folders skipped, sorted); ``-`` reads paths from stdin, one a line.
* :func:`plan_outputs`: where each input's result goes, as :class:`~vqspeech.batch.Task` s:
  ``-o DIR`` mirrors each folder input's tree (file inputs go flat by name), ``-o FILE`` takes one
  input, ``-o -`` streams one result to stdout, and no ``-o`` writes next to the input. Shapes that
  cannot work (``-o -`` with several inputs, ``-o FILE`` that is a folder, ...) are usage errors.
* :class:`Reporter`: a progress bar on stderr when it is a terminal, one ``error: INPUT: reason``
  line per failed input, a summary, and the exit code (0 all done, 1 some failed).
  :class:`CorpusReporter` starts one when the corpus encoder says this rank's share.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from vqspeech.audio import FORMATS
from vqspeech.batch import Outcome, Task
from vqspeech.corpus_encode import CorpusShare
from vqspeech.manifest import read_manifest
from vqspeech_cli.errors import printable, stderr

STDIO = "-"


@dataclass(frozen=True)
class Input:
    """An input file and its place under ``-o DIR``: relative to its folder argument, or its name."""

    path: Path
    relative: Path
    from_folder: bool = False


@dataclass(frozen=True)
class Problem:
    """An input argument that yields nothing to process (e.g. a folder without matching files)."""

    label: str
    reason: str


def _walk(root: Path, extensions: Collection[str]) -> list[Path]:
    """Files under ``root`` with these extensions, sorted; hidden names skipped; symlinked folders
    followed, each real folder once (so a link loop ends)."""
    found = []
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = {d: os.path.realpath(os.path.join(folder, d)) for d in dirs if not d.startswith(".")}
        dirs[:] = sorted(d for d, r in real.items() if r not in seen)
        seen.update(real[d] for d in dirs)
        found += [
            Path(folder) / f
            for f in sorted(files)
            if not f.startswith(".") and Path(f).suffix.lower() in extensions
        ]
    return found


def _manifest_inputs(path: Path) -> list[Input]:
    """The usable outputs (status ok/skipped) an encode manifest lists, placed under ``-o DIR``
    as they sit under the manifest's folder (else flat by name)."""
    found = []
    for entry in read_manifest(path):
        if entry.usable and entry.output is not None:
            out = Path(entry.output)
            try:
                found.append(Input(out, out.resolve().relative_to(path.parent.resolve()), from_folder=True))
            except ValueError:
                found.append(Input(out, Path(out.name)))
    return found


def expand_inputs(
    args: Sequence[str], extensions: Collection[str], stdin: TextIO | None = None, *, manifests: bool = False
) -> tuple[list[Input], list[Problem]]:
    """Expand command-line inputs into files; duplicates (same real path) are kept once.

    ``manifests``: a ``.jsonl`` file argument is an encode manifest (docs/manifest.md) and
    stands for the outputs it lists as ok or skipped.

    Paths that do not exist are passed through: processing them fails with the library's message,
    and the other inputs still run.
    """
    inputs: list[Input] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    names: list[str] = []
    for arg in args:
        if arg == STDIO:
            stream = stdin if stdin is not None else sys.stdin
            names += [line.strip() for line in stream.read().splitlines() if line.strip()]
        else:
            names.append(arg)
    for name in names:
        path = Path(name)
        if path.is_dir():
            files = _walk(path, extensions)
            if not files:
                problems.append(Problem(name, f"no {'/'.join(sorted(extensions))} files in this folder"))
            candidates = [Input(f, f.relative_to(path), from_folder=True) for f in files]
        elif manifests and path.suffix.lower() == ".jsonl" and path.is_file():
            candidates = _manifest_inputs(path)
            if not candidates:
                problems.append(Problem(name, "this manifest lists no encoded outputs (status ok/skipped)"))
        else:
            candidates = [Input(path, Path(path.name))]
        for candidate in candidates:
            key = os.path.realpath(candidate.path)
            if key not in seen:
                seen.add(key)
                inputs.append(candidate)
    if not inputs and not problems:
        raise typer.BadParameter("no input files (stdin gave no paths)", param_hint="INPUT")
    return inputs, problems


def _with_suffix(path: Path, suffix: str) -> Path:
    """``path`` with its extension replaced by ``suffix`` (which may hold dots: ``.s01.wav``)."""
    return path.with_name(path.stem + suffix)


def plan_outputs(
    inputs: Sequence[Input],
    output: str | None,
    *,
    n_args: int,
    next_to_input: str,
    in_folder: str,
    file_suffixes: Collection[str] | None = None,
) -> list[Task]:
    """One task per input. ``next_to_input`` / ``in_folder``: the output's extension when there is
    no ``-o`` (next to the input) and under ``-o DIR``. ``file_suffixes``: extensions allowed for
    ``-o FILE`` (None: any). ``n_args``: how many input arguments were given (several -> folder).
    """
    if output is None:
        return [Task(i.path, _with_suffix(i.path, next_to_input)) for i in inputs]
    if output == STDIO:
        if len(inputs) != 1:
            raise typer.BadParameter(
                f"-o - streams one result, but there are {len(inputs)} inputs; give -o DIR", param_hint="-o"
            )
        return [Task(inputs[0].path, None)]
    target = Path(output)
    as_folder = (
        output.endswith(("/", os.sep)) or target.is_dir() or n_args > 1 or len(inputs) > 1
        or any(i.from_folder for i in inputs)
    )  # fmt: skip
    if not as_folder:
        if file_suffixes is not None and target.suffix.lower() not in file_suffixes:
            endings = ", ".join(sorted(file_suffixes))
            raise typer.BadParameter(
                f"{output}: give a file ending in {endings}, or a folder ending in /", param_hint="-o"
            )
        return [Task(inputs[0].path, target)]
    if target.exists() and not target.is_dir():
        raise typer.BadParameter(
            f"{output} is a file; with several or folder inputs, give a folder", param_hint="-o"
        )
    return [Task(i.path, target / _with_suffix(i.relative, in_folder)) for i in inputs]


def audio_tasks(
    args: Sequence[str],
    output: str | None,
    extensions: Collection[str],
    voice: str,
    *,
    manifests: bool = False,
) -> tuple[list[Task], list[Problem]]:
    """decode's and convert's inputs and their audio outputs: ``x.VOICE.wav`` next to each input
    without ``-o``, ``DIR/x.wav`` under ``-o DIR``, a ``.wav/.flac/.ogg`` file or ``-``.
    ``manifests``: see :func:`expand_inputs`."""
    found, problems = expand_inputs(args, extensions, manifests=manifests)
    suffix = f".{voice}.wav"
    tasks = plan_outputs(
        found, output, n_args=len(args), next_to_input=suffix, in_folder=".wav", file_suffixes=FORMATS
    )
    return tasks, problems


def voice_label(speaker: str | None, reference: Sequence[Path] | None, *, required: bool) -> str | None:
    """The target voice's name for output files: ``SPEAKER`` or ``ref-VOICE`` (the first reference's
    stem); None when neither is given. Both, or neither when ``required``, is a usage error."""
    if speaker is not None and reference:
        raise typer.BadParameter("give --speaker or --reference, not both", param_hint="--speaker")
    if reference:
        return f"ref-{reference[0].stem}"
    if required and speaker is None:
        raise typer.BadParameter(
            "name the target voice: --speaker NAME, or --reference VOICE.wav", param_hint="--speaker"
        )
    return speaker


def stdout_for(tasks: Sequence[Task]) -> BinaryIO | None:
    """Binary stdout (text written so far flushed first) when a task streams there, else None."""
    if all(task.target is not None for task in tasks):
        return None
    sys.stdout.flush()
    return sys.stdout.buffer


class Reporter:
    """Per-input reporting on stderr; use as a context manager around the batch.

    A rich progress bar only when stderr is a terminal and not ``quiet``; failures always print,
    one line each; a summary line unless ``quiet``. :attr:`exit_code` is 0 or 1.
    """

    def __init__(self, verb: str, total: int, quiet: bool, problems: Sequence[Problem] = ()) -> None:
        self.verb = verb
        self.total = total
        self.quiet = quiet
        self.failed = 0
        self.done = 0
        self.seconds = 0.0
        self.problems = list(problems)
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self._start = time.perf_counter()

    def __enter__(self) -> Reporter:
        for problem in self.problems:
            self.fail(problem.label, problem.reason)
        if not self.quiet and stderr.is_terminal:
            self.progress = Progress(
                TextColumn(f"[bold]{self.verb}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[now]}"), TimeElapsedColumn(), console=stderr, transient=True,
            )  # fmt: skip
            self.task = self.progress.add_task(self.verb, total=self.total, now="")
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def fail(self, label: str, reason: str) -> None:
        self.failed += 1
        reason = " ".join(reason.split())
        # most library messages start with the path already: keep ``INPUT: reason`` (scripts parse
        # it) and say the path once ("x.vqt: is truncated", not "x.vqt: x.vqt is truncated")
        for head in (f"{label}: ", f"{label} "):
            if reason.startswith(head) and len(reason) > len(head):
                reason = reason[len(head) :]
                break
        stderr.print(f"[bold red]error:[/] {escape(printable(f'{label}: {reason}'))}")

    def on_outcome(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.fail(outcome.task.name, outcome.error)
        else:
            self.done += 1
            self.seconds += outcome.seconds
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def on_progress(self, task: Task, done: float, total: float) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, now=f"{task.source.name} {done:.0f}/{total:.0f} s")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> None:
        """One line on stderr (unless quiet): inputs done and failed, audio seconds, wall time."""
        if self.quiet:
            return
        wall = time.perf_counter() - self._start
        line = f"{self.verb}: {self.done} done ({self.seconds:.1f} s of audio) in {wall:.1f} s"
        stderr.print(line + (f", [bold red]{self.failed} failed[/]" if self.failed else ""))


class CorpusReporter:
    """encode's corpus path (:func:`vqspeech.corpus_encode.run_corpus`): a :class:`Reporter` that
    starts when the library says this process's share (``on_start``, after the model is loaded),
    so the bar counts this rank's inputs, the summary names the rank under torchrun, and only
    rank 0 names the arguments that gave nothing. Use as a context manager around the run."""

    def __init__(self, quiet: bool, problems: Sequence[Problem] = ()) -> None:
        self.quiet = quiet
        self.problems = list(problems)
        self.report: Reporter | None = None

    def __enter__(self) -> CorpusReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.report is not None:
            self.report.__exit__(kind, exc, tb)

    def on_start(self, share: CorpusShare) -> None:
        verb = f"encode (rank {share.rank}/{share.world_size})" if share.world_size > 1 else "encode"
        problems = self.problems if share.rank == 0 else ()
        self.report = Reporter(verb, share.n_tasks, self.quiet, problems).__enter__()

    def on_outcome(self, outcome: Outcome) -> None:
        assert self.report is not None, "on_start comes first"
        self.report.on_outcome(outcome)

    @property
    def exit_code(self) -> int:
        assert self.report is not None, "on_start comes first"
        return self.report.exit_code

    def summary(self) -> None:
        assert self.report is not None, "on_start comes first"
        self.report.summary()
