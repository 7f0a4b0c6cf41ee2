"""The prior over speech codes (issue #8): bits/token, integer stepper speed, sampling speed.

With a trained VQ-VAE (``--model``), its corpus (``--data``) and a prior trained on it
(``--prior``): encodes the held-out utterances (the VQ-VAE recipe's split) and prints bits per
token of the float prior, of the exact integer prior (what an ideal entropy coder spends), with
the speaker and unconditioned, against the raw ``log2 K`` and the unigram entropy of the training
codes. Then times the integer prior's stepper (one code at a time, as an entropy decoder calls
it) and teacher-forced weights, the float prior's cached sampling, and ``sample_speech``
(sampling + decoding) as multiples of real time (token_rate tokens per second of audio).
Prints a table, then one JSON line.

    .venv/bin/python benchmarks/bench_prior.py --model RUN/last.pt --data CORPUS --prior PRIOR/last.pt \\
        [--utterances 16] [--seconds 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

from vqspeech.checkpoint import load_checkpoint
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import open_corpus
from vqspeech.prior import (
    encode_utterances,
    float_bits,
    integer_bits,
    sample_speech,
    unigram_bits,
)
from vqspeech.prior_checkpoint import load_prior


def best(fn: Any, repeats: int = 3) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return min(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="VQ-VAE checkpoint")
    parser.add_argument("--prior", required=True, help="prior checkpoint trained for --model")
    parser.add_argument("--data", required=True, help="the corpus --model and --prior were trained on")
    parser.add_argument("--utterances", type=int, default=16, help="held-out utterances to measure")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio to sample for the timings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vq = load_checkpoint(args.model)
    prior = load_prior(args.prior)
    prior.check_model(vq.fingerprint, args.model)
    k = prior.config.codebook_size
    token_rate = vq.recipe.model.token_rate
    corpus = open_corpus(args.data, sample_rate=vq.recipe.model.sample_rate)
    split = split_for(corpus, vq.recipe)
    model = vq.build_model()
    train = encode_utterances(model, split.train, vq.speaker_names, torch.device("cpu"))
    valid = encode_utterances(model, split.valid, vq.speaker_names, torch.device("cpu"))[: args.utterances]
    net = prior.build()
    integer = prior.integer()
    params = sum(p.numel() for p in net.parameters())

    tokens = sum(u.codes.shape[0] for u in valid)
    bits = {
        "raw": math.log2(k),
        "unigram": unigram_bits(train, valid, k),
        "float": float_bits(net, valid),
        "float_unknown_speaker": float_bits(net, valid, unknown=True),
        "integer": integer_bits(integer, valid),
    }

    codes = valid[0].codes
    n_step = min(500, codes.shape[0])

    def step_all() -> None:
        stepper = integer.stepper(valid[0].speaker)
        for code in codes[:n_step]:
            stepper.weights()
            stepper.push(int(code))

    step_wall = best(step_all)
    parallel_wall = best(lambda: integer.weights(codes, valid[0].speaker))
    n_sample = math.ceil(args.seconds * token_rate)
    speaker = torch.tensor([valid[0].speaker])
    sample_wall = best(lambda: net.sample(speaker, n_sample, 1.0, torch.Generator().manual_seed(0)), 2)
    name = vq.speaker_names[valid[0].speaker] if valid[0].speaker >= 0 else None
    speech_wall = best(lambda: sample_speech(args.model, args.prior, name, args.seconds, device="cpu"), 1)

    result = {
        "prior": args.prior,
        "parameters": params,
        "receptive_field_tokens": prior.config.receptive_field,
        "held_out_utterances": len(valid),
        "held_out_tokens": tokens,
        "bits_per_token": bits,
        "integer_step_us": 1e6 * step_wall / n_step,
        "integer_step_tokens_per_s": n_step / step_wall,
        "integer_parallel_tokens_per_s": codes.shape[0] / parallel_wall,
        "float_sample_tokens_per_s": n_sample / sample_wall,
        "float_sample_x_real_time": n_sample / sample_wall / token_rate,
        "sample_speech_x_real_time": args.seconds / speech_wall,
        "threads": args.threads,
    }
    print(f"prior {args.prior}: {params} parameters, receptive field {prior.config.receptive_field} tokens")
    print(f"held out: {len(valid)} utterances, {tokens} tokens ({token_rate:g} tokens/s)")
    for key, value in bits.items():
        print(f"  bits/token {key:<22} {value:7.3f}   ({value * token_rate / 1000:6.2f} kbit/s)")
    print(f"integer stepper      {result['integer_step_us']:8.0f} us/token  "
          f"{result['integer_step_tokens_per_s']:8.0f} tokens/s")  # fmt: skip
    print(f"integer teacher-forced       {result['integer_parallel_tokens_per_s']:8.0f} tokens/s")
    print(f"float sampling               {result['float_sample_tokens_per_s']:8.0f} tokens/s  "
          f"{result['float_sample_x_real_time']:.1f}x real time")  # fmt: skip
    print(f"sample_speech (+ decoding)   {result['sample_speech_x_real_time']:.1f}x real time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
