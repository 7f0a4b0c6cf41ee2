"""Encoding memory and speed by file length: streamed (``encode_file``) vs the whole file in memory.

Writes synthetic 16-bit WAV files (a tone of changing pitch and level) of 60, 600 and 3600 s,
then encodes each in a fresh process, two ways:

* ``stream``: :func:`vqspeech.inference.encode_file`, which reads the file block by block
  (issue 18, item 8);
* ``whole``: what ``encode_file`` did before: :func:`~vqspeech.audio.load_audio` of the whole
  file, then ``Codec.encode_audio`` and ``Codec.speaker_vector`` of it.

For each it prints the process's peak RSS (``VmHWM``), its RSS once the model is loaded and
has encoded a 2-s warm-up file (``base``), the growth between the two, and x real time
(seconds of audio per wall-clock second of encoding), then a final JSON line. The model is a
random-weight one of the ``voices`` recipe (with a speaker encoder, so the token header's
voice vector is computed too), or ``--model CKPT``. Peak RSS includes glibc's heap
fragmentation (the default malloc settings are kept: what a user gets). Linux only (``/proc/self/status``).

    .venv/bin/python benchmarks/bench_encode_memory.py [--seconds 60 600 3600] [--rate 16000]
        [--channels 1] [--threads 1] [--model CKPT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    from vqspeech.audio import load_audio
    from vqspeech.codec import Codec
    from vqspeech.inference import encode_file

    def rss(key):
        text = open("/proc/self/status").read()
        return int(text.split(key + ":")[1].split()[0]) * 1024

    def encode(path):
        if sys.argv[3] == "stream":
            return encode_file(codec, path)
        audio = load_audio(path, codec.sample_rate)
        vector = codec.speaker_vector([audio]) if codec.has_speaker_encoder else None
        return codec.tokens(codec.encode_audio(audio), len(audio), None, vector)

    codec = Codec.load(sys.argv[1], "cpu")
    encode(sys.argv[5])  # warm-up (lazy imports, kernels' first calls): x real time is steady state
    base = rss("VmRSS")
    start = time.perf_counter()
    tokens = encode(sys.argv[2])
    wall = time.perf_counter() - start
    seconds = tokens.header.num_samples / codec.sample_rate
    print(json.dumps({"base": base, "peak": rss("VmHWM"), "wall": wall, "seconds": seconds}))
    """
)


def synthetic(path: Path, seconds: int, rate: int, channels: int) -> None:
    """A minute of tones (changing pitch and level, a little noise) written ``seconds / 60`` times."""
    rng = np.random.default_rng(0)
    pieces = []
    for _ in range(150):  # 150 x 0.4 s
        t = np.arange(int(0.4 * rate)) / rate
        f0 = rng.uniform(90, 300)
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) / 2.0
        pieces.append(rng.uniform(0.05, 0.5) * wave + 0.01 * rng.standard_normal(t.shape[0]))
    minute = (np.concatenate(pieces) * 32767).astype(np.int16)
    data = np.stack([minute] * channels, axis=1) if channels > 1 else minute
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        whole, rest = divmod(seconds, 60)
        for _ in range(whole):
            out.write(data)
        out.write(data[: rest * rate])


def random_model(path: Path) -> Path:
    import torch

    from vqspeech.checkpoint import save_checkpoint
    from vqspeech.config import load_recipe
    from vqspeech.model import VQVAE

    recipe = load_recipe(str(Path(__file__).resolve().parents[1] / "recipes" / "speech" / "voices.yaml"))
    torch.manual_seed(0)
    model = VQVAE(recipe.model).eval()
    return save_checkpoint(path, model, recipe, [])


def measure(model: Path, audio: Path, how: str, threads: int, warm: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(audio), how, str(threads), str(warm)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{how} {audio.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, nargs="+", default=[60, 600, 3600], help="file lengths")
    parser.add_argument("--rate", type=int, default=16000, help="the files' sample rate (Hz)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each encoding process")
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint (default: random voices)")
    parser.add_argument("--paths", nargs="+", default=["stream", "whole"], choices=["stream", "whole"])
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("this benchmark reads peak RSS from /proc/self/status (Linux)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(Path(tmp) / "model.pt")
        mib = 1 << 20
        warm = Path(tmp) / "warm.wav"
        synthetic(warm, 2, args.rate, args.channels)
        head = ("seconds", 8), ("path", 8), ("base MiB", 10), ("peak MiB", 10), ("growth MiB", 12)
        print("".join(f"{name:>{width}}" for name, width in head) + f"{'x real time':>13}")
        for seconds in args.seconds:
            audio = Path(tmp) / f"{seconds}.wav"
            synthetic(audio, seconds, args.rate, args.channels)
            for how in args.paths:
                m = measure(model, audio, how, args.threads, warm)
                row = {
                    "seconds": seconds, "path": how, "base_mib": m["base"] / mib, "peak_mib": m["peak"] / mib,
                    "growth_mib": (m["peak"] - m["base"]) / mib, "x_real_time": m["seconds"] / m["wall"],
                    "float32_audio_mib": seconds * 16000 * 4 / mib,
                }  # fmt: skip
                rows.append(row)
                print(f"{seconds:>8}{how:>8}{row['base_mib']:>10.0f}{row['peak_mib']:>10.0f}"
                      f"{row['growth_mib']:>12.0f}{row['x_real_time']:>13.1f}")  # fmt: skip
            audio.unlink()
    print(
        json.dumps(
            {
                "benchmark": "encode_memory",
                "rate": args.rate,
                "channels": args.channels,
                "threads": args.threads,
                "model": str(args.model) if args.model else "random voices recipe",
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
