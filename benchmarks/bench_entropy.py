"""Entropy coding with a prior (issue 8): bits per token, effective kbps and speed, on held-out speech.

    .venv/bin/python benchmarks/bench_entropy.py --model RUN/last.pt --prior PRIOR/last.pt \
        --data CORPUS [--split valid|all] [--max N] [--bigram]
    .venv/bin/python benchmarks/bench_entropy.py --toy          # no trained models: a smoke check

For the utterances of ``--data`` (default: the VQ-VAE recipe's held-out split of that corpus, the
utterances neither the VQ-VAE nor the prior trained on), in bits per token:

* ``raw``: ``ceil(log2 K)``, what a packed token file spends;
* ``unigram H``: the empirical entropy of those same codes' histogram (an ideal order-0 coder
  that knew the histogram in advance: a lower bound for any coder without context);
* ``bigram``: (``--bigram``) the payload of a :class:`~vqspeech.entropy.BigramSource` fitted on the
  training split's codes, a cheap context model to beat;
* ``prior ideal``: ``-sum log2 p`` under the integer prior; ``prior payload``: the arithmetic-coded
  payload; ``prior file``: the whole coded file (header + payload + CRC), next to the packed
  file's whole size. Effective kbps = bits/token x tokens/s.

Speed (x real time = seconds of audio per second of compute, one process): ``encode`` audio ->
token-file bytes with and without the prior coding step, and ``decode`` token-file bytes ->
codes with and without the prior (the prior decodes one code at a time). Every coded file is
decoded and checked equal to the plain one. Prints a table and a final JSON line.

``--toy``: codes from a random walk over K = 512 codes at 250 tokens/s (held-out walks vs a
bigram fitted on others); no audio, so only the coding columns.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vqspeech.bitpack import bits_per_code
from vqspeech.entropy import BigramSource, PmfSource, decode_tokens, encode_tokens, ideal_bits
from vqspeech.tokens import TokenFile, TokenHeader, dumps, loads, loads_container


@dataclass
class Totals:
    """Sums over utterances (bits, seconds)."""

    tokens: int = 0
    audio_seconds: float = 0.0
    packed_file_bits: int = 0
    coded_payload_bits: int = 0
    coded_file_bits: int = 0
    ideal_bits: float = 0.0
    bigram_payload_bits: int = 0
    encode_seconds: float = 0.0  # audio -> codes (the VQ-VAE encoder)
    pack_seconds: float = 0.0  # codes -> packed file bytes
    code_seconds: float = 0.0  # codes -> coded file bytes (prior rows + range coder)
    unpack_seconds: float = 0.0  # packed bytes -> codes
    uncode_seconds: float = 0.0  # coded bytes -> codes (stepper + range decoder)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def unigram_entropy(codes: NDArray[np.int64], k: int) -> float:
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def code_one(
    tokens: TokenFile, source: PmfSource, speaker: int, totals: Totals, bigram: BigramSource | None
) -> None:
    """Pack and code one utterance's tokens, decode both back, check, and add to ``totals``."""
    packed, t_pack = timed(lambda: dumps(tokens))
    coded_tokens, t_code = timed(lambda: encode_tokens(tokens, source, speaker))
    coded, t_code2 = timed(lambda: dumps(coded_tokens))
    back_plain, t_unpack = timed(lambda: loads(packed))
    back_coded, t_uncode = timed(lambda: decode_tokens(loads_container(coded), source))  # type: ignore[arg-type]
    if back_plain != tokens or back_coded != tokens:
        raise SystemExit(f"round trip failed for an utterance of {tokens.header.n_frames} frames")
    totals.tokens += tokens.header.n_frames
    totals.packed_file_bits += 8 * len(packed)
    totals.coded_payload_bits += 8 * len(coded_tokens.payload)
    totals.coded_file_bits += 8 * len(coded)
    totals.ideal_bits += ideal_bits(tokens.codes[0], source, speaker)
    totals.pack_seconds += t_pack
    totals.code_seconds += t_code + t_code2
    totals.unpack_seconds += t_unpack
    totals.uncode_seconds += t_uncode
    if bigram is not None:
        totals.bigram_payload_bits += 8 * len(encode_tokens(tokens, bigram, 0).payload)


def report(
    totals: Totals, all_codes: NDArray[np.int64], k: int, token_rate: float, label: str
) -> dict[str, Any]:
    n = max(1, totals.tokens)
    raw = bits_per_code(k)
    rows: list[tuple[str, float]] = [
        ("raw ceil(log2 K)", float(raw)),
        ("unigram H (same codes)", unigram_entropy(all_codes, k)),
    ]
    if totals.bigram_payload_bits:
        rows.append(("bigram payload", totals.bigram_payload_bits / n))
    rows += [
        ("prior ideal -log2 p", totals.ideal_bits / n),
        ("prior payload", totals.coded_payload_bits / n),
        ("prior file (header+CRC)", totals.coded_file_bits / n),
        ("packed file (header+CRC)", totals.packed_file_bits / n),
    ]
    print(
        f"{label}: {totals.tokens} tokens, {totals.audio_seconds:.1f} s of audio, K = {k}, "
        f"{token_rate:g} tokens/s"
    )
    print(f"{'':<28}{'bits/token':>11}{'kbps':>8}{'vs raw':>8}")
    for name, bits in rows:
        print(f"{name:<28}{bits:>11.3f}{bits * token_rate / 1000:>8.3f}{bits / raw - 1:>+8.1%}")
    secs = max(totals.audio_seconds, 1e-9)
    speed = {
        "encode_plain_xrt": secs / max(totals.encode_seconds + totals.pack_seconds, 1e-9),
        "encode_prior_xrt": secs / max(totals.encode_seconds + totals.code_seconds, 1e-9),
        "prior_coding_only_xrt": secs / max(totals.code_seconds, 1e-9),
        "decode_plain_xrt": secs / max(totals.unpack_seconds, 1e-9),
        "decode_prior_xrt": secs / max(totals.uncode_seconds, 1e-9),
    }
    if totals.encode_seconds:
        print(
            f"encode audio -> file: {speed['encode_plain_xrt']:.1f}x real time plain, "
            f"{speed['encode_prior_xrt']:.1f}x with the prior "
            f"(prior coding alone {speed['prior_coding_only_xrt']:.1f}x)"
        )
    print(
        f"decode file -> codes: {speed['decode_plain_xrt']:.0f}x real time plain, "
        f"{speed['decode_prior_xrt']:.1f}x with the prior "
        f"({1e6 * totals.uncode_seconds / n:.0f} us per token)"
    )
    return {
        "benchmark": "entropy",
        "label": label,
        "tokens": totals.tokens,
        "audio_seconds": totals.audio_seconds,
        "codebook_size": k,
        "token_rate": token_rate,
        "bits_per_token": dict(rows),
        "kbps": {name: bits * token_rate / 1000 for name, bits in rows},
        "payload_saving_vs_raw": 1 - (totals.coded_payload_bits / n) / raw,
        **speed,
    }


def toy(n_utterances: int = 16, k: int = 512, token_rate: float = 250.0) -> dict[str, Any]:
    rng = np.random.default_rng(0)

    def walk(n: int) -> NDArray[np.int64]:
        return np.cumsum(rng.integers(-3, 4, n)) % k

    source = BigramSource.fit([walk(20000) for _ in range(10)], k, alpha=0.01)
    totals = Totals()
    held_out = []
    for i in range(n_utterances):
        codes = walk(int(rng.integers(300, 1200)))
        header = TokenHeader(16000, 64, k, 1, codes.size, codes.size * 64, f"s{i % 4}", "toy")
        code_one(TokenFile(header, codes[None]), source, 0, totals, None)
        totals.audio_seconds += codes.size / token_rate
        held_out.append(codes)
    return report(totals, np.concatenate(held_out), k, token_rate, "toy random walk, bigram prior")


def real(
    model: Path, prior_path: Path, data: Path, split: str, limit: int | None, bigram: bool, check: bool = True
) -> dict[str, Any]:
    import torch

    from vqspeech.codec import Codec
    from vqspeech.data.batches import split_for
    from vqspeech.data.corpus import open_corpus
    from vqspeech.inference import encode_file
    from vqspeech.prior_checkpoint import load_prior

    torch.set_num_threads(1)  # comparable numbers on a shared machine
    codec = Codec.load(model, "cpu")
    prior = load_prior(prior_path)
    if check:
        prior.check_model(codec.fingerprint)
    corpus = open_corpus(data, sample_rate=codec.sample_rate)
    parts = split_for(corpus, codec.checkpoint.recipe)
    utterances: Sequence[Any] = parts.valid if split == "valid" else corpus.utterances
    utterances = list(utterances)[:limit] if limit else list(utterances)
    source: BigramSource | None = None
    if bigram:
        train = [codec.encode_audio(_audio(u.path, codec.sample_rate))[0] for u in parts.train]
        source = BigramSource.fit(train, codec.codebook_size, alpha=0.1)
    totals = Totals()
    all_codes = []
    for utt in utterances:
        start = time.perf_counter()
        tokens = encode_file(codec, utt.path, speaker=utt.speaker)
        seconds = time.perf_counter() - start
        totals.encode_seconds += seconds
        totals.audio_seconds += tokens.header.num_samples / codec.sample_rate
        code_one(tokens, prior.integer(), prior.speaker_index(tokens.header.speaker), totals, source)
        all_codes.append(tokens.codes[0])
    label = f"{len(utterances)} {'held-out' if split == 'valid' else ''} utterances of {data}".replace(
        "  ", " "
    )
    return report(
        totals, np.concatenate(all_codes), codec.codebook_size, codec.sample_rate / codec.hop_length, label
    )


def _audio(path: Path, rate: int) -> NDArray[np.float32]:
    from vqspeech.audio import load_audio

    return load_audio(path, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="VQ-VAE checkpoint")
    parser.add_argument("--prior", type=Path, help="prior checkpoint trained on the model's codes")
    parser.add_argument("--data", type=Path, help="corpus folder")
    parser.add_argument(
        "--split", choices=("valid", "all"), default="valid", help="held-out split or every utterance"
    )
    parser.add_argument("--max", type=int, default=None, help="at most this many utterances")
    parser.add_argument("--bigram", action="store_true", help="also a bigram fitted on the training split")
    parser.add_argument(
        "--skip-model-check",
        action="store_true",
        help="measure a prior whose recorded model fingerprint differs (e.g. saved by a development build)",
    )
    parser.add_argument("--toy", action="store_true", help="random-walk codes and a bigram prior; no models")
    args = parser.parse_args()
    if args.toy:
        result = toy()
    else:
        if args.model is None or args.prior is None or args.data is None:
            parser.error("give --model, --prior and --data (or --toy)")
        result = real(
            args.model, args.prior, args.data, args.split, args.max, args.bigram, not args.skip_model_check
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
