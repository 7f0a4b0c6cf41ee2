"""Corpus encoding under torchrun: files/s and x real time at 1 and 2 processes (issue 19).

Makes a seeded corpus of tone clips (``--files``, 1-8 s each) and a random-weight checkpoint
of the ``demo`` recipe in a temp folder, then times the real command

    python -m torch.distributed.run --standalone --nproc_per_node P -m vqspeech_cli.main \\
        encode CORPUS -m CKPT -o OUT -q

with ``OMP_NUM_THREADS=1`` per process, for each P in ``--procs``. Wall time includes the
launch (interpreter, imports, model load), as a user would see it. It checks that every P
writes byte-identical token files. With CUDA, a GPU section times per-file encoding against
exact padded batches (fp32, and bf16 autocast) and reports how many codes agree with per-file
fp32. Prints a table and a final JSON line.

    .venv/bin/python benchmarks/bench_distributed_encode.py [--files 96] [--procs 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vqspeech.checkpoint import save_checkpoint
from vqspeech.config import load_recipe
from vqspeech.model import VQVAE

SAMPLE_RATE = 16000


def make_corpus(root: Path, files: int, seed: int = 0) -> float:
    """``files`` clips of 1-8 s in speaker folders under ``root``; returns their total seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(files):
        seconds = float(rng.uniform(1.0, 8.0))
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        f0 = rng.uniform(90, 250)
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) / 4
        audio = (wave + 0.01 * rng.standard_normal(t.shape[0])).astype(np.float32)
        path = root / f"s{i % 4:02d}" / f"s{i % 4:02d}_{i:04d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, SAMPLE_RATE)
        total += t.shape[0] / SAMPLE_RATE
    return total


def make_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    recipe = load_recipe("demo")
    model = VQVAE(recipe.model).eval()
    table = [{"id": i, "name": f"s{i:02d}"} for i in range(recipe.model.n_speakers)]
    return save_checkpoint(path, model, recipe, table)


def run_torchrun(procs: int, corpus: Path, ckpt: Path, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "vqspeech_cli.main", "encode", str(corpus), "-m", str(ckpt), "-o", str(out), "-q",
           "--device", "cpu"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"torchrun with {procs} processes failed:\n{proc.stderr[-2000:]}")
    return wall


def token_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.vqt"))}


def gpu_section(corpus: Path, ckpt: Path, batch_size: int) -> dict[str, object]:
    """Per-file vs padded batches on CUDA: x real time, and codes agreement with per-file fp32."""
    from vqspeech.audio import load_audio
    from vqspeech.batch_encode import encode_batches
    from vqspeech.codec import Codec

    codec = Codec.load(ckpt, "cuda")
    audios = [load_audio(p, codec.sample_rate) for p in sorted(corpus.rglob("*.wav"))]
    seconds = sum(a.shape[0] for a in audios) / codec.sample_rate

    def timed(fn):  # type: ignore[no-untyped-def]
        fn()  # warm-up (cuDNN autotune, allocator)
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        return result, time.perf_counter() - start

    ref, t_file = timed(lambda: [codec.encode_audio(a) for a in audios])
    fp32, t_fp32 = timed(lambda: encode_batches(codec, audios, batch_size))
    bf16, t_bf16 = timed(lambda: encode_batches(codec, audios, batch_size, precision="bf16"))

    def agree(codes: list[np.ndarray]) -> float:
        same = sum(int((a == b).sum()) for a, b in zip(ref, codes, strict=True))
        return same / sum(a.size for a in ref)

    return {
        "device": torch.cuda.get_device_name(0),
        "batch_size": batch_size,
        "x_real_time_per_file": seconds / t_file,
        "x_real_time_batched_fp32": seconds / t_fp32,
        "x_real_time_batched_bf16": seconds / t_bf16,
        "codes_agree_batched_fp32": agree(fp32),
        "codes_agree_batched_bf16": agree(bf16),
        "files_identical_batched_fp32": sum(np.array_equal(a, b) for a, b in zip(ref, fp32, strict=True)),
        "files": len(audios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16, help="GPU section: files per batch")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        audio_seconds = make_corpus(root / "corpus", args.files)
        ckpt = make_checkpoint(root / "demo.pt")
        outputs = {}
        for procs in args.procs:
            wall = run_torchrun(procs, root / "corpus", ckpt, root / f"out{procs}")
            outputs[procs] = token_bytes(root / f"out{procs}")
            rows.append(
                {
                    "processes": procs,
                    "wall_s": wall,
                    "files_per_s": args.files / wall,
                    "x_real_time": audio_seconds / wall,
                    "x_real_time_per_process": audio_seconds / wall / procs,
                }
            )
        first = outputs[args.procs[0]]
        identical = all(o == first for o in outputs.values()) and len(first) == args.files
        gpu = gpu_section(root / "corpus", ckpt, args.batch_size) if torch.cuda.is_available() else None
    print(f"corpus: {args.files} files, {audio_seconds:.0f} s of audio; OMP_NUM_THREADS=1 per process")
    print(f"{'procs':>6}{'wall s':>9}{'files/s':>10}{'x real time':>13}{'per process':>13}")
    for r in rows:
        print(
            f"{r['processes']:>6}{r['wall_s']:>9.1f}{r['files_per_s']:>10.2f}"
            f"{r['x_real_time']:>13.1f}{r['x_real_time_per_process']:>13.1f}"
        )
    print(f"outputs byte-identical across process counts: {identical}")
    if gpu is not None:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in gpu.items()))
    else:
        print("no CUDA: GPU section (batch 1 vs batched, bf16 vs fp32 agreement) skipped")
    summary = {
        "benchmark": "distributed_encode",
        "files": args.files,
        "audio_seconds": audio_seconds,
        "results": rows,
        "identical": identical,
        "gpu": gpu,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
