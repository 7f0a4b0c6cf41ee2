"""``vqspeech eval`` in-process: a table, JSON to a file or stdout, one-line errors with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_checkpoint
from typer.testing import CliRunner

from vqspeech_cli.main import app

runner = CliRunner()

# The smallest evaluation that still reconstructs, converts and probes: 1 utterance, 1 conversion.
SMALL = ["--max-utterances", "1", "--conversions", "1", "--per-speaker", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli-eval") / "m.pt", speakers=("s01", "s02", "s03"))


def test_eval_writes_json_and_prints_a_table(checkpoint: Path, demo_corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", "-m", str(checkpoint), "--data", str(demo_corpus_dir), "--json", str(out), *SMALL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_utterances"] == 1 and report["conversion"]["n"] == 1
    assert report["leakage"]["n_speakers"] == 3
    assert "STOI" in result.stdout and "heard as the target" in result.stdout
    assert "[1/1]" in result.stderr  # progress goes to stderr, the table to stdout
    assert not list(tmp_path.glob(".*.tmp"))


def test_eval_json_dash_prints_only_json(checkpoint: Path, demo_corpus_dir: Path, tmp_path: Path) -> None:
    audio = tmp_path / "wavs"
    args = ["eval", "-m", str(checkpoint), "--data", str(demo_corpus_dir), "--json", "-", "-q"]
    result = runner.invoke(app, [*args, "--audio-dir", str(audio), *SMALL])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert result.stderr == ""  # --quiet: no progress
    sample = report["samples"][0]
    assert (audio / sample["orig"]).is_file() and (audio / sample["recon"]).is_file()
    assert all((audio / p).is_file() for p in sample["conversions"].values())


def test_eval_of_a_missing_checkpoint_is_one_line_and_exit_1(demo_corpus_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "-m", str(tmp_path / "nope.pt"), "--data", str(demo_corpus_dir)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()  # a progress line ("loading ..."), then the error
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "nope.pt" in errors[0] and "does not exist" in errors[0]
    assert "Traceback" not in result.output


def test_eval_on_speakers_the_model_does_not_know_is_one_line_and_exit_1(
    demo_corpus_dir: Path, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(tmp_path / "other.pt", speakers=("alice", "bob"))
    result = runner.invoke(app, ["eval", "-m", str(ckpt), "--data", str(demo_corpus_dir), "-q"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "known to the model" in lines[0] and "alice, bob" in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_eval_help_names_every_option() -> None:
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--data", "--json", "--decoder", "--max-utterances", "--conversions",
                   "--audio-dir", "--seed", "--quiet"):  # fmt: skip
        assert option in result.stdout
