"""The bundled model (issue 17): encode and decode speed (x real time) and memory, on one thread.

The model is the one shipped inside the package (``vqspeech/models/default.pt``, what every
command uses without ``--model``), or ``--model CKPT``. Everything runs on one CPU thread
(``OMP_NUM_THREADS=1`` in the children, ``torch.set_num_threads(1)`` here). The input is a
synthetic speech-like signal (a gliding f0 with harmonics, a syllable-rate envelope, a little
noise; speed hardly depends on content), 16 kHz mono 16-bit WAV, written to a temporary folder.

1. The command line as a user runs it, each command a child process
   (``python -m vqspeech_cli.main encode X.wav -o X.vqt -q``, then ``decode X.vqt -o Y.wav -q``,
   whose ``--precision auto`` runs the decoder network in bfloat16 where the CPU has it natively,
   and again with ``--precision float32``, the baseline in the same run;
   no ``-m`` for the bundled model): wall time including imports and model load, x real time
   (seconds of audio per wall-clock second) and peak RSS, for a 60-s and a 600-s input
   (``--quick``: 10 s and 60 s; ``--seconds SHORT LONG`` sets them). ``vqspeech speakers`` is the
   baseline: imports and model load, no audio.
2. In-process, on the short input: each stage alone, best of ``--repeats`` (3) after a warm-up
   (numba compiles its kernels on first call): the encoder (``Codec.encode_audio``), the speaker
   encoder (``Codec.speaker_vector``, where the model has one: encode runs it for the token
   header), the spectrogram decoder network (``model.decoders["spectrogram"]`` on the codes, in
   one pass; in float32 and under bfloat16 autocast) and the vocoder (``SpectrogramDecoder.vocode``, i.e.
   :func:`vqspeech.vocoder.griffin_lim` at the model's iterations) starting from random phases
   and from :func:`~vqspeech.vocoder.pghi_phase` (the model's ``model.spectrogram.phase_init``
   picks one when decoding), and ``pghi_phase`` alone; for a model with ``vocoder: harmonic``
   (what it then decodes with), :func:`~vqspeech.vocoder.harmonic_plus_noise` too. A model
   without a spectrogram decoder skips these. The command line decodes in chunks of the family's
   ``chunk_frames`` (spectrogram: 4096 latent frames, 16 s) with overlap: for inputs longer than
   one chunk its decoder network recomputes each chunk's context frames (128 each side) and its
   vocoder the 64-frame overlap, a few per cent more work than the one pass here.
3. Peak RSS growth from the short to the long input, for encode and decode: both stream
   (chunked), so it should be flat in the length (a few MB: the token file, heap fragmentation)
   once the input is a few encoder chunks long (``ENCODE_CHUNK_FRAMES``: 16.4 s at hop 64).
   Shorter, encode's peak still rises with the length as the encoder's working memory fills
   (bundled model, busy 2-core box: 448 MB at 10 s, 484 at 20, 523 at 33, 538 at 60, 544 at
   180), so ``--quick``'s 10 s -> 60 s shows that filling, not a leak; a note says so.

Peak RSS is the child's own ``VmHWM`` (``/proc/self/status``, Linux), written by the child as
it exits; not ``ru_maxrss`` from ``os.wait4``, which Linux carries over from the forked parent
across exec (this process holds torch and a model, so every child would read at least its RSS).

Prints a table and a final JSON line ``{"benchmark": "bench_bundled", ...}``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bundled.py [--quick] [-m CKPT]
        [--seconds SHORT LONG] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from vqspeech.bundled import model_or_bundled
from vqspeech.codec import ENCODE_CHUNK_FRAMES, Codec
from vqspeech.device import autocast, native_bfloat16
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.vocoder import pghi_phase

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks, as modules
from bench_cli import speechlike  # noqa: E402  (the same seeded voiced-ish test signal)

SAMPLE_RATE = 16000
#: Encoder chunks after which encode's peak RSS stops rising with the length (docstring, item 3).
FILLED_CHUNKS = 3


# As benchmarks/bench_cli.py: the child writes its own peak RSS (VmHWM) to a file as it exits.
_PEAK = """
import os, runpy, sys
def _peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
try:
    sys.argv = ["vqspeech", *sys.argv[1:]]
    runpy.run_module("vqspeech_cli.main", run_name="__main__")
finally:
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(str(_peak_mb()))
"""


def cli(*args: str | Path) -> tuple[float, float]:
    """``python -m vqspeech_cli.main ARGS`` on one thread: (wall seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        env = {**os.environ, "BENCH_PEAK_FILE": peak.name, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, *map(str, args)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode != 0:
            words = " ".join(map(str, args))
            raise SystemExit(f"vqspeech {words} failed ({done.returncode}):\n{done.stderr.decode()[-3000:]}")
        return wall, float(Path(peak.name).read_text())


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_cli(model: Path | None, root: Path, seconds: tuple[float, float], speaker: str) -> dict[str, Any]:
    """Part 1: ``speakers``, then encode and decode of the short and the long input."""
    model_args: list[str | Path] = ["-m", model] if model is not None else []
    wall, peak = cli("speakers", *model_args)
    out: dict[str, Any] = {"baseline": {"wall_s": wall, "peak_rss_mb": peak}}
    # In a folder named after a speaker the model knows: a model without a speaker encoder then
    # finds the voice in the token header (file layout), as it would for a user's VCTK-style tree.
    folder = root / speaker
    folder.mkdir()
    for name, length in zip(("short", "long"), seconds, strict=True):
        wav = folder / f"speech_{name}.wav"
        sf.write(wav, speechlike(length), SAMPLE_RATE, subtype="PCM_16")
        vqt, decoded = wav.with_suffix(".vqt"), root / f"decoded_{name}.wav"
        for verb, command in (
            ("encode", ("encode", wav, *model_args, "-o", vqt, "-q")),
            ("decode", ("decode", vqt, *model_args, "-o", decoded, "-q")),
            # the baseline for --precision auto's choice, in the same run
            (
                "decode_float32",
                ("decode", vqt, *model_args, "-o", decoded, "-q", "--overwrite", "--precision", "float32"),
            ),
        ):
            wall, peak = cli(*command)
            out[f"{verb}_{name}"] = {
                "audio_s": length, "wall_s": wall, "x_real_time": length / wall, "peak_rss_mb": peak,
            }  # fmt: skip
        wav.unlink()
        decoded.unlink()
    return out


def measure_stages(codec: Codec, seconds: float, repeats: int) -> tuple[dict[str, Any], str | None]:
    """Part 2: each stage alone on ``seconds`` of audio; (rows, why the decoder stages were skipped)."""
    audio = speechlike(seconds, codec.sample_rate)

    def row(best: float) -> dict[str, float]:
        return {"audio_s": seconds, "best_s": best, "x_real_time": seconds / best}

    stages: dict[str, Any] = {"encoder": row(best_of(lambda: codec.encode_audio(audio), repeats))}
    if codec.has_speaker_encoder:
        stages["speaker_encoder"] = row(best_of(lambda: codec.speaker_vector([audio]), repeats))
    if "spectrogram" not in codec.decoders:
        return stages, f"the model has no spectrogram decoder (it has: {', '.join(codec.decoders)})"
    model = codec.model
    decoder = model.decoders["spectrogram"]
    assert isinstance(decoder, SpectrogramDecoder)
    codes = torch.from_numpy(codec.encode_audio(audio)).to(codec.device)
    voice = model.speaker_vector(torch.zeros(1, dtype=torch.long, device=codec.device))
    if codec.has_speaker_encoder:  # the source's own voice, as decoding a token file uses
        voice = torch.from_numpy(codec.speaker_vector([audio]).values).to(codec.device)[None]
    with torch.no_grad():
        stages["decoder_network"] = row(
            best_of(lambda: decoder(model.quantizer.lookup(codes), voice), repeats)
        )
        with autocast(codec.device, torch.bfloat16):  # what --precision bfloat16 runs
            stages["decoder_network_bfloat16"] = row(
                best_of(lambda: decoder(model.quantizer.lookup(codes), voice), repeats)
            )
        log_mag, pitch = decoder.frames(model.quantizer.lookup(codes), voice)
        frames = codes.shape[1]
        config = decoder.config
        if pitch is not None:  # the harmonic vocoder, which decode uses for this model

            def harmonic() -> torch.Tensor:
                return decoder.vocode(log_mag, frames, torch.Generator().manual_seed(0), pitch)

            stages["vocoder_harmonic"] = row(best_of(harmonic, repeats))

        def vocode() -> torch.Tensor:
            return decoder.vocode(log_mag, frames, torch.Generator().manual_seed(0))

        try:  # the config is what picks the start (decode reads it from the checkpoint)
            for init in ("random", "pghi"):
                decoder.config = dataclasses.replace(config, phase_init=init)
                stages[f"vocoder_{init}"] = row(best_of(vocode, repeats))
        finally:
            decoder.config = config
        step = config.griffin_lim_hop // decoder.frame_hop  # the frames Griffin-Lim reads (see vocode)
        every = log_mag[..., ::step].float()
        stages["pghi_phase"] = row(
            best_of(lambda: pghi_phase(every, config.n_fft, config.griffin_lim_hop), repeats)
        )
    return stages, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10-s and 60-s inputs (default 60 s and 600 s)")
    parser.add_argument(
        "-m", "--model", type=Path, default=None, help="a checkpoint (default: the bundled model)"
    )
    parser.add_argument(
        "--seconds", type=float, nargs=2, metavar=("SHORT", "LONG"), default=None,
        help="the two input lengths (overrides --quick); the stages run on SHORT",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (the best is kept)")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        raise SystemExit("this benchmark reads peak RSS from /proc/self/status (Linux)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    seconds: tuple[float, float] = (10.0, 60.0) if args.quick else (60.0, 600.0)
    if args.seconds:
        seconds = (args.seconds[0], args.seconds[1])
    if not 0 < seconds[0] <= seconds[1]:
        parser.error("--seconds needs 0 < SHORT <= LONG")
    torch.set_num_threads(1)

    path = model_or_bundled(args.model)
    codec = Codec.load(path, "cpu")
    speaker = codec.speaker_names[0] if codec.speaker_names else "speaker"
    with tempfile.TemporaryDirectory() as tmp:
        commands = measure_cli(args.model, Path(tmp), seconds, speaker)
    stages, skipped = measure_stages(codec, seconds[0], args.repeats)
    growth = {
        verb: commands[f"{verb}_long"]["peak_rss_mb"] - commands[f"{verb}_short"]["peak_rss_mb"]
        for verb in ("encode", "decode")
    }

    short, long = (f"{s:g} s" for s in seconds)
    lines = [("vqspeech speakers (imports + model load)", commands["baseline"]["wall_s"], None,
              commands["baseline"]["peak_rss_mb"])]  # fmt: skip
    for verb, shown in (
        ("encode", "encode"),
        ("decode", "decode"),
        ("decode_float32", "decode --precision float32"),
    ):
        for name, label in (("short", short), ("long", long)):
            r = commands[f"{verb}_{name}"]
            lines.append((f"vqspeech {shown} {label}", r["wall_s"], r["x_real_time"], r["peak_rss_mb"]))
    for name, r in stages.items():
        lines.append((f"in-process {name.replace('_', ' ')} ({short})", r["best_s"], r["x_real_time"], None))
    width = max(len(line[0]) for line in lines)
    print(f"{'measure (one thread)':<{width}}  {'wall s':>8}  {'x real time':>11}  {'peak MB':>8}")
    for label, wall, speed, peak in lines:
        shown = ("-" if speed is None else f"{speed:.1f}", "-" if peak is None else f"{peak:.0f}")
        print(f"{label:<{width}}  {wall:>8.3f}  {shown[0]:>11}  {shown[1]:>8}")
    for verb, mb in growth.items():
        print(f"peak RSS growth, {verb} {short} -> {long}: {mb:+.1f} MB")
    chunk_s = ENCODE_CHUNK_FRAMES * codec.hop_length / codec.sample_rate
    if seconds[0] < FILLED_CHUNKS * chunk_s:
        print(f"(the {short} input is under {FILLED_CHUNKS} encoder chunks of {chunk_s:g} s: encode's "
              "growth includes its working memory filling up; see the docstring)")  # fmt: skip
    if skipped:
        print(f"skipped the decoder stages: {skipped}")
    native = native_bfloat16(codec.device)
    auto = "bfloat16 (native)" if native else "float32 (no native bfloat16)"
    print(f"decode's --precision auto on this CPU: {auto}")

    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value

    summary = {
        "benchmark": "bench_bundled",
        "model": str(path),
        "bundled": args.model is None,
        "fingerprint": codec.fingerprint,
        "phase_init": codec.model.config.spectrogram.phase_init,
        "vocoder": codec.model.config.spectrogram.vocoder,
        "threads": torch.get_num_threads(),
        # what decode's --precision auto computes the decoder network in, on this machine
        "precision_auto": "bfloat16" if native else "float32",
        "quick": args.quick,
        "seconds": list(seconds),
        "repeats": args.repeats,
        "cli": rounded(commands),
        "stages": rounded(stages),
        "memory_growth_mb": rounded(growth),
        "encode_chunk_s": chunk_s,
        "skipped": skipped,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
