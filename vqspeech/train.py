"""One training loop, readable top to bottom (single process, or DDP under ``torchrun``).

    lr from a pure function of the step -> batch for this step -> forward (bf16 autocast on
    CUDA; the quantiser stays fp32) -> backward -> clip -> AdamW step -> log -> evaluate and
    checkpoint at intervals -> stop at ``total_steps`` or on SIGINT/SIGTERM.

Exact resumption comes from two choices: the batch of step ``s`` is a pure function of
``(seed, s, rank)`` (see :class:`vqspeech.data.batches.StepBatches`), and the learning rate is
a pure function of ``s``. So a checkpoint needs only the weights (with the quantiser's EMA
and usage buffers), the optimiser state, the step and the torch RNG state (used by dead-code
restarts), and a resumed run computes bit-for-bit the same steps as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor

from vqspeech.audio import save_audio
from vqspeech.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vqspeech.config import Recipe, TrainConfig
from vqspeech.data.batches import StepBatches, validation_batches
from vqspeech.data.corpus import open_corpus
from vqspeech.errors import ConfigError, DataError
from vqspeech.model import VQVAE
from vqspeech.plots import save_spectrograms

LAST = "last.pt"


@dataclass(frozen=True)
class StepMetrics:
    """Scalars logged every ``log_every`` steps (losses in nats, rates per wall second)."""

    step: int
    total_steps: int
    loss: float
    reconstruction_loss: float
    codebook_loss: float
    commitment_loss: float
    perplexity: float
    lr: float
    grad_norm: float
    steps_per_second: float
    samples_per_second: float  # audio samples (not examples) consumed per second, all ranks
    speaker_loss: float | None = None  # speaker encoder vs table, mean square (issue #7); None without one


@dataclass(frozen=True)
class EvalMetrics:
    step: int
    valid_loss: float  # reconstruction cross-entropy on held-out utterances
    valid_perplexity: float
    codes_used: int  # distinct codes over the validation set
    dead_codes: int  # codes unused for dead_code_steps steps (or never used, if restarts are off)


@dataclass(frozen=True)
class TrainResult:
    step: int
    checkpoint: Path
    interrupted: bool
    last: StepMetrics | None
    last_eval: EvalMetrics | None
    model: VQVAE  # this rank's model (unwrapped from DDP), in train mode


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


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Linear warmup to ``config.lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (this rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device("cpu")


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> _Distributed:
    """Join the process group torchrun describes (env RANK/WORLD_SIZE), if any."""
    if dist.is_available() and dist.is_initialized():
        return _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed()
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)


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


def _should_stop(stop: _StopSignal, ddp: _Distributed, device: torch.device) -> bool:
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


@torch.no_grad()
def evaluate(
    model: VQVAE, batches: list[tuple[Tensor, Tensor]], device: torch.device, step: int
) -> EvalMetrics:
    """Teacher-forced reconstruction loss and code usage on held-out utterances."""
    model.eval()
    total, count = 0.0, 0
    usage = torch.zeros(model.config.quantizer.codebook_size)
    for audio, speaker in batches:
        out = model(audio.to(device), speaker.to(device))
        total += float(out.reconstruction_loss) * audio.numel()
        count += audio.numel()
        usage += torch.bincount(out.codes.flatten().cpu(), minlength=usage.numel()).float()
    model.train()
    p = usage / usage.sum().clamp(min=1)
    perplexity = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
    stats = model.quantizer.usage_stats()
    return EvalMetrics(
        step=step,
        valid_loss=total / max(1, count),
        valid_perplexity=perplexity,
        codes_used=int((usage > 0).sum()),
        dead_codes=int(stats.dead),
    )


@torch.no_grad()
def write_samples(model: VQVAE, batch: tuple[Tensor, Tensor], folder: Path, seed: int) -> None:
    """Reconstruct one held-out segment; write original/reconstruction WAVs and a spectrogram PNG."""
    device = next(model.parameters()).device
    audio, speaker = batch[0][:1].to(device), batch[1][:1].to(device)
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    reconstruction = model.decode(model.encode(audio), speaker, generator=generator)
    model.train()
    sample_rate = model.config.sample_rate
    waves = {"original": audio[0].cpu().numpy(), "reconstruction": reconstruction[0].cpu().numpy()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, wave in waves.items():
        save_audio(folder / f"{name}.wav", wave, sample_rate)
    with contextlib.suppress(ImportError):  # matplotlib is the optional [train] extra
        save_spectrograms(folder / "spectrogram.png", waves, sample_rate)


def train(
    recipe: Recipe,
    data: str | Path,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    cache_dir: str | Path | None = None,
) -> TrainResult:
    """Train ``recipe`` on the corpus at ``data``, writing checkpoints and logs into ``out_dir``.

    ``steps`` is the *total* step count (so ``resume=True, steps=2000`` extends a finished
    run); it defaults to ``recipe.train.steps``. With ``resume`` the recipe and speaker table
    come from ``out_dir/last.pt`` and the ``recipe`` argument is ignored.
    """
    callback = callback or SilentCallback()
    out_dir = Path(out_dir)
    ddp = _init_distributed(device)
    dev = resolve_device(device, ddp.local_rank)

    previous: Checkpoint | None = None
    if resume:
        previous = load_checkpoint(out_dir / LAST)
        recipe = previous.recipe
    elif (out_dir / LAST).exists():
        raise ConfigError(
            f"{out_dir} already holds a run ({LAST}); pass --resume to continue it or pick another --out"
        )
    total_steps = steps if steps is not None else recipe.train.steps
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=total_steps))

    corpus = open_corpus(data, cache_dir=cache_dir)
    speakers = corpus.speaker_table()
    if previous is not None and [s["name"] for s in previous.speakers] != [s["name"] for s in speakers]:
        raise DataError(f"{data} has other speakers than the run in {out_dir}; resume with the same data")
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, n_speakers=len(speakers)))

    torch.manual_seed(recipe.train.seed)
    model = VQVAE(recipe.model).to(dev)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay, betas=(0.9, 0.999)
    )
    step = 0
    if previous is not None:
        model.load_state_dict(previous.model_state)
        step = _restore_training_state(previous.training, optimizer)
    net: torch.nn.Module = model
    if ddp.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    batches = StepBatches(corpus, recipe, rank=ddp.rank, world_size=ddp.world_size)
    valid = validation_batches(corpus, recipe, recipe.data.valid_max_segments) if ddp.is_main else []
    logger = _Logger(out_dir, ddp.is_main)
    out_dir.mkdir(parents=True, exist_ok=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    )
    cfg = recipe.train

    def checkpoint() -> Path:
        path = out_dir / LAST
        if ddp.is_main:
            save_checkpoint(path, model, recipe, speakers, _training_state(step, total_steps, optimizer))
        return path

    last: StepMetrics | None = None
    last_eval: EvalMetrics | None = None
    stop = _StopSignal()
    callback.on_start(step, total_steps)
    model.train()
    with stop.installed():
        tick, ticked_at = time.perf_counter(), step
        for batch in batches.iterate(step, total_steps):
            audio, speaker = batch[0], batch[1]
            # reference crops for the speaker encoder (issue #7), when the model has one
            reference = batch[2].to(dev, non_blocking=True) if len(batch) > 2 else None
            lr = lr_at(step, cfg, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                out = net(audio.to(dev, non_blocking=True), speaker.to(dev, non_blocking=True), reference)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1

            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                rate = (step - ticked_at) / max(now - tick, 1e-9)
                tick, ticked_at = now, step
                last = StepMetrics(
                    step=step,
                    total_steps=total_steps,
                    loss=out.loss.item(),
                    reconstruction_loss=out.reconstruction_loss.item(),
                    codebook_loss=out.codebook_loss.item(),
                    commitment_loss=out.commitment_loss.item(),
                    perplexity=out.perplexity.item(),
                    lr=lr,
                    grad_norm=grad_norm.item(),
                    steps_per_second=rate,
                    samples_per_second=rate * audio.numel() * ddp.world_size,
                    speaker_loss=out.speaker_loss.item() if out.speaker_loss is not None else None,
                )
                if not math.isfinite(last.loss):
                    checkpoint()
                    raise ConfigError(
                        f"loss became {last.loss} at step {step}; lower train.lr or raise train.grad_clip"
                    )
                logger.scalars(
                    step,
                    {
                        f"train/{k}": float(v)
                        for k, v in dataclasses.asdict(last).items()
                        if k not in ("step", "total_steps") and v is not None
                    },
                )
                callback.on_step(last)
            if ddp.is_main and valid and (step % cfg.eval_every == 0 or step == total_steps):
                last_eval = evaluate(model, valid, dev, step)
                logger.scalars(
                    step,
                    {f"valid/{k}": float(v) for k, v in dataclasses.asdict(last_eval).items() if k != "step"},
                )
                callback.on_eval(last_eval)
                if cfg.write_samples:
                    write_samples(model, valid[0], out_dir / "samples" / f"step{step:07d}", cfg.seed)
            if step % cfg.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            if _should_stop(stop, ddp, dev):
                break
    path = checkpoint()
    logger.close()
    interrupted = step < total_steps
    if interrupted:
        callback.on_message(f"stopped at step {step}/{total_steps}; continue with --resume")
    if ddp.owns_group:
        dist.destroy_process_group()
    return TrainResult(
        step=step, checkpoint=path, interrupted=interrupted, last=last, last_eval=last_eval, model=model
    )
