"""The bundled model (issue 17): ``--model`` optional, ``info`` shows its card, ``vqspeech export``.

Most tests point :func:`vqspeech.bundled.bundled_model_path` at a tiny checkpoint made in
``tmp_path`` (tests/helpers.py), so they run in every checkout. The tests at the end check the
real shipped file, ``vqspeech/models/default.pt``, and are skipped where it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import flip_weight_bytes, make_checkpoint, write_tone
from test_cli_entropy import make_prior
from typer.testing import CliRunner

from vqspeech import bundled
from vqspeech.checkpoint import load_checkpoint, save_checkpoint
from vqspeech.codec import Codec
from vqspeech.prior_checkpoint import load_prior
from vqspeech.tokens import CodedTokens, load_container, load_tokens
from vqspeech_cli.main import app

runner = CliRunner()
REPO = Path(__file__).absolute().parents[1]

CARD: dict[str, Any] = {
    "summary": "a tiny random-weight model made by the tests",
    "recipe": "recipes/speech/bundled.yaml",
    "commands": ["vqspeech train recipes/speech/bundled.yaml --data d --out runs/bundled"],
    "training": {"minutes": 2.5, "device": "1 CPU thread"},
    "figures": {"held-out engines STOI": 0.61, "bitrate": "1250 bits/s"},
    "good_at": "being small",
    "bad_at": "speech of any kind",
}


def run(*args: str | Path) -> tuple[int, str, str]:
    """Invoke the CLI in-process: (exit code, stdout, stderr). Any exception but an exit is a bug."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})  # tables unwrapped
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture
def shipped(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``tiny`` installed as the bundled model, with its card; returns its path."""
    path = tmp_path / "site" / "vqspeech" / "models" / "default.pt"
    path.parent.mkdir(parents=True)
    shutil.copyfile(tiny, path)
    card = {**CARD, "training": {**CARD["training"], "steps": 0}}
    card["fingerprint"] = load_checkpoint(path).fingerprint
    bundled.card_path(path).write_text(json.dumps(card))
    monkeypatch.setattr(bundled, "bundled_model_path", lambda: path)
    return path


@pytest.fixture
def shipped_prior(tmp_path: Path, shipped: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny random prior over ``shipped``'s codes, installed as the bundled prior."""
    path = make_prior(shipped.parent / "default-prior.pt", shipped, seed=0)
    monkeypatch.setattr(bundled, "bundled_prior_path", lambda: path)
    return path


def _samples(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="int16")
    return np.asarray(data)


# --------------------------------------------------------------------------------------------
# --model is optional: the bundled model, through the same checks as any checkpoint


def test_encode_decode_without_model_equals_with_it(tmp_path: Path, shipped: Path) -> None:
    wav = write_tone(tmp_path / "in" / "s02" / "x.wav", seconds=0.5)  # s02: the voice to decode in
    results = {}
    for label, model_args in (("bundled", []), ("explicit", ["-m", shipped])):
        out = tmp_path / label
        assert run("encode", wav, *model_args, "-o", out / "x.vqt", "-q")[0] == 0
        assert run("decode", out / "x.vqt", *model_args, "-o", out / "x.wav", "-q")[0] == 0
        results[label] = (load_tokens(out / "x.vqt"), _samples(out / "x.wav"))
    (tokens_b, audio_b), (tokens_e, audio_e) = results["bundled"], results["explicit"]
    np.testing.assert_array_equal(tokens_b.codes, tokens_e.codes)
    assert tokens_b.header.speaker == "s02"
    assert tokens_b.header.model_fingerprint == tokens_e.header.model_fingerprint
    assert tokens_b.header.model_fingerprint == load_checkpoint(shipped).fingerprint
    assert audio_b.shape == (8000,)
    np.testing.assert_array_equal(audio_b, audio_e)
    assert np.abs(audio_b).max() > 0  # decoded to something, not silence


def test_convert_and_speakers_default_to_the_bundled_model(tmp_path: Path, shipped: Path) -> None:
    wav = write_tone(tmp_path / "x.wav", seconds=0.3)
    assert run("convert", wav, "--speaker", "s02", "-o", tmp_path / "a.wav", "-q")[0] == 0
    assert run("convert", wav, "-m", shipped, "--speaker", "s02", "-o", tmp_path / "b.wav", "-q")[0] == 0
    np.testing.assert_array_equal(_samples(tmp_path / "a.wav"), _samples(tmp_path / "b.wav"))
    code, out, _ = run("speakers", "--json")
    assert code == 0
    assert [row["name"] for row in json.loads(out)] == ["s01", "s02", "s03"]


def test_prior_bundled_codes_and_decodes_without_flags(tmp_path: Path, shipped_prior: Path) -> None:
    wav = write_tone(tmp_path / "s02" / "x.wav", seconds=0.5)
    assert run("encode", wav, "-o", tmp_path / "plain.vqt", "-q")[0] == 0
    assert run("encode", wav, "--prior", "bundled", "-o", tmp_path / "coded.vqt", "-q")[0] == 0
    coded = load_container(tmp_path / "coded.vqt")
    assert isinstance(coded, CodedTokens)  # entropy-coded only when asked: plain stays the default
    assert coded.prior_fingerprint == load_prior(shipped_prior).fingerprint
    assert load_container(tmp_path / "plain.vqt").header.coding != "arithmetic"
    # decode without -m and --prior: the bundled prior; the same audio as the plain file
    for name in ("plain", "coded"):
        code, _, err = run("decode", tmp_path / f"{name}.vqt", "-o", tmp_path / f"{name}.wav", "-q")
        assert code == 0, err
    np.testing.assert_array_equal(_samples(tmp_path / "plain.wav"), _samples(tmp_path / "coded.wav"))
    # with another model named, the bundled prior is not assumed
    code, _, err = run(
        "decode", tmp_path / "coded.vqt", "-m", shipped_prior.parent / "default.pt", "-o", tmp_path / "m.wav"
    )
    assert code == 1 and "--prior" in err


def test_prior_bundled_without_one_shipped_says_so(
    tmp_path: Path, shipped: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundled, "BUNDLED_PRIOR", tmp_path / "none.pt")
    wav = write_tone(tmp_path / "x.wav", seconds=0.3)
    code, out, err = run("encode", wav, "--prior", "bundled", "-o", tmp_path / "x.vqt")
    assert code == 1 and "no prior is bundled" in err and "Traceback" not in out + err
    assert not (tmp_path / "x.vqt").exists()


def test_a_corrupted_bundled_model_is_refused(tmp_path: Path, shipped: Path) -> None:
    flip_weight_bytes(shipped)
    wav = write_tone(tmp_path / "x.wav", seconds=0.3)
    for args in (["encode", wav, "-o", tmp_path / "x.vqt"], ["speakers"], ["info"]):
        code, out, err = run(*args)
        assert code == 1, args
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert "is damaged: its contents do not match the digest" in err
        assert "Traceback" not in err + out
    assert not (tmp_path / "x.vqt").exists()


def test_no_bundled_model_says_pass_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundled, "BUNDLED_MODEL", tmp_path / "models" / "default.pt")  # absent
    wav = write_tone(tmp_path / "x.wav", seconds=0.3)
    for args in (
        ["encode", wav],
        ["decode", tmp_path / "x.vqt"],
        ["convert", wav, "--speaker", "s01"],
        ["speakers"],
        ["info"],
    ):
        code, out, err = run(*args)
        assert code == 1, args
        assert err == "error: no model is bundled with this install; pass --model CKPT (a .pt from " \
            "vqspeech train, or its run folder)\n", err  # fmt: skip
        assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]  # nothing written


def test_help_says_what_the_default_model_is() -> None:
    for command in ("encode", "decode", "convert", "speakers"):
        code, out, _ = run(command, "--help")
        assert code == 0
        assert "Default: the model bundled with vqspeech" in " ".join(out.replace("│", " ").split()), command


# --------------------------------------------------------------------------------------------
# info: the bundled model's card


def test_info_without_target_shows_the_card(shipped: Path) -> None:
    code, out, _ = run("info")
    assert code == 0
    text = " ".join(out.split())
    assert "(the bundled model)" in text
    for shown in ("held-out engines STOI", "0.61", "1250 bits/s", "being small", "speech of any kind"):
        assert shown in text
    assert "recipes/speech/bundled.yaml, 0 steps, 2.5 min" in text
    # the same file named explicitly is the bundled model too
    assert " ".join(run("info", shipped)[1].split()) == text
    described = json.loads(run("info", "--json")[1])
    assert described["bundled"] is True
    assert described["card"]["figures"] == CARD["figures"]
    assert described["card"]["fingerprint"] == described["fingerprint"]


def test_info_on_another_checkpoint_shows_no_card(tiny: Path, shipped: Path) -> None:
    described = json.loads(run("info", tiny, "--json")[1])
    assert described["bundled"] is False and described["card"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fingerprint": "0123456789abcdef"}, "the bundled model's card describes model 0123456789abcdef"),
        ({"good_at": ""}, "the model card needs 'good_at'"),
        ({"figures": {}}, "the model card needs 'figures'"),
    ],
)
def test_a_wrong_card_is_refused(shipped: Path, change: dict[str, Any], message: str) -> None:
    card_file = bundled.card_path(shipped)
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), **change}))
    code, _, err = run("info")
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_missing_card_is_refused(shipped: Path) -> None:
    bundled.card_path(shipped).unlink()
    code, _, err = run("info")
    assert code == 1 and "the bundled model has no readable card" in err and err.count("\n") == 1
    assert run("encode", "--help")[0] == 0  # encode/decode do not need the card


# --------------------------------------------------------------------------------------------
# vqspeech export


@pytest.fixture
def run_dir(tmp_path: Path, tiny: Path) -> Path:
    """A run folder whose last.pt holds the tiny model plus an optimizer state, as training leaves it."""
    ckpt = load_checkpoint(tiny)
    model = ckpt.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: state, but the same weights
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    training = {
        "step": 1234,
        "total_steps": 3000,
        "optimizer": optimizer.state_dict(),
        "rng_torch": torch.get_rng_state(),
    }
    folder = tmp_path / "runs" / "bundled"
    save_checkpoint(folder / "last.pt", model, ckpt.recipe, ckpt.speakers, training)
    return folder


def test_export_keeps_the_model_and_drops_the_optimizer(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "export" / "default.pt"
    code, _, err = run("export", run_dir, "-o", out)
    assert code == 0, err
    assert "MB" in err and str(out) in " ".join(err.split())
    source, slim = load_checkpoint(run_dir), load_checkpoint(out)
    assert slim.fingerprint == source.fingerprint
    assert slim.training == {"step": 1234}
    assert slim.speakers == source.speakers
    assert slim.recipe == source.recipe
    assert out.stat().st_size < (run_dir / "last.pt").stat().st_size
    assert [p.name for p in out.parent.iterdir()] == ["default.pt"]  # no temp file, no card
    # identical codes and decoded audio through the CLI
    wav = write_tone(tmp_path / "s01_x.wav", seconds=0.5, f0=140.0)
    for label, model in (("run", run_dir), ("slim", out)):
        assert run("encode", wav, "-m", model, "-o", tmp_path / f"{label}.vqt", "-q")[0] == 0
        assert (
            run("decode", tmp_path / f"{label}.vqt", "-m", model, "-o", tmp_path / f"{label}.wav", "-q")[0]
            == 0
        )
    np.testing.assert_array_equal(
        load_tokens(tmp_path / "run.vqt").codes, load_tokens(tmp_path / "slim.vqt").codes
    )
    np.testing.assert_array_equal(_samples(tmp_path / "run.wav"), _samples(tmp_path / "slim.wav"))
    # and the slim file decodes the run's tokens (same fingerprint), nothing forced
    assert run("decode", tmp_path / "run.vqt", "-m", out, "-o", tmp_path / "cross.wav", "-q")[0] == 0
    np.testing.assert_array_equal(_samples(tmp_path / "run.wav"), _samples(tmp_path / "cross.wav"))


def test_export_set_changes_only_how_the_copy_decodes(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "random.pt"
    code, _, err = run("export", run_dir, "-o", out, "--set", "model.spectrogram.phase_init=random")
    assert code == 0, err
    source, slim = load_checkpoint(run_dir), load_checkpoint(out)
    assert source.recipe.model.spectrogram.phase_init == "pghi"  # the demo recipe's, since issue 16
    assert slim.recipe.model.spectrogram.phase_init == "random"
    assert slim.fingerprint != source.fingerprint  # token files name the model that decodes them
    assert all(torch.equal(v, source.model_state[k]) for k, v in slim.model_state.items())
    wav = write_tone(tmp_path / "s01_x.wav", seconds=0.5, f0=140.0)
    codes = []
    for label, model in (("run", run_dir), ("slim", out)):
        assert run("encode", wav, "-m", model, "-o", tmp_path / f"{label}.vqt", "-q")[0] == 0
        codes.append(load_tokens(tmp_path / f"{label}.vqt").codes)
    np.testing.assert_array_equal(*codes)
    # anything that would need other weights is refused, and nothing is written
    for setting in ("model.quantizer.codebook_size=16", "train.lr=0.1", "model.spectrogram.phase_init=zero"):
        code, _, err = run("export", run_dir, "-o", tmp_path / "bad.pt", "--set", setting)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "bad.pt").exists()


def test_export_copies_a_prior_and_refuses_card_or_settings_for_it(tmp_path: Path, tiny: Path) -> None:
    source = make_prior(tmp_path / "prior.pt", tiny, seed=0)
    code, _, err = run("export", source, "-o", tmp_path / "slim-prior.pt")
    assert code == 0, err
    a, b = load_prior(source), load_prior(tmp_path / "slim-prior.pt")
    assert b.fingerprint == a.fingerprint and b.model_fingerprint == a.model_fingerprint
    assert all(torch.equal(v, a.state[k]) for k, v in b.state.items())
    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    for extra in (["--card", card], ["--set", "model.spectrogram.phase_init=pghi"]):
        code, _, err = run("export", source, "-o", tmp_path / "x.pt", *extra)
        assert code == 1 and "a prior is exported as it is" in err
    assert not (tmp_path / "x.pt").exists()


def test_export_writes_the_completed_card(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    out = tmp_path / "models" / "default.pt"
    assert run("export", run_dir, "-o", out, "--card", card)[0] == 0
    written = json.loads((tmp_path / "models" / "default.json").read_text())
    assert written["fingerprint"] == load_checkpoint(out).fingerprint
    assert written["training"] == {**CARD["training"], "steps": 1234}
    assert {k: v for k, v in written.items() if k not in ("fingerprint", "training")} == {
        k: v for k, v in CARD.items() if k != "training"
    }
    # what the lead does: these two files are the bundled model; info shows them
    monkeypatch.setattr(bundled, "bundled_model_path", lambda: out)
    assert bundled.bundled_card() == written
    text = " ".join(run("info")[1].split())
    assert "1,234 steps" in text and "being small" in text


def test_export_refuses_bad_cards_and_writes_nothing(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "out" / "default.pt"
    bad = tmp_path / "card.json"
    for text, message in (
        ("{not json", "the model card is not JSON"),
        (json.dumps({k: v for k, v in CARD.items() if k != "bad_at"}), "the model card needs 'bad_at'"),
        (json.dumps({**CARD, "training": {}}), "the model card needs 'training'"),
        (json.dumps({**CARD, "commands": []}), "the model card needs 'commands'"),
        (json.dumps({**CARD, "figures": {"STOI": [0.5]}}), "the model card needs 'figures'"),
    ):
        bad.write_text(text)
        code, _, err = run("export", run_dir, "-o", out, "--card", bad)
        assert code == 1 and err.count("\n") == 1 and message in err, err
        assert not out.parent.exists()


def test_export_keeps_existing_files_and_never_replaces_its_source(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "slim.pt"
    out.write_bytes(b"keep me")
    code, _, err = run("export", run_dir, "-o", out)
    assert code == 1 and "exists; pass --overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert run("export", run_dir, "-o", out, "--overwrite")[0] == 0
    assert load_checkpoint(out).training == {"step": 1234}
    before = (run_dir / "last.pt").read_bytes()
    code, _, err = run("export", run_dir, "-o", run_dir / "last.pt", "--overwrite")
    assert code == 1 and "is the checkpoint being exported" in err
    assert (run_dir / "last.pt").read_bytes() == before


def test_export_refuses_a_damaged_or_missing_source(tmp_path: Path, run_dir: Path) -> None:
    flip_weight_bytes(run_dir / "last.pt")
    code, _, err = run("export", run_dir, "-o", tmp_path / "slim.pt")
    assert code == 1 and "is damaged" in err and not (tmp_path / "slim.pt").exists()
    code, _, err = run("export", tmp_path / "nope", "-o", tmp_path / "slim.pt")
    assert code == 1 and "does not exist" in err


# --------------------------------------------------------------------------------------------
# the real shipped file (vqspeech/models/default.pt), when this checkout has it

needs_real = pytest.mark.skipif(
    not bundled.BUNDLED_MODEL.is_file(), reason="no bundled model in this checkout"
)

#: Run before the CLI in a subprocess: every socket (and name lookup) is refused, and the script
#: checks that it is before anything of vqspeech is imported.
_NO_NETWORK = """
import socket, sys

class _Refused(socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("network access attempted")

def _refuse(*args, **kwargs):
    raise OSError("network access attempted")

socket.socket = _Refused
socket.create_connection = socket.getaddrinfo = _refuse
try:
    socket.create_connection(("127.0.0.1", 9))
except OSError:
    pass
else:
    sys.exit(99)
from vqspeech_cli.main import main
sys.argv = ["vqspeech", *sys.argv[1:]]
main()
"""


def _offline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _NO_NETWORK, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@needs_real
def test_real_bundled_model_round_trips_offline_without_model(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "tone.wav", seconds=1.0)
    encoded = _offline("encode", wav, "-o", tmp_path / "tone.vqt", "-q")
    assert encoded.returncode == 0, encoded.stderr
    decoded = _offline("decode", tmp_path / "tone.vqt", "-o", tmp_path / "out.wav", "-q")
    assert decoded.returncode == 0, decoded.stderr
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and audio.shape == (16000,)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    tokens = load_tokens(tmp_path / "tone.vqt")
    assert tokens.header.model_fingerprint == bundled.bundled_card()["fingerprint"]


@needs_real
def test_real_bundled_model_matches_its_card() -> None:
    card = bundled.bundled_card()  # checks every field
    codec = Codec.load(bundled.bundled_model_path(), "cpu")  # the same checks as any checkpoint
    assert codec.fingerprint == card["fingerprint"]
    assert codec.checkpoint.training.get("step") == card["training"]["steps"]
    assert set(codec.checkpoint.training) <= {"step"}  # exported: no optimizer state shipped
    assert bundled.bundled_model_path().stat().st_size <= 25_000_000  # issue 17: at most ~25 MB
    assert (REPO / card["recipe"]).is_file()
    code, out, _ = run("info", "--json")  # the table wraps long card text at the terminal's width
    assert code == 0
    shown = json.loads(out)["card"]
    assert shown["good_at"] == card["good_at"] and shown["bad_at"] == card["bad_at"]


@pytest.mark.skipif(not bundled.BUNDLED_PRIOR.is_file(), reason="no bundled prior in this checkout")
@needs_real
def test_real_bundled_prior_fits_the_model_and_codes_offline(tmp_path: Path) -> None:
    prior = load_prior(bundled.bundled_prior_path())
    assert prior.model_fingerprint == bundled.bundled_card()["fingerprint"]
    assert set(prior.training) <= {"step"}  # exported slim
    shipped = bundled.bundled_model_path().stat().st_size + bundled.BUNDLED_PRIOR.stat().st_size
    assert shipped <= 25_000_000  # model and prior together within issue 17's ~25 MB
    wav = write_tone(tmp_path / "tone.wav", seconds=1.0)
    for name, extra in (("plain", []), ("coded", ["--prior", "bundled"])):
        done = _offline("encode", wav, *extra, "-o", tmp_path / f"{name}.vqt", "-q")
        assert done.returncode == 0, done.stderr
        done = _offline("decode", tmp_path / f"{name}.vqt", "-o", tmp_path / f"{name}.wav", "-q")
        assert done.returncode == 0, done.stderr
    assert isinstance(load_container(tmp_path / "coded.vqt"), CodedTokens)
    np.testing.assert_array_equal(_samples(tmp_path / "plain.wav"), _samples(tmp_path / "coded.wav"))
