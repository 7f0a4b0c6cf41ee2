"""The file-level CLI at scale: peak memory on long files, per-file overhead, --jobs vs batching.

Every measurement runs ``python -m vqspeech_cli.main ...`` as a child process with a random-weight
checkpoint of the ``demo`` config (speed and memory do not depend on the weights) and reads the
child's peak resident memory (``ru_maxrss`` from ``os.wait4``) and wall time:

* encode one 10-minute file (16 kHz mono WAV, and 44.1 kHz stereo FLAC): peak memory must stay
  under ~1.5 GB. For contrast, the library encoding 60 s in one pass (``chunk_frames=None``).
* decode 20 s and 60 s of tokens with the WaveNet (decoding 10 minutes takes ~10 minutes on a
  CPU core), and 60 s and the 10-minute file with the (fast) spectrogram family: peak memory
  must be flat in the length (it grows only by the token file).
* a baseline: ``vqspeech speakers`` (imports + checkpoint, no model run).
* encode 200 short files (0.5-2 s) in one call: per-file overhead beyond the encoder's work,
  with --jobs 1 and --jobs 2; and, in-process, the encoder alone one file at a time vs padded
  batches of 8 (batching changes the codes at each file's end, so it must also be faster to be
  worth it).
* decode 4 files with --jobs 1 and --jobs 2.

Prints a table and a final JSON line.

    .venv/bin/python benchmarks/bench_cli.py [--quick]
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

from vqspeech.audio import load_audio
from vqspeech.checkpoint import save_checkpoint
from vqspeech.codec import Codec
from vqspeech.config import load_recipe
from vqspeech.model import VQVAE

REPO = Path(__file__).resolve().parents[1]


def speechlike(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Seeded voiced-ish audio: a wandering f0 with harmonics, syllable-rate envelope, noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.25 * envelope * wave + 0.01 * rng.standard_normal(n)).astype(np.float32)


# The child reports its own peak RSS (VmHWM of its address space). ru_maxrss from wait4 would not
# do: Linux carries the forked parent's RSS across exec into the child's maximum.
_PEAK = """
import os, sys
def _peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
try:
    {body}
finally:
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(str(_peak_mb()))
"""
_CLI = (
    "import runpy; sys.argv = ['vqspeech', *sys.argv[1:]]; "
    "runpy.run_module('vqspeech_cli.main', run_name='__main__')"
)


def child(body: str, *args: str | Path, threads: int | None = None) -> tuple[float, float, str]:
    """Run Python ``body`` in a child process: (wall seconds, peak RSS in MB, stderr)."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        env = {**os.environ, "BENCH_PEAK_FILE": peak.name}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _PEAK.format(body=body), *map(str, args)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip
        wall = time.perf_counter() - start
        err = done.stderr.decode()
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, args)) or body} failed ({done.returncode}):\n{err}")
        return wall, float(Path(peak.name).read_text()), err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short files, few of them (a smoke run)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def cli(*cli_args: str | Path) -> tuple[float, float, str]:
        return child(_CLI, *cli_args, threads=args.threads)

    long_s, dec_short, dec_long, n_files, dec_files = (
        (60.0, 2.0, 6.0, 20, 2) if args.quick else (600.0, 20.0, 60.0, 200, 4)
    )
    rows: list[dict[str, object]] = []

    def row(name: str, wall: float, peak: float | None, **extra: object) -> None:
        """One result; ``peak`` None where memory is not measured (in-process timings)."""
        mb = None if peak is None else round(peak, 1)
        rows.append({"measure": name, "wall_s": round(wall, 2), "peak_rss_mb": mb, **extra})

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Both decoder families, so that each can be measured (the demo's default is the first one).
        recipe = load_recipe("demo", ["model.decoders=[wavenet, spectrogram]"])
        torch.manual_seed(0)
        speakers = [{"id": i, "name": f"s{i + 1:02d}"} for i in range(recipe.model.n_speakers)]
        ckpt = save_checkpoint(root / "demo.pt", VQVAE(recipe.model), recipe, speakers)

        wall, peak, _ = cli("speakers", "-m", ckpt)
        row("baseline: speakers (imports + checkpoint)", wall, peak)

        # ---- one long file
        long_wav = root / "long" / "s01_long.wav"
        long_wav.parent.mkdir()
        sf.write(long_wav, speechlike(long_s), 16000, subtype="PCM_16")
        wall, peak, _ = cli("encode", long_wav, "-m", ckpt, "-o", root / "long.vqt", "-q", "--device", "cpu")
        row(f"encode {long_s:.0f} s, 16 kHz mono WAV", wall, peak, x_real_time=round(long_s / wall, 1))
        wide = root / "long" / "s01_wide.flac"
        stereo = np.stack([speechlike(long_s, 44100, 1), speechlike(long_s, 44100, 2)], axis=1)
        sf.write(wide, stereo, 44100, subtype="PCM_16")
        del stereo
        wall, peak, _ = cli("encode", wide, "-m", ckpt, "-o", root / "wide.vqt", "-q", "--device", "cpu")
        row(f"encode {long_s:.0f} s, 44.1 kHz stereo FLAC", wall, peak, x_real_time=round(long_s / wall, 1))
        one_pass = min(60.0, long_s)
        for chunks in ("4096", "None"):
            wall, peak, _ = child(
                "from vqspeech.audio import load_audio; from vqspeech.codec import Codec; "
                f"c = Codec.load({str(ckpt)!r}, 'cpu'); a = load_audio({str(long_wav)!r}); "
                f"c.encode_audio(a[: {int(one_pass * 16000)}], chunk_frames={chunks})",
                threads=args.threads,
            )
            label = "in one pass (no chunks)" if chunks == "None" else f"in chunks of {chunks} frames"
            row(f"library: encode {one_pass:.0f} s {label}", wall, peak)

        # ---- decode memory vs length: the WaveNet on 20 s and 60 s, the spectrogram family up to 10 min
        tokens = {long_s: root / "long.vqt"}
        for seconds in (dec_short, dec_long):
            wav = root / "dec" / f"s01_{seconds:.0f}.wav"
            wav.parent.mkdir(exist_ok=True)
            sf.write(wav, speechlike(seconds, seed=3), 16000)
            cli("encode", wav, "-m", ckpt, "-q", "--device", "cpu")
            tokens[seconds] = wav.with_suffix(".vqt")
        runs = [
            ("wavenet", dec_short),
            ("wavenet", dec_long),
            ("spectrogram", dec_long),
            ("spectrogram", long_s),
        ]
        for family, seconds in runs:
            out = root / "dec" / f"{family}{seconds:.0f}.wav"
            wall, peak, _ = cli("decode", tokens[seconds], "-m", ckpt, "-o", out, "--decoder", family, "-q")
            row(f"decode {seconds:.0f} s ({family})", wall, peak, x_real_time=round(seconds / wall, 2))

        # ---- many short files
        rng = np.random.default_rng(0)
        many = root / "many"
        durations = rng.uniform(0.5, 2.0, n_files)
        for i, d in enumerate(durations):
            sub = many / f"s{i % 8 + 1:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            sf.write(sub / f"u{i:03d}.wav", speechlike(float(d), seed=10 + i), 16000)
        total_audio = float(durations.sum())
        first = next(many.rglob("*.wav"))
        startup, _, _ = cli("encode", first, "-m", ckpt, "-o", root / "one.vqt", "-q", "--device", "cpu")
        row("encode 1 short file (startup + model load + 1 file)", startup, None)
        codec = Codec.load(ckpt, "cpu")
        audio = [load_audio(p) for p in sorted(many.rglob("*.wav"))]
        codec.encode_audio(audio[0])  # warm-up
        start = time.perf_counter()
        for a in audio:
            codec.encode_audio(a)
        model_only = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(audio), 8):
                group = audio[i : i + 8]
                batch = torch.zeros(len(group), max(len(a) for a in group))
                for j, a in enumerate(group):
                    batch[j, : len(a)] = torch.from_numpy(a)
                codec.model.encode(batch, chunk_frames=4096)
        batched = time.perf_counter() - start
        row(f"library: encoder on {n_files} files, one at a time", model_only, None,
            per_file_ms=round(1000 * model_only / n_files, 2))  # fmt: skip
        row(f"library: encoder on {n_files} files, padded batches of 8", batched, None,
            per_file_ms=round(1000 * batched / n_files, 2))  # fmt: skip
        for jobs in ("1", "2"):
            out = root / f"many_out{jobs}"
            wall, peak, _ = cli("encode", many, "-m", ckpt, "-o", out, "-q", "-j", jobs, "--device", "cpu")
            overhead = (wall - startup) / (n_files - 1) - model_only / n_files
            row(f"encode {n_files} files ({total_audio:.0f} s) in one call, --jobs {jobs}", wall, peak,
                per_file_ms=round(1000 * (wall - startup) / (n_files - 1), 2),
                overhead_per_file_ms=round(1000 * overhead, 2))  # fmt: skip

        # ---- decode several files: --jobs
        for jobs in ("1", "2"):
            src = root / "many_out1"
            files = sorted(src.rglob("*.vqt"))[:dec_files]
            wall, peak, _ = cli("decode", *files, "-m", ckpt, "-s", "s01", "-o", root / f"dec_jobs{jobs}/",
                                "-q", "-j", jobs, "--overwrite", "--device", "cpu")  # fmt: skip
            row(f"decode {dec_files} files, --jobs {jobs}", wall, peak)

    width = max(len(str(r["measure"])) for r in rows)
    print(f"{'measure':<{width}}  {'wall s':>8}  {'peak MB':>8}  extra")
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("measure", "wall_s", "peak_rss_mb")}
        shown = "-" if r["peak_rss_mb"] is None else r["peak_rss_mb"]
        print(f"{r['measure']!s:<{width}}  {r['wall_s']:>8}  {shown!s:>8}  {extra or ''}")
    summary = {"benchmark": "cli", "quick": args.quick, "threads": torch.get_num_threads(), "results": rows}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
