"""Corpus-scale encoding: torchrun shards, resumable runs, a manifest, padded batches (issue 19).

:func:`encode_corpus` runs :func:`vqspeech.batch.encode_files` (or, with ``batch_size > 1``,
:mod:`vqspeech.batch_encode`'s exact padded batches) on this process's share of the tasks:

* **Shards.** Under torchrun (``WORLD_SIZE`` > 1) every rank expands the same inputs, reads
  their durations from the audio headers and keeps the shard :func:`~vqspeech.shard.shard_by_duration`
  gives it (balanced by seconds of audio, not by count). Ranks share no data: each writes its
  own outputs. The process group (:func:`torchrun_group`, joined with the training loop's
  :func:`~vqspeech.loop.init_distributed`) only serves the final barriers and the manifest merge.
* **Resume.** With ``resume``, an input whose output already exists and is valid is skipped
  (status ``skipped``): a token file must load with its CRC and come from this model (and, with
  a prior, decode with it); ``.npy`` / ``.txt`` must parse. Anything else there (a partial or
  corrupt file, another model's tokens) is encoded again and replaced.
* **Manifest.** One :class:`~vqspeech.manifest.ManifestEntry` per input; under torchrun each
  rank writes its part, and rank 0 merges them after a barrier (see :mod:`vqspeech.manifest`).

:func:`run_corpus` is the whole job as ``vqspeech encode`` runs it: join torchrun, load the
model on this rank's device, fill in the defaults that depend on them (batch size, manifest),
then :func:`encode_corpus`. Without torchrun, resume, manifest or batches, the CLI calls
:func:`encode_files` as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import torch.distributed as dist

from vqspeech.audio import load_audio
from vqspeech.batch import TOKEN_FORMATS, Outcome, OutcomeFn, Task, encode_files
from vqspeech.batch_encode import default_batch_size, encode_batches
from vqspeech.codec import Codec
from vqspeech.errors import ConfigError, VQSpeechError
from vqspeech.files import refuse_existing
from vqspeech.inference import write_token_output
from vqspeech.loop import Distributed, init_distributed
from vqspeech.manifest import ManifestEntry, merge_rank_manifests, rank_manifest_path, write_manifest
from vqspeech.prior_checkpoint import PriorCheckpoint, load_prior, unpack_tokens
from vqspeech.shard import audio_durations, shard_by_duration
from vqspeech.tokens import SPEAKER_VECTOR_KEY, CodedTokens, load_container, parse_txt, read_npy

#: How long a rank waits at the final barrier for the slowest one (encoding hours of audio).
BARRIER_TIMEOUT = timedelta(days=2)


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` from the environment torchrun sets (1 when not under torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Group:
    """This process's place in a torchrun job and the barrier the ranks meet at (world 1: none)."""

    ddp: Distributed = field(default_factory=Distributed)
    barrier_group: Any = None

    @property
    def rank(self) -> int:
        return self.ddp.rank

    @property
    def world_size(self) -> int:
        return self.ddp.world_size

    @property
    def local_rank(self) -> int:
        return self.ddp.local_rank

    def barrier(self) -> None:
        """Wait for every rank (a no-op alone)."""
        if self.world_size > 1:
            dist.barrier(group=self.barrier_group)


@contextlib.contextmanager
def torchrun_group(device: str) -> Iterator[Group]:
    """Join the torchrun job the environment describes (gloo on CPU, nccl on CUDA, as training
    does), if any; the barriers go over a gloo group with a long timeout, so a rank that finishes
    hours before the slowest one waits instead of timing out (and NCCL's watchdog is not involved)."""
    ddp = init_distributed(device)
    try:
        group = None
        if ddp.world_size > 1:
            group = dist.new_group(backend="gloo", timeout=BARRIER_TIMEOUT)
        yield Group(ddp, group)
    finally:
        ddp.close()


@dataclass(frozen=True)
class CorpusJob:
    """How :func:`encode_corpus` encodes: output ``fmt`` (vqt/npy/txt), ``overwrite`` (redo every
    output), ``resume`` (skip valid outputs, redo the rest), header ``speaker``, ``prior``,
    ``workers`` threads for per-file encoding, ``batch_size`` files per padded batch (1: per
    file), ``precision`` of batched encoding (fp32; bf16 is not exact), and the ``manifest``
    path (None: none)."""

    fmt: str = "vqt"
    overwrite: bool = False
    resume: bool = False
    speaker: str | None = None
    prior: PriorCheckpoint | None = None
    workers: int = 1
    batch_size: int = 1
    precision: str = "fp32"
    manifest: Path | None = None

    def __post_init__(self) -> None:
        if self.fmt not in TOKEN_FORMATS or self.fmt == "jsonl":
            raise ConfigError(
                f"corpus encoding writes one file per input (vqt, npy or txt), not {self.fmt}; "
                "give -o DIR and --format vqt, npy or txt"
            )
        if self.overwrite and self.resume:
            raise ConfigError("give --resume (keep valid outputs) or --overwrite (redo them all), not both")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")


def torchrun_place() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment torchrun sets ((0, 1, 0) without it),
    for work that needs no process group (decode: each rank its share, no manifest)."""
    try:
        return (
            int(os.environ.get("RANK", "0")),
            torchrun_world_size(),
            int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        return 0, 1, 0


def token_duration(path: str | os.PathLike[str]) -> float:
    """Seconds of audio a token file stands for (its header); 0.0 when it cannot be read."""
    try:
        h = load_container(path).header
    except (VQSpeechError, OSError):
        return 0.0
    return h.num_samples / h.sample_rate


def my_tasks(
    tasks: Sequence[Task], rank: int, world_size: int, durations: Sequence[float] | None = None
) -> list[Task]:
    """This rank's share of ``tasks`` (all of them alone), balanced by ``durations`` (default:
    the audio headers' durations of the sources)."""
    if world_size <= 1:
        return list(tasks)
    if durations is None:
        durations = audio_durations([t.source for t in tasks])
    shards = shard_by_duration([str(t.source) for t in tasks], durations, world_size)
    return [tasks[i] for i in shards[rank]]


def read_output(codec: Codec, task: Task, job: CorpusJob) -> ManifestEntry:
    """The entry of ``task``'s existing output; VQSpeechError when it is not a valid one.

    A token file: loads (header, payload and CRC checked), was made by ``codec``'s model, and is
    entropy-coded exactly when ``job.prior`` is given (then it must decode with it).
    """
    assert task.target is not None, "corpus tasks have target files"
    target = task.target
    seconds = 0.0
    vector = False
    if job.fmt == "vqt":
        container = load_container(target)
        h = container.header
        if h.model_fingerprint != codec.fingerprint:
            raise ConfigError(f"{target}: made by model {h.model_fingerprint}, not this one")
        coded = isinstance(container, CodedTokens)
        if coded != (job.prior is not None):
            raise ConfigError(f"{target}: {'entropy-coded' if coded else 'packed'}, not as asked")
        if job.prior is not None:
            unpack_tokens(container, job.prior, str(target))  # checks the codes' CRC
        frames, seconds = h.n_frames, h.num_samples / h.sample_rate
        vector = SPEAKER_VECTOR_KEY in h.extra
    elif job.fmt == "npy":
        with open(target, "rb") as handle:
            frames = int(read_npy(handle).shape[1])
    else:
        frames = int(parse_txt(Path(target).read_text(encoding="utf-8")).shape[1])
    if frames < 1:
        raise ConfigError(f"{target}: holds no codes")
    return ManifestEntry(str(task.source), str(target), seconds, frames, vector, "ok")


def _existing(codec: Codec, task: Task, job: CorpusJob) -> ManifestEntry | None:
    """With ``resume``: the entry of a valid existing output (to skip), else None (encode it)."""
    if not job.resume or task.target is None or not task.target.is_file():
        return None
    try:
        entry = read_output(codec, task, job)
    except (VQSpeechError, OSError, UnicodeDecodeError):
        return None
    return dataclasses.replace(entry, status="skipped")


def _entry(codec: Codec, outcome: Outcome, job: CorpusJob) -> ManifestEntry:
    """The manifest entry of a finished task (its output read back, which checks it too)."""
    task = outcome.task
    target = None if task.target is None else str(task.target)
    if not outcome.ok:
        return ManifestEntry(str(task.source), target, outcome.seconds, 0, False, "error", outcome.error)
    try:
        entry = read_output(codec, task, job)
    except (VQSpeechError, OSError, UnicodeDecodeError) as exc:
        return ManifestEntry(str(task.source), target, outcome.seconds, 0, False, "error", str(exc))
    return dataclasses.replace(entry, duration=outcome.seconds)


def encode_corpus(
    codec: Codec,
    tasks: Sequence[Task],
    job: CorpusJob,
    *,
    group: Group | None = None,
    on_outcome: OutcomeFn | None = None,
) -> list[ManifestEntry]:
    """Encode this rank's share of ``tasks`` (see the module docstring); its manifest entries.

    Every rank must call it with the same tasks. Each task needs a target file. With
    ``job.manifest``, the whole job's manifest is written there (by rank 0 under torchrun, after
    every rank has finished); ``on_outcome`` sees each of this rank's inputs once (skipped ones
    as successes).
    """
    group = group or Group()
    if any(t.target is None for t in tasks):
        raise ConfigError("corpus encoding writes one file per input; give -o DIR, not -o -")
    if job.prior is not None:
        job.prior.check_model(codec.fingerprint)
    if job.speaker is not None:
        codec.speaker_id(job.speaker)
    entries: list[ManifestEntry] = []

    def report(outcome: Outcome, entry: ManifestEntry) -> None:
        entries.append(entry)
        if on_outcome is not None:
            on_outcome(outcome)

    clashes = _clashes(tasks)
    todo: list[Task] = []
    for task in my_tasks(tasks, group.rank, group.world_size):
        skipped = _existing(codec, task, job)
        if task in clashes:
            report(Outcome(task, error=clashes[task]), _entry(codec, Outcome(task, error=clashes[task]), job))
        elif skipped is None:
            todo.append(task)
        else:
            report(Outcome(task, seconds=skipped.duration), skipped)
    if job.batch_size > 1:
        _encode_batched(codec, todo, job, lambda o: report(o, _entry(codec, o, job)))
    else:
        encode_files(
            codec, todo, fmt=job.fmt, overwrite=job.overwrite or job.resume, speaker=job.speaker,
            workers=job.workers, on_outcome=lambda o: report(o, _entry(codec, o, job)), prior=job.prior,
        )  # fmt: skip
    _write_manifest(entries, job.manifest, group)
    return entries


class CorpusShare(NamedTuple):
    """This process's part of a corpus job: ``rank`` of ``world_size`` (0 of 1 alone) and
    ``n_tasks``, how many of the inputs it encodes (all of them alone)."""

    rank: int
    world_size: int
    n_tasks: int


class CorpusRun(NamedTuple):
    """What :func:`run_corpus` did in this process: its ``share``, the manifest ``entries`` of its
    inputs (in the order they finished), and the ``manifest`` file of the whole job (None: none)."""

    share: CorpusShare
    entries: list[ManifestEntry]
    manifest: Path | None


def run_corpus(
    model: str | os.PathLike[str] | Codec,
    tasks: Sequence[Task],
    *,
    fmt: str = "vqt",
    overwrite: bool = False,
    resume: bool = False,
    speaker: str | None = None,
    prior: str | os.PathLike[str] | None = None,
    workers: int = 1,
    batch_size: int | None = None,
    manifest: Path | None = None,
    out_dir: Path | None = None,
    device: str = "auto",
    on_start: Callable[[CorpusShare], None] | None = None,
    on_outcome: OutcomeFn | None = None,
) -> CorpusRun:
    """Encode a corpus as ``vqspeech encode`` does under torchrun or with --resume, --manifest or
    --batch-size: every rank calls it with the same ``tasks`` (each with a target file).

    Joins the torchrun job the environment describes, if any (:func:`torchrun_group`), loads
    ``model`` (a checkpoint path) on this rank's device (``device``: auto/cpu/cuda; a
    :class:`Codec` is used as it is), reads the ``prior`` checkpoint if given, and runs
    :func:`encode_corpus` on this rank's share with a :class:`CorpusJob` of these settings
    (``fmt`` vqt/npy/txt, ``overwrite``, ``resume``, header ``speaker``, ``workers`` threads).
    ``batch_size`` None: :func:`~vqspeech.batch_encode.default_batch_size` of the model's device
    (16 files per padded batch on a GPU, 1 on a CPU). ``manifest`` None: none alone; under
    torchrun ``out_dir``/manifest.jsonl when the targets lie under ``out_dir`` (the ``-o``
    folder), so the ranks' parts are merged somewhere.

    ``on_start`` is called once, before any input is encoded, with this process's
    :class:`CorpusShare` (to size a progress display); ``on_outcome`` sees each of this rank's
    inputs once. Library errors (a bad model or prior, an unknown speaker) raise
    :class:`~vqspeech.errors.VQSpeechError`; failing inputs do not, they are outcomes.
    """
    with torchrun_group(device) as group:
        codec = model if isinstance(model, Codec) else Codec.load(model, device, group.local_rank)
        if group.world_size > 1 and manifest is None:
            manifest = _default_manifest(out_dir, tasks)
        job = CorpusJob(
            fmt=fmt,
            overwrite=overwrite,
            resume=resume,
            speaker=speaker,
            prior=load_prior(prior) if prior is not None else None,
            workers=workers,
            batch_size=batch_size or default_batch_size(codec.device),
            manifest=manifest,
        )
        share = CorpusShare(group.rank, group.world_size, len(my_tasks(tasks, group.rank, group.world_size)))
        if on_start is not None:
            on_start(share)
        entries = encode_corpus(codec, tasks, job, group=group, on_outcome=on_outcome)
    return CorpusRun(share, entries, manifest)


def _default_manifest(out_dir: Path | None, tasks: Sequence[Task]) -> Path | None:
    """``out_dir``/manifest.jsonl when some target lies under ``out_dir``, else None."""
    if out_dir is None:
        return None
    if any(t.target is not None and out_dir in t.target.parents for t in tasks):
        return out_dir / "manifest.jsonl"
    return None


def _clashes(tasks: Sequence[Task]) -> dict[Task, str]:
    """Tasks whose target repeats an earlier task's (over all ranks' tasks), with the message."""
    owners: dict[str, Task] = {}
    clashes: dict[Task, str] = {}
    for task in tasks:
        key = os.path.abspath(str(task.target))
        if key in owners:
            clashes[task] = (
                f"output {task.target} is also the output of {owners[key].name}; rename one, or give folders"
            )
        else:
            owners[key] = task
    return clashes


def _write_manifest(entries: list[ManifestEntry], manifest: Path | None, group: Group) -> None:
    """Alone: write ``manifest``. Under torchrun: write this rank's part, meet at a barrier, rank 0
    merges, and a second barrier keeps every rank alive until the merge is done (torchrun tears
    the job down as soon as one rank exits non-zero, e.g. because an input failed)."""
    if group.world_size <= 1:
        if manifest is not None:
            write_manifest(manifest, entries)
        return
    if manifest is not None:
        write_manifest(rank_manifest_path(manifest, group.rank), entries)
    group.barrier()
    try:
        if manifest is not None and group.rank == 0:
            merge_rank_manifests(manifest, group.world_size)
    finally:
        group.barrier()


def _encode_batched(
    codec: Codec, tasks: Sequence[Task], job: CorpusJob, done: Callable[[Outcome], None]
) -> None:
    """Padded batches of ``job.batch_size`` files of similar duration (header durations), each
    file's codes equal to per-file encoding; a failing file fails alone."""
    durations = audio_durations([t.source for t in tasks])
    order = sorted(range(len(tasks)), key=lambda i: (durations[i], str(tasks[i].source)))
    for start in range(0, len(order), job.batch_size):
        group = [tasks[i] for i in order[start : start + job.batch_size]]
        loaded: list[tuple[Task, Any]] = []
        for task in group:
            try:
                assert task.target is not None
                refuse_existing(task.target, job.overwrite or job.resume)
                loaded.append((task, load_audio(task.source, codec.sample_rate)))
            except VQSpeechError as exc:
                done(Outcome(task, error=_one_line(exc, task)))
        audios = [audio for _, audio in loaded]
        all_codes = encode_batches(codec, audios, job.batch_size, precision=job.precision)
        for (task, audio), codes in zip(loaded, all_codes, strict=True):
            try:
                vector = codec.speaker_vector([audio]) if codec.has_speaker_encoder else None
                speaker = job.speaker if job.speaker is not None else codec.infer_speaker(task.source)
                tokens = codec.tokens(codes, int(audio.shape[0]), speaker, vector)
                coded = job.prior.encode(tokens) if job.prior is not None else tokens
                assert task.target is not None
                write_token_output(coded, task.target, job.fmt, overwrite=True)
            except VQSpeechError as exc:
                done(Outcome(task, error=_one_line(exc, task)))
                continue
            done(Outcome(task, seconds=audio.shape[0] / codec.sample_rate))


def _one_line(exc: VQSpeechError, task: Task) -> str:
    text = " ".join(str(exc).split())
    prefix = f"{task.source}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
