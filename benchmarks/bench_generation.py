"""WaveNet generation speed: cached stepping (numba and torch backends) against the naive baseline.

For the demo and paper decoders (random weights, random ``z_q``, random speaker vector) at
batch 1 and 8, times ``WaveNet.generate`` per backend over ``--seconds`` of audio per
utterance, and ``WaveNet.generate_naive`` (every step reruns the stack over the receptive
field) over a few steps whose window is already full (a prompt of one receptive field is
copied first). Samples/s are aggregated over the batch; "x real time" is generated seconds
per wall second (samples/s / sample_rate). Prints a table, then one JSON line.

    .venv/bin/python benchmarks/bench_generation.py [--seconds 1] [--quick] [--profile] [--threads N]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from vqspeech.config import ModelConfig, load_recipe
from vqspeech.nn.wavenet import Backend, WaveNet
from vqspeech.nn.wavenet_numba import numba_available


def build(config: ModelConfig) -> WaveNet:
    torch.manual_seed(0)
    # built as the VQ-VAE builds it: speaker vectors of the model-wide speaker_dim
    return WaveNet(
        config.decoder,
        cond_dim=config.quantizer.dim,
        hop_length=config.hop_length,
        speaker_dim=config.speaker_dim,
    ).eval()


def inputs(net: WaveNet, batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    z_q = torch.randn(batch, net.cond_dim, frames, generator=g)
    return z_q, torch.randn(batch, net.speaker_dim, generator=g)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously), so wall times are true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cached(
    net: WaveNet, batch: int, seconds: float, sample_rate: int, backend: Backend, repeats: int
) -> float:
    """Best wall time of ``generate`` over ``seconds`` of audio per utterance, on ``net``'s device
    (inputs are made on the CPU and moved by ``generate``, as decoding does)."""
    frames = max(1, math.ceil(seconds * sample_rate / net.hop_length))
    z_q, speaker = inputs(net, batch, frames)
    device = net.embedding.weight.device
    net.generate(z_q[:, :, :2], speaker, backend=backend)  # warm-up (and numba's cache load)
    walls = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        net.generate(z_q, speaker, generator=torch.Generator().manual_seed(0), backend=backend)
        synchronize(device)
        walls.append(time.perf_counter() - start)
    return min(walls)


def time_naive(net: WaveNet, batch: int, steps: int) -> float:
    """Wall time of ``steps`` naive steps after a one-receptive-field prompt."""
    rf = net.receptive_field
    frames = math.ceil((rf + steps) / net.hop_length)
    z_q, speaker = inputs(net, batch, frames)
    prompt = torch.randint(0, net.config.quantization_channels, (batch, frames * net.hop_length - steps))
    net.generate_naive(z_q[:, :, :2], speaker, prompt=prompt[:, : 2 * net.hop_length - 1])  # warm-up
    start = time.perf_counter()
    net.generate_naive(z_q, speaker, generator=torch.Generator().manual_seed(0), prompt=prompt)
    return time.perf_counter() - start


def run_profile(net: WaveNet, sample_rate: int, seconds: float) -> None:
    """Top ops of the torch backend (torch.profiler) and top functions of the numba backend (cProfile)."""
    frames = max(1, math.ceil(seconds * sample_rate / net.hop_length))
    z_q, speaker = inputs(net, 1, frames)
    net.generate(z_q[:, :, :2], speaker, backend="torch")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net.generate(z_q, speaker, backend="torch")
    print(
        f"torch backend, demo decoder, batch 1, {frames * net.hop_length} steps (profiler overhead included):"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if numba_available():
        net.generate(z_q[:, :, :2], speaker, backend="numba")
        profiler = cProfile.Profile()
        profiler.enable()
        net.generate(z_q, speaker, backend="numba")
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
        print("numba backend, same run (the compiled kernel is one call per 1024 steps):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:3000])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="audio generated per utterance (cached)")
    parser.add_argument("--naive-steps", type=int, default=0, help="naive steps (default: 16 demo, 6 paper)")
    parser.add_argument("--repeats", type=int, default=1, help="cached runs per cell; the best is kept")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="0.25 s per utterance, 4 naive steps")
    parser.add_argument("--profile", action="store_true", help="print where the time goes (demo, batch 1)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.naive_steps = 0.25, args.naive_steps or 4
    torch.set_num_threads(args.threads)
    backends: list[Backend] = ["numba", "torch"] if numba_available() else ["torch"]
    rows: list[dict[str, Any]] = []
    for name in ("demo", "paper"):
        config = load_recipe(name).model
        net = build(config)
        sr = config.sample_rate
        if args.profile and name == "demo":
            run_profile(net, sr, min(args.seconds, 0.25))
        for batch in (1, 8):
            steps = args.naive_steps or (16 if name == "demo" else 6)
            cells = [("naive", steps, time_naive(net, batch, steps))]
            per_utt = max(1, math.ceil(args.seconds * sr / net.hop_length)) * net.hop_length
            for backend in backends:
                wall = time_cached(net, batch, args.seconds, sr, backend, args.repeats)
                cells.append((f"cached-{backend}", per_utt, wall))
            naive_rate = batch * steps / cells[0][2]
            for method, n, wall in cells:
                rate = batch * n / wall
                rows.append({
                    "config": name,
                    "batch": batch,
                    "method": method,
                    "steps": n,
                    "wall_s": round(wall, 4),
                    "samples_per_s": round(rate, 1),
                    "x_real_time": round(rate / sr, 4),
                    "speedup_vs_naive": round(rate / naive_rate, 1),
                })  # fmt: skip
    columns = ("config", "batch", "method", "steps", "samples/s", "x real time", "vs naive")
    header = "{:<7}{:>6}  {:<14}{:>7}{:>12}{:>13}{:>10}".format(*columns)
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['config']:<7}{r['batch']:>6}  {r['method']:<14}{r['steps']:>7}{r['samples_per_s']:>12.0f}"
            f"{r['x_real_time']:>13.3f}{r['speedup_vs_naive']:>9.1f}x"
        )
    print(
        json.dumps({
            "benchmark": "generation",
            "threads": args.threads,
            "seconds": args.seconds,
            "numba": numba_available(),
            "results": rows,
        })
    )  # fmt: skip


if __name__ == "__main__":
    main()
