"""Many files at once: run a list of :class:`Task` s, one :class:`Outcome` per task.

:func:`encode_files`, :func:`decode_files`, :func:`convert_files` and :func:`describe_files`
apply a verb of :mod:`vqspeech.inference` (or :func:`~vqspeech.describe.describe_any`) to every
task, on ``workers`` threads, reporting in task order. A failing input (missing, empty, not
audio, NaN, corrupt tokens, another model's tokens, output exists, ...) becomes an outcome with
an error message; the others still run. Errors that concern the whole batch (unknown target
speaker, an existing jsonl output) raise before any input is processed.

``encode_files(..., prior=...)`` writes token files arithmetic-coded with a trained prior
(issue 8); ``decode_files(..., prior=...)`` decodes them. Plain (packed) token files decode with
or without a prior (it is ignored for them), so a batch may mix both kinds.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import torch

from vqspeech.codec import ENCODE_CHUNK_FRAMES, Codec
from vqspeech.describe import describe_any
from vqspeech.errors import ConfigError, VQSpeechError
from vqspeech.files import LineSink, refuse_existing
from vqspeech.inference import (
    DecodeOptions,
    ProgressFn,
    batch_voice,
    convert_file,
    decode_file,
    encode_file,
    write_token_output,
)
from vqspeech.prior_checkpoint import PriorCheckpoint
from vqspeech.tokens import TOKEN_SUFFIX, TokenFile, jsonl_record

TokenFormat = Literal["vqt", "npy", "txt", "jsonl"]
#: Output formats of :func:`encode_files` and the file extension each one gets.
TOKEN_FORMATS: dict[str, str] = {"vqt": TOKEN_SUFFIX, "npy": ".npy", "txt": ".txt", "jsonl": ".jsonl"}


@dataclass(frozen=True)
class Task:
    """One input and where its result goes: ``target`` None means the batch's stream (stdout).

    ``label`` names the input in messages and jsonl records (default: the source path).
    """

    source: Path
    target: Path | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or str(self.source)


@dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Task`: ``error`` is None on success; ``seconds`` of audio."""

    task: Task
    error: str | None = None
    seconds: float = 0.0
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None


OutcomeFn = Callable[[Outcome], None]
TaskProgressFn = Callable[[Task, float, float], None]
"""``(task, seconds_done, seconds_total)``; called from the working thread."""


def _reason(exc: VQSpeechError, task: Task) -> str:
    """The error message, without a leading "<source>: " (callers prefix the input's name)."""
    text = " ".join(str(exc).split())
    for prefix in (f"{task.source}: ", f"{task.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _run(
    tasks: Sequence[Task],
    work: Callable[[Task], tuple[float, Any]],
    *,
    workers: int = 1,
    on_outcome: OutcomeFn | None = None,
    finish: Callable[[Task, Any], None] | None = None,
) -> list[Outcome]:
    """Run ``work`` on every task (``workers`` threads, results in task order); never stops early.

    A task whose target repeats an earlier task's fails without running. ``finish`` runs on the
    calling thread, in task order, after a successful ``work`` (e.g. appending a jsonl record).
    """
    owners: dict[Path, Task] = {}
    clashes: dict[int, str] = {}
    for i, task in enumerate(tasks):
        if task.target is None:
            continue
        key = Path(os.path.abspath(task.target))
        if key in owners:
            clashes[i] = (
                f"output {task.target} is also the output of {owners[key].name}; rename one, or give folders"
            )
        else:
            owners[key] = task

    def guarded(index: int) -> Outcome:
        task = tasks[index]
        if index in clashes:
            return Outcome(task, error=clashes[index])
        try:
            seconds, value = work(task)
        except VQSpeechError as exc:
            return Outcome(task, error=_reason(exc, task))
        return Outcome(task, seconds=seconds, value=value)

    outcomes: list[Outcome] = []
    executor = None
    if workers > 1 and len(tasks) > 1:
        # Parallelism comes from the files: split the intra-op threads among the workers, or
        # workers x threads oversubscribe the cores (OpenMP spin-waits then cost 10x or more).
        threads = max(1, torch.get_num_threads() // workers)
        executor = ThreadPoolExecutor(
            max_workers=workers, initializer=torch.set_num_threads, initargs=(threads,)
        )
    try:
        results = executor.map(guarded, range(len(tasks))) if executor else map(guarded, range(len(tasks)))
        for outcome in results:
            if outcome.ok and finish is not None:
                try:
                    finish(outcome.task, outcome.value)
                except VQSpeechError as exc:
                    outcome = Outcome(outcome.task, error=_reason(exc, outcome.task))
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _destination(task: Task, stream: BinaryIO | None) -> Path | BinaryIO:
    """Where ``task``'s result goes: its target file, else the batch's stream."""
    if task.target is not None:
        return task.target
    if stream is None:
        raise ValueError(f"{task.name}: a task without a target needs a stream")
    return stream


def _check_stream_tasks(tasks: Sequence[Task], stream: BinaryIO | None, what: str) -> None:
    streamed = [t for t in tasks if t.target is None]
    if streamed and stream is None:
        raise ValueError(f"{what}: tasks without a target need a stream")
    if streamed and len(tasks) > 1:
        raise ValueError(f"{what}: a stream takes exactly one result, got {len(tasks)} tasks")


def encode_files(
    codec: Codec,
    tasks: Sequence[Task],
    *,
    fmt: str = "vqt",
    overwrite: bool = False,
    stream: BinaryIO | None = None,
    jsonl: Path | None = None,
    speaker: str | None = None,
    workers: int = 1,
    chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
    on_outcome: OutcomeFn | None = None,
    prior: PriorCheckpoint | None = None,
) -> list[Outcome]:
    """Encode every task's audio file; one :class:`Outcome` per task, in order.

    ``fmt`` ``vqt`` / ``npy`` / ``txt``: each task's ``target`` file (or ``stream`` for the single
    task without one). ``jsonl``: one record per input (``path`` = the task's label) to the file
    ``jsonl`` (atomic, refused if it exists without ``overwrite``) or else to ``stream``.
    ``speaker`` sets the header's source speaker for all inputs (default: inferred per file).
    ``workers`` threads encode in parallel (outputs are written in any order, jsonl records in
    task order). ``prior``: arithmetic-code each token file with it (``vqt`` only; the prior must
    be the one trained on ``codec``'s codes, else ModelMismatchError before any input runs).
    """
    if fmt not in TOKEN_FORMATS:
        raise ConfigError(f"unknown token format {fmt!r}; use one of {', '.join(TOKEN_FORMATS)}")
    if prior is not None:
        if fmt != "vqt":
            raise ConfigError(f"--prior entropy-codes token files (vqt); it does not apply to {fmt} output")
        prior.check_model(codec.fingerprint)
    if speaker is not None:
        codec.speaker_id(speaker)
    sink: LineSink | None = None
    if fmt == "jsonl":
        records: Path | BinaryIO | None = jsonl if jsonl is not None else stream
        if records is None:
            raise ValueError("encode_files: jsonl output needs a jsonl path or a stream")
        sink = LineSink(records, overwrite)
    else:
        _check_stream_tasks(tasks, stream, "encode_files")

    def work(task: Task) -> tuple[float, Any]:
        if sink is None and task.target is not None:
            refuse_existing(task.target, overwrite)  # before the work; the writer does not ask again
        tokens = encode_file(codec, task.source, speaker=speaker, chunk_frames=chunk_frames)
        if sink is None:
            coded = prior.encode(tokens) if prior is not None else tokens
            write_token_output(coded, _destination(task, stream), fmt, overwrite=True)
        return tokens.header.num_samples / codec.sample_rate, tokens if sink is not None else None

    def finish(task: Task, tokens: TokenFile) -> None:
        if sink is not None:
            sink.add(jsonl_record(task.name, tokens))

    ok = False
    try:
        outcomes = _run(tasks, work, workers=workers, on_outcome=on_outcome, finish=finish)
        ok = True
    finally:
        if sink is not None:
            sink.close(ok)
    return outcomes


def decode_files(
    codec: Codec,
    tasks: Sequence[Task],
    options: DecodeOptions | None = None,
    *,
    reference: Sequence[str | os.PathLike[str]] = (),
    force: bool = False,
    prior: PriorCheckpoint | None = None,
    stream: BinaryIO | None = None,
    workers: int = 1,
    on_outcome: OutcomeFn | None = None,
    on_progress: TaskProgressFn | None = None,
) -> list[Outcome]:
    """:func:`decode_file` on every task (token file -> audio); one :class:`Outcome` per task.

    ``options`` (default :class:`DecodeOptions` ()) are the same for every file: voice,
    sampling, output rate, decoder family, overwriting, chunk size. An unknown
    ``options.speaker`` raises (CheckpointError listing the known ones) before any input runs.
    ``reference``: audio files of the voice to decode in (averaged, see
    :meth:`Codec.reference_vector`), read once before any input; not with ``options.speaker``
    or ``options.reference``. Each file is decoded with its own generator seeded with
    ``options.seed``, so a file's audio does not depend on the other inputs or on ``workers``.
    ``force`` decodes tokens of another model; ``prior`` decodes entropy-coded inputs (packed
    ones ignore it).
    """
    verb = functools.partial(decode_file, force=force, prior=prior)
    return _audio_batch(
        codec, tasks, verb, "decode_files", options or DecodeOptions(), reference=reference, required=False,
        stream=stream, workers=workers, on_outcome=on_outcome, on_progress=on_progress,
    )  # fmt: skip


def convert_files(
    codec: Codec,
    tasks: Sequence[Task],
    options: DecodeOptions | None = None,
    *,
    reference: Sequence[str | os.PathLike[str]] = (),
    stream: BinaryIO | None = None,
    workers: int = 1,
    on_outcome: OutcomeFn | None = None,
    on_progress: TaskProgressFn | None = None,
) -> list[Outcome]:
    """:func:`convert_file` on every task (audio -> ``options.speaker``'s voice, or the voice of
    the ``reference`` recordings, read and averaged once); one :class:`Outcome` each.

    ``options`` as for :func:`decode_files`. Gives the same audio as :func:`encode_files` then
    :func:`decode_files` with the same voice and ``options.seed``.
    """
    return _audio_batch(
        codec, tasks, convert_file, "convert_files", options or DecodeOptions(), reference=reference,
        required=True, stream=stream, workers=workers, on_outcome=on_outcome, on_progress=on_progress,
    )  # fmt: skip


def _audio_batch(
    codec: Codec,
    tasks: Sequence[Task],
    verb: Callable[..., float],
    what: str,
    options: DecodeOptions,
    *,
    reference: Sequence[str | os.PathLike[str]],
    required: bool,
    stream: BinaryIO | None,
    workers: int,
    on_outcome: OutcomeFn | None,
    on_progress: TaskProgressFn | None,
) -> list[Outcome]:
    """Check the batch's voice and decoder once, then ``verb`` (decode_file / convert_file) per task."""
    options = batch_voice(codec, options, reference, required=required)
    codec.check_decoder(options.decoder)
    _check_stream_tasks(tasks, stream, what)

    def work(task: Task) -> tuple[float, Any]:
        progress = _bind(on_progress, task)
        return verb(codec, task.source, _destination(task, stream), options, on_progress=progress), None

    return _run(tasks, work, workers=workers, on_outcome=on_outcome)


def describe_files(targets: Sequence[str]) -> list[Outcome]:
    """:func:`describe_any` on each target; ``Outcome.value`` is a ModelInfo or TokenInfo."""
    tasks = [Task(Path(t), label=t) for t in targets]
    return _run(tasks, lambda task: (0.0, describe_any(task.name)))


def _bind(on_progress: TaskProgressFn | None, task: Task) -> ProgressFn | None:
    if on_progress is None:
        return None
    return lambda done, total: on_progress(task, done, total)
