"""``vqspeech info`` and the top-level CLI, in-process with typer's CliRunner."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from vqspeech import __version__
from vqspeech.checkpoint import save_checkpoint
from vqspeech.config import load_recipe
from vqspeech.model import VQVAE
from vqspeech_cli.main import app

runner = CliRunner()


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.stdout


def test_info_paper_json_has_the_papers_numbers() -> None:
    result = runner.invoke(app, ["info", "paper", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    recipe = load_recipe("paper")
    assert info["hop_length"] == 64
    assert info["codebook_size"] == 512
    assert info["sample_rate"] == 16000
    assert info["token_rate"] == 250.0
    assert info["bitrate"] == 2250.0
    assert info["encoder_receptive_field"] == recipe.model.encoder.receptive_field
    assert info["decoder_receptive_field"] == recipe.model.decoder.receptive_field
    assert info["decoder_receptive_field_ms"] == recipe.model.decoder.receptive_field / 16
    with torch.device("meta"):
        expected = sum(p.numel() for p in VQVAE(recipe.model).wavenet.parameters())
    assert info["parameters"]["decoder_wavenet"] == expected
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total")


def test_info_table_for_a_checkpoint_lists_speakers(tmp_path) -> None:
    recipe = load_recipe("demo", ["model.n_speakers=2"])
    path = save_checkpoint(
        tmp_path / "m.pt", VQVAE(recipe.model), recipe, [{"name": "alice"}, {"name": "bob"}]
    )
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "alice, bob" in result.stdout and "fingerprint" in result.stdout
    info = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert [s["name"] for s in info["speakers"]] == ["alice", "bob"]


def test_info_on_a_missing_file_is_one_line_and_exit_1(tmp_path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "nope.pt")])
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
