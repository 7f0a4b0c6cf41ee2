"""One prepared benchmark for a lent GPU: training throughput of three decoder families and cached
WaveNet generation speed, in one run of a few minutes (issue 16). Also runs on CPU at tiny sizes.

Sections, each timed between ``torch.cuda.synchronize()`` marks with its warm-up steps left out:

* ``paper``: training steps of the ``paper`` recipe (the VQ-VAE with the paper's WaveNet decoder);
* ``spectrogram``: the same for the ``demo`` recipe (spectrogram family);
* ``vocos``: the same for the ``demo`` recipe with ``--set 'model.decoders=[vocos]'``;
* ``generation``: cached WaveNet generation (:meth:`vqspeech.nn.wavenet.WaveNet.generate`, the
  paper's decoder, random weights and latents) at batch 1 and 32, through the helpers of
  ``benchmarks/bench_generation.py``.

A training step is the project's own loop, :func:`vqspeech.loop.fit` (bf16 autocast on CUDA,
AdamW, clipping, logging every ``train.log_every`` steps), over the loss of ``vqspeech train``
(:func:`vqspeech.speech_loss.speech_loss`), fed from a pool of synthetic batches made once on
the device: harmonic tones plus noise, one crop of ``data.segment_seconds`` per item, random
speaker ids. Training figures: steps/s, audio samples/s (batch x crop samples per step) and
x real time (samples/s / sample_rate), peak GPU memory. Generation figures: samples/s summed
over the batch and x real time (the same, over sample_rate), peak GPU memory.

``--budget-s`` bounds the whole run: each section gets a share of what is left, a training
section stops its timed steps early when its share is spent (``stopped_early`` says so, and
``steps`` how many were timed), and generation shortens its audio to fit. A section whose
Python package is missing is skipped with a message; one that fails (out of memory, say) is
reported and the others still run (exit status 1). Progress goes to stderr; a table, then one
JSON line with every figure, the torch version and the device name go to stdout (and ``--out``).

On the device (run from the repository root; the project is copied there, not installed)::

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/bench_gpu.py --out $OUT/gpu.json

(give the call ``timeout_s`` 480: the default ``--budget-s`` is 300 s, warm-up steps included, and
imports and CUDA's start come on top; the machine's own start is not counted in ``timeout_s``.) What it
needs there: torch, numpy and pyyaml, all in the H200 image (numba is there too, unused on a
GPU), for every section: neither ``cli/`` nor soundfile, soxr, constriction or librosa, which
the image lacks (the spectrogram and Vocos sections' Slaney mel filters are written out in
:func:`vqspeech.features.mel_basis`; they once needed librosa's, carried over as wheels).
``tests/test_bench_gpu.py`` runs it with those packages made unimportable.

On CPU, ``--tiny`` (tiny models, 1 warm-up + 3 timed steps, 32 ms of generated audio) runs
every section in seconds; ``tests/test_bench_gpu.py`` runs it::

    .venv/bin/python benchmarks/bench_gpu.py --tiny [--device cpu] [--sections paper,generation]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_generation import build, synchronize, time_cached
from torch import Tensor, nn

from vqspeech.config import Recipe, load_recipe, segment_length
from vqspeech.device import resolve_device
from vqspeech.errors import VQSpeechError
from vqspeech.files import write_text_atomic
from vqspeech.loop import fit
from vqspeech.model import VQVAE
from vqspeech.nn.wavenet import Backend
from vqspeech.speech_loss import speech_loss

TINY_ENCODER = ["model.encoder.channels=16", "model.quantizer.codebook_size=32"]
TINY_WAVENET = [
    "model.decoder.residual_channels=8",
    "model.decoder.gate_channels=16",
    "model.decoder.skip_channels=16",
    "model.decoder.layers_per_cycle=3",
    "model.decoder.dilation_cycles=1",
    "model.decoder.cond_channels=8",
]
#: Training sections: name -> (recipe, overrides that make it, overrides that make it tiny).
TRAINING: dict[str, tuple[str, list[str], list[str]]] = {
    "paper": ("paper", [], [*TINY_ENCODER, *TINY_WAVENET]),
    "spectrogram": ("demo", [], [*TINY_ENCODER, "model.spectrogram.channels=16"]),
    "vocos": (
        "demo",
        ["model.decoders=[vocos]"],
        [*TINY_ENCODER, "model.families.vocos.channels=16", "model.families.vocos.blocks=1"],
    ),
}
SECTIONS = (*TRAINING, "generation")
#: Shares of the time left that each section may spend (the WaveNet's are the slow ones).
WEIGHTS = {"paper": 3.0, "spectrogram": 1.0, "vocos": 1.0, "generation": 3.0}
#: Batches in the synthetic pool, cycled through: enough that steps do not see one batch only.
POOL = 4

FULL = {
    "steps": 200,
    "warmup": 20,
    "paper_batch": 32,
    "demo_batch": 64,
    "gen_seconds": 1.0,
    "budget_s": 300.0,
}
TINY = {"steps": 3, "warmup": 1, "paper_batch": 2, "demo_batch": 2, "gen_seconds": 0.032, "budget_s": 120.0}
TINY_SEGMENT_SECONDS = 0.128  # 2048 samples: 32 latents, and longer than the vocos loss's 1024-point STFT


def log(message: str) -> None:
    print(f"bench_gpu: {message}", file=sys.stderr, flush=True)


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done."""
    synchronize(device)
    return time.perf_counter()


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak memory allocated by torch on ``device`` since the last reset, GiB (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def synthetic_batches(
    recipe: Recipe, batch_size: int, device: torch.device, count: int = POOL, seed: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """``count`` training batches ``(audio float32 [B, T], speaker_id int64 [B])`` on ``device``.

    Each item is a harmonic tone (f0 80-300 Hz, its first 24 harmonics below 4 kHz at 1/k
    amplitude, random phases, a slow tremolo) plus white noise 40 dB down, peak 0.5: speech-like levels and
    spectra, so the quantiser and the losses work as on speech. ``T`` is the recipe's crop length.
    """
    sr, model = recipe.model.sample_rate, recipe.model
    length = segment_length(recipe.data.segment_seconds, sr, model.hop_length)
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / sr
    k = torch.arange(1, 25, dtype=torch.float64)
    batches = []
    for _ in range(count):
        f0 = 80.0 + 220.0 * torch.rand(batch_size, 1, 1, generator=g, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(batch_size, k.numel(), 1, generator=g, dtype=torch.float64)
        amplitude = torch.where(f0 * k[:, None] < 4000.0, 1.0 / k[:, None], 0.0)  # [B, K, 1]
        tone = (amplitude * torch.sin(2 * math.pi * f0 * k[:, None] * t + phase)).sum(1)  # [B, T]
        tone *= 0.6 + 0.4 * torch.sin(2 * math.pi * 3.0 * t + phase[:, 0])
        tone /= tone.abs().amax(1, keepdim=True).clamp(min=1e-9)
        audio = 0.5 * tone + 0.005 * torch.randn(batch_size, length, generator=g, dtype=torch.float64)
        speaker = torch.randint(0, model.n_speakers, (batch_size,), generator=g)
        batches.append((audio.float().to(device), speaker.to(device)))
    return batches


@dataclass(eq=False)
class TimedTask:
    """A :class:`vqspeech.loop.Task` over a pool of synthetic batches that times its own steps.

    :meth:`batches` yields ``warmup + steps`` batches. The clock starts (synchronised) when the
    batch of step ``warmup`` is asked for, i.e. once every warm-up step is done, and stops when
    the loop asks for the batch after the last timed one; no timed step starts after
    ``deadline`` (``time.perf_counter()``), so a slow machine stops early. ``fit`` is asked for
    one step more than this yields, so the evaluation and checkpoint of its last step never
    happen inside the timed span (it ends "interrupted", and its final save is a no-op here).
    """

    model: VQVAE
    pool: list[tuple[Tensor, Tensor]]
    device: torch.device
    warmup: int
    steps: int
    deadline: float
    started: float = 0.0
    finished: float = 0.0
    timed_steps: int = 0

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        for step in range(start_step, min(total_steps, self.warmup + self.steps)):
            if step == self.warmup:
                self.started = clock(self.device)
            elif step > self.warmup and time.perf_counter() > self.deadline:
                break
            yield self.pool[step % len(self.pool)]
            if step >= self.warmup:  # resumed by the loop: this step is done
                self.timed_steps += 1
        self.finished = clock(self.device)

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        return speech_loss(net, batch, self.device)

    def items(self, batch: Any) -> int:
        return int(batch[0].numel())  # audio samples

    def evaluate(self, step: int) -> dict[str, float]:
        return {}

    def save(self, path: Path, training: dict[str, Any]) -> None:
        pass  # nothing to keep: the weights of a throughput run are noise


def section_recipe(name: str, batch_size: int, tiny: bool, log_every: int | None = None) -> Recipe:
    base, overrides, tiny_overrides = TRAINING[name]
    never = 10**9  # evaluation and checkpoints: not part of the step being measured
    train = [f"train.batch_size={batch_size}", f"train.eval_every={never}", f"train.checkpoint_every={never}"]
    if log_every is not None:
        train.append(f"train.log_every={log_every}")
    sizes = [*tiny_overrides, f"data.segment_seconds={TINY_SEGMENT_SECONDS}"] if tiny else []
    return load_recipe(base, [*overrides, *sizes, *train])


def run_training(
    name: str, recipe: Recipe, device: torch.device, warmup: int, steps: int, seconds: float
) -> dict[str, Any]:
    """Time ``steps`` training steps of ``recipe`` after ``warmup`` ones, within ``seconds``."""
    reset_memory(device)
    torch.manual_seed(recipe.train.seed)
    model = VQVAE(recipe.model).to(device)
    pool = synthetic_batches(recipe, recipe.train.batch_size, device)
    length = pool[0][0].shape[1]
    deadline = time.perf_counter() + seconds
    task = TimedTask(model, pool, device, warmup, steps, deadline)
    with tempfile.TemporaryDirectory() as out_dir:  # fit's metrics.csv (and TensorBoard, if there)
        result = fit(task, out_dir, recipe.train, total_steps=warmup + steps + 1, device=device)
    if task.timed_steps < 1:
        raise RuntimeError(f"no step was timed (budget {seconds:.0f} s spent in {warmup} warm-up steps)")
    wall = task.finished - task.started
    samples_per_step = recipe.train.batch_size * length
    row = {
        "recipe": recipe.name,
        "decoders": list(recipe.model.decoders),
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": recipe.train.batch_size,
        "segment_samples": length,
        "warmup_steps": warmup,
        "steps": task.timed_steps,
        "stopped_early": task.timed_steps < steps,
        "wall_s": wall,
        "steps_per_s": task.timed_steps / wall,
        "samples_per_s": task.timed_steps * samples_per_step / wall,
        "x_real_time": task.timed_steps * samples_per_step / wall / recipe.model.sample_rate,
        "peak_memory_gib": peak_memory_gib(device),
        "loss": result.last.loss if result.last is not None else None,
    }
    del model, task, pool
    return row


def run_generation(
    recipe: Recipe, batch: int, device: torch.device, seconds: float, budget: float, backend: Backend
) -> dict[str, Any]:
    """Cached generation of the recipe's WaveNet at ``batch``: up to ``seconds`` of audio per
    utterance, fewer when a short probe says that would take longer than ``budget`` seconds."""
    reset_memory(device)
    net = build(recipe.model).to(device)
    sr, hop = recipe.model.sample_rate, recipe.model.hop_length
    probe_seconds = min(seconds, 0.05)
    probe_wall = time_cached(net, batch, probe_seconds, sr, backend, 1)
    probe_samples = max(1, math.ceil(probe_seconds * sr / hop)) * hop
    fitting = 0.8 * budget * probe_samples / probe_wall / sr  # seconds per utterance that fit
    chosen = max(probe_seconds, min(seconds, fitting))
    samples = max(1, math.ceil(chosen * sr / hop)) * hop
    wall = time_cached(net, batch, chosen, sr, backend, 1)
    rate = batch * samples / wall
    return {
        "recipe": recipe.name,
        "batch": batch,
        "backend": backend,
        "samples_per_utterance": samples,
        "shortened": chosen < seconds,
        "wall_s": wall,
        "samples_per_s": rate,
        "x_real_time": rate / sr,
        "peak_memory_gib": peak_memory_gib(device),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes (CPU smoke run)")
    parser.add_argument("--steps", type=int, help="timed training steps per section (200; tiny 3)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps before them (20; tiny 1)")
    parser.add_argument("--paper-batch", type=int, help="batch size of the paper section (32; tiny 2)")
    parser.add_argument("--demo-batch", type=int, help="batch of spectrogram and vocos (64; tiny 2)")
    parser.add_argument(
        "--gen-batch", type=int, action="append", help="generation batch sizes (repeatable; 1 and 32)"
    )
    parser.add_argument("--gen-seconds", type=float, help="audio per utterance generated (1.0; tiny 0.032)")
    parser.add_argument(
        "--gen-backend", choices=("auto", "torch", "numba"), help="auto (torch on GPU); tiny: torch"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of SECTIONS")
    parser.add_argument("--budget-s", type=float, help="wall-clock bound of all sections (300 s; tiny 120)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.gen_batch = args.gen_batch or [1, 32]
    args.gen_backend = args.gen_backend or ("torch" if args.tiny else "auto")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.sections:
        parser.error(f"--sections takes names from {', '.join(SECTIONS)}; got {args.sections}")
    positive = {
        "--steps": args.steps,
        "--paper-batch": args.paper_batch,
        "--demo-batch": args.demo_batch,
        "--gen-seconds": args.gen_seconds,
        "--budget-s": args.budget_s,
        "--gen-batch": min(args.gen_batch),
    }
    for flag, value in positive.items():
        if not value > 0:
            parser.error(f"{flag} must be positive, got {value}")
    if args.warmup < 1:
        parser.error(f"--warmup must be at least 1 (the first step pays one-off costs), got {args.warmup}")
    return args


def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Every selected section; the JSON-ready result and whether any section failed."""
    device = resolve_device(args.device)
    start = time.perf_counter()
    deadline = start + args.budget_s
    result: dict[str, Any] = {
        "benchmark": "gpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "autocast": "bfloat16" if device.type == "cuda" else None,  # what vqspeech.loop.fit uses
        "tiny": args.tiny,
        "budget_s": args.budget_s,
        "train": {},
        "generation": {},
        "skipped": {},
        "failed": {},
    }
    sections = ", ".join(args.sections)
    log(f"torch {torch.__version__} on {device} ({result['device_name']}); sections: {sections}")
    pending = list(args.sections)
    while pending:
        name = pending[0]
        left = deadline - time.perf_counter()
        share = left * WEIGHTS[name] / sum(WEIGHTS[n] for n in pending)
        pending.pop(0)
        if share < 1.0:
            result["skipped"][name] = f"the time budget (--budget-s {args.budget_s:g}) was spent"
            log(f"{name}: skipped, {result['skipped'][name]}")
            continue
        log(f"{name}: up to {share:.0f} s")
        try:
            if name == "generation":
                config = section_recipe("paper", 1, args.tiny)
                for batch in args.gen_batch:
                    row = run_generation(
                        config,
                        batch,
                        device,
                        args.gen_seconds,
                        share / len(args.gen_batch),
                        args.gen_backend,
                    )
                    result["generation"][f"batch{batch}"] = row
                    log(f"{name}: batch {batch}: {row['x_real_time']:.3f}x real time")
            else:
                batch = args.paper_batch if name == "paper" else args.demo_batch
                recipe = section_recipe(name, batch, args.tiny, log_every=1 if args.tiny else None)
                row = run_training(name, recipe, device, args.warmup, args.steps, share)
                result["train"][name] = row
                log(f"{name}: {row['steps_per_s']:.2f} steps/s, {row['samples_per_s']:.0f} samples/s")
        except ImportError as exc:
            package = exc.name or str(exc)
            result["skipped"][name] = f"needs the Python package {package!r}, missing here ({exc})"
            log(f"{name}: skipped, {result['skipped'][name]}; bench_gpu.py's docstring says how to carry it")
        except Exception as exc:  # one section's failure (out of memory, say) must not cost the others
            traceback.print_exc(file=sys.stderr)
            result["failed"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log(f"{name}: FAILED, {result['failed'][name]}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["wall_s"] = time.perf_counter() - start
    return result, bool(result["failed"])


def print_table(result: dict[str, Any]) -> None:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    columns = ("section", "batch", "steps", "steps/s", "samples/s", "x real time", "peak GiB")
    header = "{:<13}{:>6}{:>7}{:>10}{:>13}{:>13}{:>10}".format(*columns)
    print(header)
    print("-" * len(header))
    for name, row in result["train"].items():
        print(
            f"{name:<13}{row['batch_size']:>6}{row['steps']:>7}{row['steps_per_s']:>10.2f}"
            f"{row['samples_per_s']:>13.0f}{row['x_real_time']:>13.2f}{number(row['peak_memory_gib']):>10}"
        )
    for row in result["generation"].values():
        print(
            f"{'generation':<13}{row['batch']:>6}{'':>7}{'':>10}"
            f"{row['samples_per_s']:>13.0f}{row['x_real_time']:>13.3f}{number(row['peak_memory_gib']):>10}"
        )
    for name, reason in {**result["skipped"], **result["failed"]}.items():
        print(f"{name:<13} not measured: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result, failed = run(args)
        text = json.dumps(result)
        if args.out is not None:
            write_text_atomic(args.out, text + "\n", "benchmark result")
    except VQSpeechError as exc:
        print(f"bench_gpu: error: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
