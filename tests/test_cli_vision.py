"""The vision recipes through the same commands as speech: train, prior train, eval, sample."""

from __future__ import annotations

import json
from pathlib import Path

from test_vision_image import TINY as TINY_IMAGE
from test_vision_video import TINY as TINY_VIDEO
from typer.testing import CliRunner

from vqspeech.checkpoint import load_payload
from vqspeech_cli.main import app


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--device", "cpu"] if args[0] != "sample" else list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _sets(overrides: list[str], prefix: tuple[str, ...] = ()) -> list[str]:
    return [a for o in overrides if not prefix or o.startswith(prefix) for a in ("--set", o)]


def test_digits_through_train_prior_eval_and_sample(tmp_path: Path) -> None:
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    _run("train", "digits", "--out", str(vq), "--steps", "2", "-q", *_sets(TINY_IMAGE))
    assert load_payload(vq / "last.pt", ("image-vqvae",))["training"]["step"] == 2
    # the prior's settings may change when it is trained; the VQ-VAE's may not
    _run("prior", "train", "-m", str(vq / "last.pt"), "--out", str(prior), "--steps", "2", "-q")
    assert load_payload(prior / "last.pt", ("image-prior",))["training"]["step"] == 2
    refused = CliRunner().invoke(
        app,
        [
            "prior",
            "train",
            "-m",
            str(vq / "last.pt"),
            "--out",
            str(tmp_path / "p2"),
            "--set",
            "model.channels=8",
        ],
    )
    assert refused.exit_code == 1 and "only prior.* and prior_train.*" in refused.output

    report = json.loads(
        _run("eval", "-m", str(vq / "last.pt"), "--prior", str(prior / "last.pt"), "--json", "-")
    )
    assert report["prior_kind"] == "pixelcnn"
    assert abs(report["total"] - report["reconstruction"] - report["prior"]) < 1e-9
    uniform = json.loads(_run("eval", "-m", str(vq / "last.pt"), "--json", "-"))
    assert uniform["prior_kind"] == "uniform" and uniform["reconstruction"] == report["reconstruction"]

    described = CliRunner().invoke(app, ["info", "--json", str(vq / "last.pt"), str(prior / "last.pt")])
    assert described.exit_code == 0, described.output
    vq_info, prior_info = json.loads(described.output)
    assert (vq_info["kind"], prior_info["kind"]) == ("image-vqvae", "image-prior")
    assert prior_info["vqvae_fingerprint"] == vq_info["fingerprint"] and prior_info["training_step"] == 2

    out = tmp_path / "grid.png"
    _run(
        "sample", "-m", str(vq / "last.pt"), "--prior", str(prior / "last.pt"), "-o", str(out), "--count", "4"
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    wrong = CliRunner().invoke(
        app,
        [
            "sample",
            "-m",
            str(vq / "last.pt"),
            "--prior",
            str(prior / "last.pt"),
            "-o",
            str(tmp_path / "x.wav"),
        ],
    )
    assert wrong.exit_code == 1 and ".png" in wrong.output


def test_video_rollout_through_sample(tmp_path: Path) -> None:
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    _run("train", "video", "--out", str(vq), "--steps", "2", "-q", *_sets(TINY_VIDEO))
    _run("prior", "train", "-m", str(vq / "last.pt"), "--out", str(prior), "--steps", "2", "-q")
    gif = tmp_path / "roll.gif"
    text = _run(
        "sample",
        "-m",
        str(vq / "last.pt"),
        "--prior",
        str(prior / "last.pt"),
        "-o",
        str(gif),
        "--frames",
        "3",
    )
    assert "3 frames rolled out" in text
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a") and gif.with_suffix(".png").is_file()


def test_speech_commands_still_ask_for_what_speech_needs(tmp_path: Path) -> None:
    no_data = CliRunner().invoke(app, ["train", "demo", "--out", str(tmp_path / "run")])
    assert no_data.exit_code == 1 and "need --data" in no_data.output
    missing = CliRunner().invoke(app, ["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")])
    assert missing.exit_code == 1 and "nope.yaml" in missing.output
