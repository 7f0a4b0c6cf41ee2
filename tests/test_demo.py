"""The one-command demo, shortened: the same path as ``bash scripts/demo.sh`` on a tiny corpus and model.

One module-scoped run does the work (3 eSpeak NG speakers x 6 utterances, a few-thousand-weight
model, 4 steps): it is interrupted by SIGINT at step 2 (what Ctrl-C does), then run again,
which resumes and finishes. The tests check what that left behind, then rerun it through the
CLI to check that nothing is redone.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
from typing import Any

import pytest
import soundfile as sf
from typer.testing import CliRunner

from vqspeech.checkpoint import load_checkpoint
from vqspeech.demo import (
    AUDIO,
    DATA,
    EVAL_JSON,
    REPORT,
    RUN,
    TOKENS,
    DemoResult,
    SilentDemoCallback,
    run_demo,
)
from vqspeech.describe import describe_tokens
from vqspeech.errors import ConfigError
from vqspeech.train import StepMetrics
from vqspeech_cli.main import app

#: The demo recipe shrunk (same spectrogram decoder family): trains 4 steps in about a second.
TINY_DEMO = [
    "model.encoder.channels=16",
    "model.encoder.res_dilations=[1, 2]",
    "model.quantizer.dim=8",
    "model.quantizer.codebook_size=32",
    "model.quantizer.dead_code_steps=3",
    "model.speaker_dim=8",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
    "model.spectrogram.griffin_lim_iters=2",
    "data.segment_seconds=0.128",
    "data.valid_max_segments=4",
    "train.batch_size=2",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.eval_every=1000",
    "train.checkpoint_every=1000",
]
SIZE: dict[str, Any] = dict(
    steps=4, speakers=3, utterances=6, overrides=TINY_DEMO, engines=("espeak",), max_utterances=2
)
CONVERSIONS = 2
CLI_ARGS = [
    "--steps", "4", "--speakers", "3", "--utterances", "6", "--eval-utterances", "2", "--engine", "espeak",
    "--device", "cpu", *(a for o in TINY_DEMO for a in ("--set", o)),
]  # fmt: skip


class _Recorder(SilentDemoCallback):
    """Keeps the stages announced and training's start; sends SIGINT after step ``interrupt_at``."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.interrupt_at = interrupt_at
        self.stages: list[str] = []
        self.starts: list[tuple[int, int]] = []
        self.messages: list[str] = []

    def on_stage(self, stage: str, text: str) -> None:
        self.stages.append(stage)

    def on_start(self, start_step: int, total_steps: int) -> None:
        self.starts.append((start_step, total_steps))

    def on_step(self, metrics: StepMetrics) -> None:
        if metrics.step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    def on_message(self, text: str) -> None:
        self.messages.append(text)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, DemoResult, _Recorder]:
    """(the interrupted run, the resumed and finished run, the latter's recorder)."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    interrupted = run_demo(out, device="cpu", callback=_Recorder(interrupt_at=2), **SIZE)
    recorder = _Recorder()
    finished = run_demo(out, device="cpu", callback=recorder, **SIZE)
    return interrupted, finished, recorder


def _uris(text: str, kind: str) -> list[str]:
    return re.findall(rf'src="data:{re.escape(kind)};base64,([A-Za-z0-9+/=]+)"', text)


def test_ctrl_c_in_training_stops_resumably_and_a_rerun_finishes(demo) -> None:
    interrupted, finished, recorder = demo
    assert interrupted.interrupted and interrupted.step == 2 and interrupted.report is None
    assert not finished.interrupted and finished.step == 4
    assert recorder.starts == [(2, 4)]  # resumed, not restarted
    assert recorder.stages == ["synth", "train", "evaluate", "tokens", "report"]
    assert finished.reused == ("synth",)
    assert not any("--resume" in m for m in recorder.messages)
    assert load_checkpoint(finished.checkpoint).training["step"] == 4


def test_the_report_is_self_contained_with_every_clip(demo) -> None:
    _, finished, _ = demo
    assert finished.report == finished.out_dir / REPORT
    text = finished.report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text
    clips = _uris(text, "audio/wav")
    assert len(clips) == SIZE["max_utterances"] * (2 + CONVERSIONS)
    audio, rate = sf.read(io.BytesIO(base64.b64decode(clips[0])))
    assert rate == 16000 and audio.shape[0] > 8000  # a real utterance, not an empty file
    # a spectrogram per utterance, the codebook histogram, the training curves
    assert len(_uris(text, "image/png")) == SIZE["max_utterances"] + 2
    assert "trained for 4 steps" in text and "held-out STOI" in text


def test_eval_json_tokens_and_wavs_are_on_disk(demo) -> None:
    _, finished, _ = demo
    out = finished.out_dir
    evaluation = json.loads((out / EVAL_JSON).read_text())
    assert 0.0 <= evaluation["reconstruction"]["stoi"] <= 1.0
    assert len(evaluation["codes"]["code_counts"]) == 32
    assert 0.0 <= evaluation["conversion"]["target_rate"] <= 1.0
    assert len(evaluation["samples"]) == SIZE["max_utterances"]
    for sample in evaluation["samples"]:
        assert len(sample["conversions"]) == CONVERSIONS
        for rel in [sample["orig"], sample["recon"], *sample["conversions"].values()]:
            assert (out / AUDIO / rel).is_file()
    assert [a.aim.label for a in finished.aims] and finished.metrics == evaluation
    tokens = sorted((out / TOKENS).rglob("*.vqt"))
    assert len(tokens) == SIZE["max_utterances"]
    info = describe_tokens(tokens[0])
    assert info.header.speaker == tokens[0].parent.name and info.header.codebook_size == 32


def test_a_rerun_through_the_cli_reuses_everything(demo) -> None:
    _, finished, _ = demo
    out = finished.out_dir
    watched = [out / RUN / "last.pt", out / EVAL_JSON, next((out / DATA).rglob("*.flac"))]
    before = [p.stat().st_mtime_ns for p in watched]
    result = CliRunner().invoke(app, ["demo", str(out), *CLI_ARGS])
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in watched] == before  # no resynthesis, training, evaluation
    assert "reusing" in result.output and "report:" in result.output
    assert result.output.rstrip().splitlines()[-1] == str(out / REPORT)  # the path, on stdout


def test_other_settings_in_the_same_folder_are_refused(demo) -> None:
    _, finished, _ = demo
    with pytest.raises(ConfigError, match="--speakers 3 --utterances 6"):
        run_demo(finished.out_dir, **{**SIZE, "speakers": 4})
    with pytest.raises(ConfigError, match="--set"):
        run_demo(finished.out_dir, **{**SIZE, "overrides": [*TINY_DEMO, "train.lr=0.01"]})
    result = CliRunner().invoke(app, ["demo", str(finished.out_dir), *CLI_ARGS, "--speakers", "5"])
    assert result.exit_code == 1 and "pick another folder" in result.output
