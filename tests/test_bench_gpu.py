"""benchmarks/bench_gpu.py, the lent GPU's prepared script, run as the device runs it, at --tiny sizes on CPU.

Each test starts the script in a subprocess from the repository root with ``PYTHONPATH=.``
(on the device the project is copied, not installed) and reads its final JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"

TRAIN_KEYS = {"parameters", "batch_size", "segment_samples", "steps", "wall_s", "steps_per_s"}
TRAIN_KEYS |= {"samples_per_s", "x_real_time", "loss"}
GENERATION_KEYS = {"batch", "samples_per_utterance", "wall_s", "samples_per_s", "x_real_time"}

# What the H200 image lacks (KINDS.md) among the project's dependencies and librosa's.
ABSENT_ON_DEVICE = ("librosa", "soundfile", "soxr", "constriction", "audioread", "pooch")
BLOCKER = """\
import importlib.abc, sys
ABSENT = {absent!r}
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def run_bench(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = [str(site)] if site is not None else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*path, str(ROOT)]),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def finite_positive(row: dict[str, Any], keys: set[str]) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)


def test_tiny_run_measures_every_section_and_writes_the_same_json(tmp_path: Path) -> None:
    out = tmp_path / "device" / "gpu.json"
    proc = run_bench("--tiny", "--device", "cpu", "--out", str(out))
    result = result_of(proc)
    assert json.loads(out.read_text()) == result
    assert result["torch"] == torch.__version__ and result["device"] == "cpu" and result["device_name"]
    assert result["autocast"] is None and result["tiny"] is True
    assert result["skipped"] == {} and result["failed"] == {}
    assert set(result["train"]) == {"paper", "spectrogram", "vocos"}
    expected_decoders = {"paper": ["wavenet"], "spectrogram": ["spectrogram"], "vocos": ["vocos"]}
    for name, row in result["train"].items():
        finite_positive(row, TRAIN_KEYS)
        assert row["decoders"] == expected_decoders[name]
        assert row["steps"] == 3 and row["warmup_steps"] == 1 and row["stopped_early"] is False
        assert row["peak_memory_gib"] is None  # no GPU here
        per_step = row["batch_size"] * row["segment_samples"]
        assert row["samples_per_s"] == pytest.approx(row["steps_per_s"] * per_step)
        assert row["steps_per_s"] == pytest.approx(row["steps"] / row["wall_s"])
        assert row["x_real_time"] == pytest.approx(row["samples_per_s"] / 16000)
    assert set(result["generation"]) == {"batch1", "batch32"}
    for key, row in result["generation"].items():
        finite_positive(row, GENERATION_KEYS)
        assert key == f"batch{row['batch']}" and row["backend"] == "torch"
        assert row["samples_per_utterance"] == 512  # 32 ms at 16 kHz, whole 64-sample frames
        assert row["samples_per_s"] == pytest.approx(row["batch"] * 512 / row["wall_s"])
    finite_positive(result, {"wall_s"})
    for name in ("paper", "spectrogram", "vocos", "generation"):
        assert name in proc.stdout.split("{", 1)[0]  # the table, before the JSON line


def test_every_section_runs_without_what_the_device_image_lacks(tmp_path: Path) -> None:
    # the spectrogram and Vocos sections once needed librosa (its mel filters, now written out in
    # vqspeech.features): nothing needs carrying to the device any more
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(absent=set(ABSENT_ON_DEVICE)))
    proc = run_bench("--tiny", "--sections", "paper,spectrogram,vocos", site=tmp_path)
    result = result_of(proc)
    assert set(result["train"]) == {"paper", "spectrogram", "vocos"}
    for row in result["train"].values():
        finite_positive(row, TRAIN_KEYS)
    assert result["skipped"] == {} and result["failed"] == {}
    assert "Traceback" not in proc.stderr


def test_a_section_whose_package_is_missing_is_skipped_and_the_others_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # no section needs a package the device lacks today, so one is made to: the Vocos section's
    # training raises what importing a missing package raises
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # its sibling benchmarks, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    real = bench.run_training

    def run_training(name: str, *args: Any) -> dict[str, Any]:
        if name == "vocos":
            raise ModuleNotFoundError("No module named 'librosa'", name="librosa")
        return real(name, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(bench, "run_training", run_training)
    assert bench.main(["--tiny", "--sections", "paper,vocos"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result["train"]) == {"paper"} and result["generation"] == {}
    finite_positive(result["train"]["paper"], TRAIN_KEYS)
    assert set(result["skipped"]) == {"vocos"} and "'librosa'" in result["skipped"]["vocos"]
    assert result["failed"] == {}
    assert "vocos: skipped" in err and "Traceback" not in err


def test_the_time_budget_stops_timed_steps_early_and_skips_what_does_not_fit() -> None:
    result = result_of(run_bench("--tiny", "--sections", "paper", "--steps", "100000", "--budget-s", "3"))
    row = result["train"]["paper"]
    assert row["stopped_early"] is True and 1 <= row["steps"] < 100000
    finite_positive(row, TRAIN_KEYS)

    spent = result_of(run_bench("--tiny", "--budget-s", "0.01"))
    assert spent["train"] == {} and spent["generation"] == {}
    assert set(spent["skipped"]) == {"paper", "spectrogram", "vocos", "generation"}


def test_bad_options_are_one_line_errors() -> None:
    proc = run_bench("--tiny", "--sections", "paper,nope")
    assert proc.returncode == 2 and "--sections takes names from" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    if not torch.cuda.is_available():
        proc = run_bench("--tiny", "--device", "cuda")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "bench_gpu: error: --device cuda was asked for but no CUDA device is available; use --device cpu"
        ]
