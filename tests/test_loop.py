"""The shared training loop (vqspeech.loop.fit) on a task that is not speech, and checkpoint kinds."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from vqspeech.checkpoint import load_checkpoint, load_payload, save_payload
from vqspeech.config import TrainConfig
from vqspeech.errors import CheckpointError, ConfigError
from vqspeech.loop import EvalMetrics, SilentCallback, StepMetrics, fit
from vqspeech.runfolder import LAST


class Regression:
    """Fit y = x @ w_true with a linear layer; the batch of step s is seeded by s."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = nn.Linear(4, 1, bias=False)
        self.w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
        self.saved: list[int] = []

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(16, 4, generator=g)
        return x, x @ self.w_true.T

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        for step in range(start_step, total_steps):
            yield self._batch(step)

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        mse = torch.mean((net(x) - y) ** 2)
        return mse, {"mse": mse.detach()}

    def items(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def evaluate(self, step: int) -> dict[str, float]:
        with torch.no_grad():
            return {"weight_error": float((self.model.weight - self.w_true).abs().max())}

    def save(self, path: Path, training: dict[str, Any]) -> None:
        self.saved.append(int(training["step"]))
        save_payload(path, {"kind": "toy", "model": self.model.state_dict(), "training": training})


CONFIG = TrainConfig(lr=0.2, warmup_steps=2, eval_every=10, checkpoint_every=10, log_every=5)


class Recorder(SilentCallback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[StepMetrics] = []
        self.evals: list[EvalMetrics] = []
        self.stop_at = stop_at

    def on_step(self, metrics: StepMetrics) -> None:
        self.steps.append(metrics)
        if metrics.step == self.stop_at:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would: the loop saves and stops

    def on_eval(self, metrics: EvalMetrics) -> None:
        self.evals.append(metrics)


def test_fit_learns_logs_and_checkpoints(tmp_path: Path) -> None:
    task = Regression()
    record = Recorder()
    result = fit(task, tmp_path, CONFIG, total_steps=40, callback=record)
    assert result.step == 40 and not result.interrupted and result.checkpoint == tmp_path / LAST
    assert task.saved == [10, 20, 30, 40]  # every checkpoint_every and at the end, once
    assert [m.step for m in record.steps] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert record.steps[-1].terms["mse"] < 0.01 * record.steps[0].terms["mse"]
    assert record.steps[-1].items_per_second > 0
    assert [e.step for e in record.evals] == [10, 20, 30, 40]
    assert record.evals[-1].values["weight_error"] < record.evals[0].values["weight_error"]
    names = {line.split(",")[1] for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]}
    assert {"train/loss", "train/mse", "train/lr", "valid/weight_error"} <= names


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    whole = Regression()
    fit(whole, tmp_path / "whole", CONFIG, total_steps=30)

    first = Regression()
    stopped = fit(first, tmp_path / "split", CONFIG, total_steps=30, callback=Recorder(stop_at=20))
    assert stopped.interrupted and stopped.step == 20
    payload = load_payload(tmp_path / "split" / LAST, ("toy",))
    second = Regression(seed=123)  # fresh weights: everything must come from the checkpoint
    second.model.load_state_dict(payload["model"])
    fit(second, tmp_path / "split", CONFIG, total_steps=30, training=payload["training"])
    assert torch.equal(second.model.weight, whole.model.weight)


def test_non_finite_loss_is_an_error_and_saves_nothing(tmp_path: Path) -> None:
    class Diverging(Regression):
        def _batch(self, step: int) -> tuple[Tensor, Tensor]:
            x, y = super()._batch(step)
            return x, y * (float("inf") if step == 3 else 1.0)

    # issue 18: it used to save the step's (NaN) weights first, over the last good checkpoint
    with pytest.raises(ConfigError, match=r"loss became inf at step 4; lower train\.lr"):
        fit(Diverging(), tmp_path, TrainConfig(log_every=1), total_steps=10)
    assert not (tmp_path / LAST).exists()


def test_checkpoint_kinds_are_told_apart(tmp_path: Path) -> None:
    path = save_payload(tmp_path / "prior.pt", {"kind": "prior", "weights": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"prior over speech codes.*not a speech VQ-VAE"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is a prior over speech codes"):
        load_payload(path, ("image-vqvae",))
    assert torch.equal(load_payload(path, ("prior",))["weights"], torch.zeros(2))
    with pytest.raises(ValueError):
        save_payload(tmp_path / "x.pt", {"weights": torch.zeros(1)})
