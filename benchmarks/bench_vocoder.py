"""Spectrogram-family decoding speed: Griffin-Lim alone, and codes -> audio end to end.

Griffin-Lim: :func:`vqspeech.vocoder.griffin_lim` (frames-major loop, numba phase update on
CPU) against the baseline measured in the same run, the textbook loop over ``torch.istft`` /
``torch.stft`` with ``torch.sgn`` (what shipped before), on the same magnitudes, and the
spectral convergence each reaches (they must agree). End to end: ``VQVAE.decode`` of the
demo recipe (weights do not change the speed), split into the decoder network and the
vocoder. x = seconds of audio per wall-clock second (16 kHz), best of ``--repeats``.

    .venv/bin/python benchmarks/bench_vocoder.py [--seconds 3] [--repeats 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from vqspeech.config import load_recipe
from vqspeech.model import VQVAE
from vqspeech.vocoder import griffin_lim, stft_magnitude


def textbook_griffin_lim(
    magnitude: torch.Tensor, n_fft: int, hop: int, length: int, n_iter: int
) -> torch.Tensor:
    """The baseline: fast Griffin-Lim written directly on torch.istft / torch.stft."""
    window = torch.hann_window(n_fft)
    phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(0))
    angles = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * phase)
    previous = torch.zeros_like(angles)
    alpha = 0.99 / 1.99
    for _ in range(n_iter):
        audio = torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)
        rebuilt = torch.stft(
            audio, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True
        )
        angles = torch.sgn(rebuilt - alpha * previous)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and numba's first compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_decode(model: VQVAE, batch: int, frames: int, repeats: int) -> tuple[float, float, float]:
    """Best wall seconds of the decoder network, the vocoder, and the whole ``decode``."""
    codes = torch.randint(0, model.config.quantizer.codebook_size, (batch, frames))
    speaker = torch.zeros(batch, dtype=torch.long)
    decoder = model.spectrogram_decoder
    with torch.inference_mode():
        voice = model.speaker_vector(speaker)
        z_q = model.quantizer.lookup(codes)
        log_mag = decoder(z_q, voice)
        net = best_seconds(lambda: decoder(z_q, voice), repeats)
        voc = best_seconds(lambda: decoder.vocode(log_mag, frames), repeats)
        full = best_seconds(lambda: model.decode(codes, speaker), repeats)
    return net, voc, full


def speech_like(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 30 * torch.sin(2 * torch.pi * 1.3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
    return (0.15 * voiced * (1 + torch.sin(2 * torch.pi * 4 * t)) ** 2)[None].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per utterance")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe("demo")
    spec = recipe.model.spectrogram
    n_fft, hop, iters = spec.n_fft, spec.griffin_lim_hop, spec.griffin_lim_iters
    audio = speech_like(args.seconds)
    length = audio.shape[1]
    magnitude = stft_magnitude(audio, n_fft, hop)

    def convergence(rebuilt: torch.Tensor) -> float:
        again = stft_magnitude(rebuilt, n_fft, hop)
        return float(torch.linalg.norm(again - magnitude) / torch.linalg.norm(magnitude))

    rows = {}
    for name, fn in {
        "textbook istft/stft loop (baseline)": lambda: textbook_griffin_lim(
            magnitude, n_fft, hop, length, iters
        ),
        "vqspeech griffin_lim": lambda: griffin_lim(
            magnitude, n_fft, hop, length, iters, generator=torch.Generator().manual_seed(0)
        ),
    }.items():
        rows[name] = (args.seconds / best_seconds(fn, args.repeats), convergence(fn()))  # type: ignore[arg-type]
    base = rows["textbook istft/stft loop (baseline)"][0]
    print(f"Griffin-Lim, {iters} iterations, n_fft {n_fft}, hop {hop}, {args.seconds:g} s", end="")
    print(f", {args.threads} threads")
    print(f"{'':38}{'x real time':>12}{'vs baseline':>13}{'spectral conv.':>16}")
    for name, (x, sc) in rows.items():
        print(f"{name:38}{x:>12.0f}{x / base:>12.2f}x{sc:>16.4f}")

    torch.manual_seed(0)
    model = VQVAE(recipe.model).eval()
    frames = int(args.seconds * model.config.sample_rate) // model.hop_length
    decode = {}
    print(f"\nVQVAE.decode, demo recipe ({spec.channels} channels), {args.seconds:g} s per utterance")
    print(f"{'batch':>5}{'network x':>12}{'vocoder x':>12}{'decode x':>12}")
    for batch in (1, 8):
        net, voc, full = time_decode(model, batch, frames, args.repeats)
        seconds = batch * args.seconds
        decode[batch] = seconds / full
        print(f"{batch:>5}{seconds / net:>12.0f}{seconds / voc:>12.0f}{seconds / full:>12.0f}")
    vq = rows["vqspeech griffin_lim"][0]
    print(
        json.dumps(
            {
                "benchmark": "vocoder",
                "threads": args.threads,
                "griffin_lim_x": round(vq, 1),
                "baseline_x": round(base, 1),
                "speedup": round(vq / base, 2),
                "decode_x_batch1": round(decode[1], 1),
                "decode_x_batch8": round(decode[8], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
