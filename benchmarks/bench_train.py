"""Training throughput on this machine, and whether the data pipeline keeps up with it.

For a recipe (default: demo) on a freshly synthesised corpus: steps/s and audio samples/s
of the training step (forward + backward + AdamW), then batches/s the data pipeline
(:class:`vqspeech.data.batches.StepBatches`, in-process) delivers for the same recipe.
Prints a table and a final JSON line; the pipeline/training ratio is the figure of merit
(aim >= 5x).

    .venv/bin/python benchmarks/bench_train.py [--recipe demo] [--steps 5] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vqspeech.config import load_recipe
from vqspeech.data.batches import StepBatches
from vqspeech.data.corpus import open_corpus
from vqspeech.data.synth import synthesize_corpus
from vqspeech.model import VQVAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        synthesize_corpus(root, n_speakers=4, n_utterances=8, seed=0, engines=("espeak",))
        corpus = open_corpus(root)
        recipe = load_recipe(args.recipe, [*args.overrides, f"model.n_speakers={len(corpus.speakers.names)}"])
        batches = StepBatches(corpus, recipe)

        torch.manual_seed(0)
        model = VQVAE(recipe.model).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr)

        def step(i: int) -> None:
            audio, speaker = batches.batch(i)
            out = model(audio, speaker)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.grad_clip)
            optimizer.step()

        step(0)
        start = time.perf_counter()
        for i in range(1, args.steps + 1):
            step(i)
        train_wall = (time.perf_counter() - start) / args.steps

        n_data = 200
        start = time.perf_counter()
        for i in range(n_data):
            batches.batch(i)
        data_wall = (time.perf_counter() - start) / n_data

    samples_per_step = recipe.train.batch_size * batches.segment_length
    result = {
        "benchmark": "train",
        "recipe": recipe.name,
        "threads": args.threads,
        "batch_size": recipe.train.batch_size,
        "segment_samples": batches.segment_length,
        "train_steps_per_s": 1 / train_wall,
        "train_samples_per_s": samples_per_step / train_wall,
        "train_x_real_time": samples_per_step / train_wall / recipe.model.sample_rate,
        "data_batches_per_s": 1 / data_wall,
        "data_over_train": train_wall / data_wall,
    }
    print(
        f"{'recipe':<10}{'steps/s':>10}{'samples/s':>12}{'x real time':>13}"
        f"{'data batches/s':>16}{'data/train':>12}"
    )
    print(
        f"{recipe.name:<10}{result['train_steps_per_s']:>10.3f}{result['train_samples_per_s']:>12.0f}"
        f"{result['train_x_real_time']:>13.2f}{result['data_batches_per_s']:>16.1f}{result['data_over_train']:>11.0f}x"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
