"""benchmarks/bench_bundled.py on a tiny random checkpoint (``--model``) and a second of audio.

The run starts the script as a user does, from the repository root, and reads its final JSON
line; the model-without-a-spectrogram-decoder case calls the in-process part directly.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from helpers import make_checkpoint

from vqspeech.codec import Codec

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_bundled.py"
# A small spectrogram decoder (the demo's harmonic vocoder, so the CLI's decodes never compile the
# PGHI kernel: seconds per process); the in-process part times both Griffin-Lim starts as well.
SPECTROGRAM = [
    "model.decoders=[spectrogram]",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
    "model.spectrogram.phase_init=random",
]
CLI_ROWS = {
    "encode_short",
    "encode_long",
    "decode_short",
    "decode_long",
    "decode_float32_short",
    "decode_float32_long",
}
STAGES = {
    "encoder",
    "decoder_network",
    "decoder_network_bfloat16",
    "vocoder_harmonic",
    "vocoder_random",
    "vocoder_pghi",
    "pghi_phase",
}


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def finite_positive(row: dict[str, Any], keys: set[str]) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_bundled", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_the_cli_the_stages_and_the_memory_growth(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "tiny.pt", extra=SPECTROGRAM)
    proc = run_bench("--model", str(ckpt), "--seconds", "0.5", "1", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, last = proc.stdout.strip().rsplit("\n", 1)
    result = json.loads(last)
    assert result["benchmark"] == "bench_bundled" and result["bundled"] is False
    assert result["model"] == str(ckpt) and result["fingerprint"] == Codec.load(ckpt, "cpu").fingerprint
    assert result["threads"] == 1 and result["seconds"] == [0.5, 1.0] and result["repeats"] == 1
    assert result["phase_init"] == "random" and result["skipped"] is None
    assert result["precision_auto"] in ("bfloat16", "float32")
    assert result["encode_chunk_s"] == 4096 * 64 / 16000
    cli = result["cli"]
    assert set(cli) == {"baseline", *CLI_ROWS}
    finite_positive(cli["baseline"], {"wall_s", "peak_rss_mb"})
    for name in CLI_ROWS:
        finite_positive(cli[name], {"audio_s", "wall_s", "x_real_time", "peak_rss_mb"})
        assert cli[name]["audio_s"] == (0.5 if name.endswith("short") else 1.0)
    assert set(result["stages"]) == STAGES  # the tiny model has no speaker encoder
    for row in result["stages"].values():
        finite_positive(row, {"audio_s", "best_s", "x_real_time"})
        assert row["audio_s"] == 0.5
    growth = result["memory_growth_mb"]
    assert set(growth) == {"encode", "decode"} and all(math.isfinite(v) for v in growth.values())
    for words in ("vqspeech speakers", "vqspeech decode 1 s", "vocoder pghi", "peak RSS growth, encode"):
        assert words in table


def test_a_model_without_a_spectrogram_decoder_times_the_encoder_and_says_why(tmp_path: Path) -> None:
    codec = Codec.load(make_checkpoint(tmp_path / "wavenet.pt"), "cpu")
    stages, skipped = load_script().measure_stages(codec, 0.25, 1)
    assert set(stages) == {"encoder"} and stages["encoder"]["x_real_time"] > 0
    assert skipped == "the model has no spectrogram decoder (it has: wavenet)"


def test_bad_lengths_are_usage_errors() -> None:
    proc = run_bench("--seconds", "2", "1")
    assert proc.returncode == 2 and "--seconds needs 0 < SHORT <= LONG" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
