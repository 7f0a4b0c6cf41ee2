"""Conv prior vs a small causal Transformer over the same codes: held-out bits/token and speed (issue 8).

Issue 8 asks to choose the prior's architecture "by measured bits/token and speed". Both models
train with the same loop (``vqspeech.loop.fit``), the same crops, speaker conditioning (a table
row or "unknown"), optimiser and step budget, on the codes the VQ-VAE gives the corpus's
training split; both are scored on whole held-out utterances. Printed: parameters, training
steps/s, held-out bits/token (with the speaker and unconditioned), and generation speed
(tokens/s, one stream, cached: ring buffers for the conv stack, a KV-less re-run of the window
for the Transformer, as torch's encoder layer has no cache).

Only the conv prior has an exact integer twin (``IntegerCodePrior``): attention's softmax is not
exact in integer arithmetic, so a Transformer prior could code token files only by making its
float outputs deterministic across machines, which no BLAS promises.

    python benchmarks/compare_prior_architectures.py --model RUN/last.pt --data DATA [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.checkpoint import load_checkpoint
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import open_corpus
from vqspeech.loop import fit
from vqspeech.nn.prior import CodePrior
from vqspeech.prior import CropBatches, EncodedUtterance, encode_utterances, masked_nats, prior_recipe
from vqspeech.prior_config import UNKNOWN_SPEAKER


class TransformerPrior(nn.Module):
    """Decoder-only Transformer over codes: start token, learned positions, speaker added everywhere."""

    def __init__(self, k: int, n_speakers: int, dim: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(k + 1, dim)  # k = start token
        self.speaker = nn.Embedding(n_speakers + 1, dim)  # last row: unknown
        self.position = nn.Embedding(context, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, k)
        self.k, self.n_speakers, self.context = k, n_speakers, context

    def forward(self, codes: Tensor, speaker: Tensor) -> Tensor:
        """codes [B, T] -> logits [B, T, K]; position t sees codes < t (T <= context)."""
        b, t = codes.shape
        shifted = torch.cat([torch.full((b, 1), self.k, device=codes.device), codes[:, :-1]], dim=1)
        spk = torch.where(speaker < 0, torch.full_like(speaker, self.n_speakers), speaker)
        x = (
            self.embedding(shifted)
            + self.position(torch.arange(t, device=codes.device))
            + self.speaker(spk)[:, None]
        )
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=codes.device)
        return self.out(self.norm(self.blocks(x, mask=mask, is_causal=True)))


class Task:
    def __init__(self, model: nn.Module, crops: CropBatches) -> None:
        self.model = model
        self.crops = crops

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        return self.crops.iterate(start_step, total_steps)

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        codes, speaker, mask = batch
        loss = masked_nats(net(codes, speaker), codes, mask)
        return loss, {"bits_per_token": loss.detach() / math.log(2)}

    def items(self, batch: Any) -> int:
        return int(batch.mask.sum())

    def evaluate(self, step: int) -> dict[str, float]:
        return {}

    def save(self, path: Path, training: dict[str, Any]) -> None:
        pass


@torch.no_grad()
def held_out_bits(
    model: nn.Module, valid: list[EncodedUtterance], window: int | None, unknown: bool
) -> float:
    """Bits/token on whole utterances; a Transformer sees at most ``window`` past codes (sliding)."""
    model.eval()
    total, count = 0.0, 0
    for utt in valid:
        codes = torch.from_numpy(utt.codes)[None]
        speaker = torch.tensor([UNKNOWN_SPEAKER if unknown else utt.speaker])
        if window is None or codes.shape[1] <= window:
            logits = model(codes, speaker)[0]
        else:  # predict each block of window/2 codes with window/2 codes of history
            half, rows = window // 2, []
            for start in range(0, codes.shape[1], half):
                lo = max(0, start - half)
                out = model(codes[:, lo : start + half], speaker)[0]
                rows.append(out[start - lo :])
            logits = torch.cat(rows)[: codes.shape[1]]
        total += float(F.cross_entropy(logits, codes[0], reduction="sum"))
        count += codes.shape[1]
    return total / math.log(2) / count


@torch.no_grad()
def generation_rate(model: nn.Module, n: int, window: int) -> float:
    """Tokens/s when sampling one stream of ``n`` tokens."""
    model.eval()
    started = time.perf_counter()
    if isinstance(model, CodePrior):
        model.sample(torch.tensor([0]), n, generator=torch.Generator().manual_seed(0))
    else:
        codes = torch.zeros(1, 0, dtype=torch.long)
        generator = torch.Generator().manual_seed(0)
        for _ in range(n):
            context = torch.cat([codes[:, -(window - 1) :], torch.zeros(1, 1, dtype=torch.long)], dim=1)
            logits = model(context, torch.tensor([0]))[0, -1]
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            codes = torch.cat([codes, nxt[None]], dim=1)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vq = load_checkpoint(args.model)
    corpus = open_corpus(args.data, sample_rate=vq.recipe.model.sample_rate)
    split = split_for(corpus, vq.recipe)
    vqvae = vq.build_model()
    train = encode_utterances(vqvae, split.train, vq.speaker_names, torch.device("cpu"))
    valid = encode_utterances(vqvae, split.valid, vq.speaker_names, torch.device("cpu"))
    k, n_speakers = vq.recipe.model.quantizer.codebook_size, len(vq.speakers)
    recipe = prior_recipe(
        [f"model.codebook_size={k}", f"model.n_speakers={n_speakers}", f"train.steps={args.steps}"]
    )
    window = recipe.segment_tokens
    candidates: dict[str, tuple[Callable[[], nn.Module], int | None]] = {
        "conv (shipped)": (lambda: CodePrior(recipe.model), None),
        "transformer 4x128": (lambda: TransformerPrior(k, n_speakers, 128, 4, 4, window), window),
    }
    rows = []
    for name, (build, ctx) in candidates.items():
        torch.manual_seed(0)
        model = build()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            fit(Task(model, CropBatches(train, recipe)), out, recipe.train, total_steps=args.steps)
        seconds = time.perf_counter() - started
        row = {
            "model": name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_steps_per_s": args.steps / seconds,
            "bits_per_token": held_out_bits(model, valid, ctx, unknown=False),
            "bits_per_token_unknown_speaker": held_out_bits(model, valid, ctx, unknown=True),
            "generate_tokens_per_s": generation_rate(model, 500, window),
        }
        rows.append(row)
        print(
            f"{name:20s} {row['parameters']:>9,} params  {row['train_steps_per_s']:.2f} steps/s  "
            f"held-out {row['bits_per_token']:.3f} bits/token ({row['bits_per_token_unknown_speaker']:.3f} "
            f"unconditioned)  generation {row['generate_tokens_per_s']:.0f} tokens/s",
            flush=True,
        )
    print(json.dumps({"benchmark": "prior_architectures", "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
