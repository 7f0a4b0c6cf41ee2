"""Encoder throughput: seconds of audio encoded to codes per wall-clock second (x real time).

Runs ``VQVAE.encode`` (strided encoder + nearest-code lookup) on random audio for the demo
and paper configs, batch 1 and 8, and prints a table plus a final JSON line. The baseline
in the same run is the paper config at batch 1, so ratios compare like with like.

    .venv/bin/python benchmarks/bench_encoder.py [--seconds 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vqspeech.config import load_recipe
from vqspeech.model import VQVAE


def measure(model: VQVAE, batch: int, seconds: float, repeats: int) -> float:
    sr = model.config.sample_rate
    audio = torch.randn(batch, int(seconds * sr)).clamp(-1, 1) * 0.3
    with torch.inference_mode():
        model.encode(audio[:, :sr])  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.encode(audio)
        wall = (time.perf_counter() - start) / repeats
    return batch * seconds / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in ("demo", "paper"):
        model = VQVAE(load_recipe(name).model).eval()
        for batch in (1, 8):
            rows.append(
                {
                    "config": name,
                    "batch": batch,
                    "x_real_time": measure(model, batch, args.seconds, args.repeats),
                }
            )
    baseline = next(r["x_real_time"] for r in rows if r["config"] == "paper" and r["batch"] == 1)
    print(f"{'config':<8}{'batch':>6}{'x real time':>14}{'vs paper b1':>14}")
    for r in rows:
        r["ratio_vs_paper_b1"] = r["x_real_time"] / baseline
        print(f"{r['config']:<8}{r['batch']:>6}{r['x_real_time']:>14.1f}{r['ratio_vs_paper_b1']:>14.2f}")
    print(
        json.dumps(
            {"benchmark": "encoder", "threads": args.threads, "seconds": args.seconds, "results": rows}
        )
    )


if __name__ == "__main__":
    main()
