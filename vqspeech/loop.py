"""The one training loop, shared by every model this project trains (single process, or DDP).

    lr from a pure function of the step -> the task's batch for this step -> the task's loss
    (bf16 autocast on CUDA) -> backward -> clip -> AdamW step -> log -> evaluate and
    checkpoint at intervals -> stop at ``total_steps`` or on SIGINT/SIGTERM.

What is trained is a :class:`Task`: the speech VQ-VAE (:mod:`vqspeech.train`), the prior
over its codes (:mod:`vqspeech.prior`), and the image and video recipes
(:mod:`vqspeech.vision`) each supply their batches, loss, held-out evaluation and checkpoint
writer; this module owns everything else, so they all log, checkpoint, stop and resume the
same way.

Exact resumption comes from two choices: a task's batch of step ``s`` is a pure function of
``(seed, s, rank)``, and the learning rate is a pure function of ``s``. So a checkpoint needs
only the weights (and any buffers), the optimiser state, the step and the torch RNG state, and
a resumed run computes bit-for-bit the same steps as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqspeech.checkpoint import non_finite_tensors
from vqspeech.config import TrainConfig
from vqspeech.errors import ConfigError
from vqspeech.runfolder import LAST


@dataclass(frozen=True)
class StepMetrics:
    """Scalars logged every ``log_every`` steps (losses in nats, rates per wall second).

    ``items_per_second`` counts what :meth:`Task.items` counts (audio samples for speech,
    tokens for a prior, images, frames), over all ranks; ``terms`` are the named loss terms
    and monitors the task returned (e.g. ``reconstruction_loss``, ``perplexity``).
    """

    step: int
    total_steps: int
    loss: float
    lr: float
    grad_norm: float
    steps_per_second: float
    items_per_second: float
    terms: dict[str, float]


@dataclass(frozen=True)
class EvalMetrics:
    """What :meth:`Task.evaluate` returned at ``step`` (held-out losses, code usage, ...)."""

    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class FitResult:
    step: int
    checkpoint: Path
    interrupted: bool
    last: StepMetrics | None
    last_eval: EvalMetrics | None


class TrainCallback(Protocol):
    """How the loop reports progress; the CLI renders it (the library never imports rich)."""

    def on_start(self, start_step: int, total_steps: int) -> None: ...

    def on_step(self, metrics: StepMetrics) -> None: ...

    def on_eval(self, metrics: EvalMetrics) -> None: ...

    def on_message(self, text: str) -> None: ...


class SilentCallback:
    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_step(self, metrics: StepMetrics) -> None:
        pass

    def on_eval(self, metrics: EvalMetrics) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


class Task(Protocol):
    """One trainable thing: its model, data, loss, held-out evaluation and checkpoint writer."""

    @property
    def model(self) -> nn.Module:
        """The trained module, already on the device (unwrapped); a plain attribute will do."""
        ...

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        """The batch of each step from ``start_step``: a pure function of (seed, step, rank)."""
        ...

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss to backpropagate and named scalar terms to log; ``net`` may be DDP-wrapped."""
        ...

    def items(self, batch: Any) -> int:
        """How many items (audio samples, tokens, images, frames) ``batch`` holds on this rank."""
        ...

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out metrics (``{}`` for none); may also write samples. Main rank only."""
        ...

    def save(self, path: Path, training: dict[str, Any]) -> None:
        """Write a checkpoint holding ``training`` (optimiser, RNG, step). Main rank only."""
        ...


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume_note(given: dict[str, Any], saved: dict[str, Any], checkpoint: Path) -> str | None:
    """What a resumed run does not take from the recipe it was given, or None if nothing.

    A resumed run takes every setting from its checkpoint (``given`` and ``saved`` are the
    two recipes as dicts; ``steps`` fields, which ``--steps`` sets, are not compared), so
    ``--set`` values given with ``--resume`` would otherwise be ignored silently.
    """
    old, new = _flatten(saved), _flatten(given)
    changed = [
        key
        for key in sorted(set(old) | set(new))
        if key.rsplit(".", 1)[-1] not in ("steps", "n_speakers") and old.get(key) != new.get(key)
    ]
    if not changed:
        return None
    shown = ", ".join(f"{k}={new.get(k)!r} (run: {old.get(k)!r})" for k in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    return (
        f"--resume continues with every setting saved in {checkpoint} (model, data, train; only "
        f"--steps changes the total); not used from the recipe given: {shown}{more}"
    )


def corpus_report(warnings: Sequence[str], kept: int, shown: int = 10) -> list[str]:
    """Lines that tell what the corpus left out and why: a count, then the first ``shown``."""
    if not warnings:
        return []
    lines = [f"corpus: {len(warnings)} file(s) left out, {kept} utterance(s) kept:"]
    lines += [f"  {w}" for w in warnings[:shown]]
    if len(warnings) > shown:
        lines.append(f"  ... and {len(warnings) - shown} more")
    return lines


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warmup to ``config.lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_name: str) -> Distributed:
    """Join the process group torchrun describes (env RANK/WORLD_SIZE), if any."""
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can save first."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopSignal]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class _Logger:
    """CSV (always) and TensorBoard (when installed) scalars, main rank only."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.csv_path = out_dir / "metrics.csv"
        self.tb: Any = None
        if enabled:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", "name", "value"])
            for name, value in values.items():
                writer.writerow([step, name, f"{value:.6g}"])
        if self.tb is not None:
            for name, value in values.items():
                self.tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _should_stop(stop: _StopSignal, ddp: Distributed, device: torch.device) -> bool:
    """True once any rank got SIGINT/SIGTERM: ranks agree, so none waits in an all-reduce forever."""
    if ddp.world_size == 1:
        return stop.received is not None
    flag = torch.tensor([0.0 if stop.received is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _training_state(step: int, total_steps: int, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state: dict[str, Any] = {
        "step": step,
        "total_steps": total_steps,
        "optimizer": optimizer.state_dict(),
        "rng_torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_training_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> int:
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_torch"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["step"])


def _kept(path: Path, saved_at: int | None) -> str:
    """What is left of the run after a divergence, for the error message."""
    if saved_at is not None:
        return f"{path} keeps the weights of step {saved_at}"
    if path.exists():
        return f"{path} keeps the weights it was resumed from"
    return "no checkpoint was written"


def _finite(value: Tensor | float) -> float:
    return float(value.item() if isinstance(value, Tensor) else value)


class Resumable(Protocol):
    """A loaded checkpoint of a run: what :func:`fit` resumes from (see :func:`training_of`)."""

    @property
    def training(self) -> dict[str, Any]: ...


def training_of(previous: Resumable | None) -> dict[str, Any] | None:
    """``fit``'s ``training``: the optimiser, RNG and step of the checkpoint resumed, None for a new run."""
    return previous.training if previous is not None else None


def fit(
    task: Task,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    total_steps: int | None = None,
    training: dict[str, Any] | None = None,
    device: torch.device | None = None,
    callback: TrainCallback | None = None,
    distributed: Distributed | None = None,
) -> FitResult:
    """Train ``task`` to ``total_steps`` (default ``config.steps``), writing ``out_dir/last.pt`` and
    ``out_dir/metrics.csv``.

    ``training`` is the ``training`` dict of a previous checkpoint of this run: the optimiser,
    RNG and step are restored from it (the task has already loaded the weights). Rank 0
    evaluates, logs and saves; under DDP every rank runs the same steps.
    """
    total_steps = config.steps if total_steps is None else total_steps
    callback = callback or SilentCallback()
    ddp = distributed or Distributed()
    dev = device or torch.device("cpu")
    out_dir = Path(out_dir)
    model = task.model
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999)
    )
    step = _restore_training_state(training, optimizer) if training else 0
    net: nn.Module = model
    if ddp.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    logger = _Logger(out_dir, ddp.is_main)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    )

    saved_at: int | None = None

    def checkpoint() -> Path:
        nonlocal saved_at
        path = out_dir / LAST
        if ddp.is_main and saved_at != step:
            bad = non_finite_tensors(model.state_dict())
            if bad:  # never over a good checkpoint: --resume and decoding would inherit the NaNs
                raise ConfigError(
                    f"the weights became non-finite by step {step} ({len(bad)} tensors, e.g. {bad[0]}); "
                    f"lower train.lr or train.grad_clip ({_kept(path, saved_at)})"
                )
            task.save(path, _training_state(step, total_steps, optimizer))
        saved_at = step
        return path

    last: StepMetrics | None = None
    last_eval: EvalMetrics | None = None
    stop = _StopSignal()
    callback.on_start(step, total_steps)
    model.train()
    with stop.installed():
        tick, ticked_at = time.perf_counter(), step
        for batch in task.batches(step, total_steps):
            lr = lr_at(step, config, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                loss, terms = task.loss(net, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1

            if step % config.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                rate = (step - ticked_at) / max(now - tick, 1e-9)
                tick, ticked_at = now, step
                last = StepMetrics(
                    step=step,
                    total_steps=total_steps,
                    loss=_finite(loss),
                    lr=lr,
                    grad_norm=_finite(grad_norm),
                    steps_per_second=rate,
                    items_per_second=rate * task.items(batch) * ddp.world_size,
                    terms={name: _finite(value) for name, value in terms.items()},
                )
                if not math.isfinite(last.loss):
                    # no checkpoint: the step that made this loss may have made the weights NaN
                    raise ConfigError(
                        f"loss became {last.loss} at step {step}; lower train.lr or train.grad_clip "
                        f"({_kept(out_dir / LAST, saved_at)})"
                    )
                logged = {
                    "loss": last.loss,
                    "lr": lr,
                    "grad_norm": last.grad_norm,
                    "steps_per_second": rate,
                    "items_per_second": last.items_per_second,
                    **last.terms,
                }
                logger.scalars(step, {f"train/{k}": v for k, v in logged.items()})
                callback.on_step(last)
            if ddp.is_main and (step % config.eval_every == 0 or step == total_steps):
                values = task.evaluate(step)
                model.train()
                if values:
                    last_eval = EvalMetrics(step, values)
                    logger.scalars(step, {f"valid/{k}": float(v) for k, v in values.items()})
                    callback.on_eval(last_eval)
            if step % config.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            if _should_stop(stop, ddp, dev):
                break
    path = checkpoint()
    logger.close()
    interrupted = step < total_steps
    if interrupted:
        callback.on_message(f"stopped at step {step}/{total_steps}; continue with --resume")
    return FitResult(step=step, checkpoint=path, interrupted=interrupted, last=last, last_eval=last_eval)
