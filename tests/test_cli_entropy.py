"""``vqspeech encode --prior`` / ``decode --prior`` / ``info`` on entropy-coded token files, in-process.

A tiny random-weight VQ-VAE (tests/helpers.py) and tiny random priors saved as real prior
checkpoints: coding is exact whatever the prior's quality, so no training is needed here.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, write_tone
from typer.testing import CliRunner

from vqspeech.checkpoint import load_checkpoint
from vqspeech.codec import Codec
from vqspeech.entropy import decode_tokens
from vqspeech.nn.prior import CodePrior
from vqspeech.prior import prior_recipe, save_prior
from vqspeech.prior_checkpoint import load_prior
from vqspeech.tokens import CodedTokens, load_container, load_tokens
from vqspeech_cli.main import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str, bytes]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr, result.stdout_bytes


def make_prior(path: Path, vqvae: Path, seed: int) -> Path:
    """A tiny random prior checkpoint for ``vqvae``'s codes (K = 32, its 3 speakers)."""
    ckpt = load_checkpoint(vqvae)
    recipe = prior_recipe(
        ["model.codebook_size=32", "model.n_speakers=3", "model.channels=16", "model.dilations=[1, 2, 4]"]
    )
    torch.manual_seed(seed)
    model = CodePrior(recipe.model)
    with torch.no_grad():
        model.out.weight.mul_(3.0)  # sharper rows, as after training
    return save_prior(path, model.eval(), recipe, ckpt.speakers, ckpt.fingerprint)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    vqvae = make_checkpoint(root / "tiny.pt")
    other = make_checkpoint(root / "other.pt", seed=1)
    return {
        "vqvae": vqvae,
        "prior": make_prior(root / "prior.pt", vqvae, seed=0),
        "prior_b": make_prior(root / "prior_b.pt", vqvae, seed=1),
        "other_prior": make_prior(root / "other_prior.pt", other, seed=0),
    }


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_encode_with_a_prior_codes_exactly_and_decodes_like_a_plain_file(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    wav = write_tone(tmp_path / "s02" / "s02_001.wav", seconds=0.5)
    vq, prior = models["vqvae"], models["prior"]
    assert run("encode", wav, "-m", vq, "-o", tmp_path / "plain.vqt", "-q")[0] == 0
    code, _, err, _ = run("encode", wav, "-m", vq, "--prior", prior, "-o", tmp_path / "coded.vqt", "-q")
    assert code == 0, err
    plain = load_tokens(tmp_path / "plain.vqt")
    coded = load_container(tmp_path / "coded.vqt")
    assert isinstance(coded, CodedTokens) and coded.header.coding == "arithmetic"
    loaded = load_prior(prior)
    assert coded.prior_fingerprint == loaded.fingerprint
    assert coded.prior_speaker == 1  # s02, the prior's speaker 1
    assert decode_tokens(coded, loaded.integer()) == plain  # the same codes and header, exactly

    for name in ("plain", "coded"):
        code, _, err, _ = run(
            "decode",
            tmp_path / f"{name}.vqt",
            "-m",
            vq,
            "--prior",
            prior,
            "-o",
            tmp_path / f"{name}.wav",
            "-q",
        )
        assert code == 0, err
    assert (tmp_path / "plain.wav").read_bytes() == (tmp_path / "coded.wav").read_bytes()

    # info reads the header without the prior and reports the coded payload's real bits
    code, out, _, _ = run("info", tmp_path / "coded.vqt", "--json")
    info = json.loads(out)
    assert code == 0 and info["coding"] == "arithmetic" and info["prior_fingerprint"] == loaded.fingerprint
    assert info["bits_per_code"] == pytest.approx(8 * len(coded.payload) / plain.header.n_frames)
    code, out, _, _ = run("info", tmp_path / "coded.vqt")
    assert code == 0 and "arithmetic" in out and loaded.fingerprint in out


def test_coded_files_refuse_a_missing_or_wrong_prior(tmp_path: Path, models: dict[str, Path]) -> None:
    wav = write_tone(tmp_path / "s01_002.wav", seconds=0.3)
    vq = models["vqvae"]
    target = tmp_path / "x.vqt"
    assert run("encode", wav, "-m", vq, "--prior", models["prior"], "-o", target, "-q")[0] == 0
    needed = load_prior(models["prior"]).fingerprint
    other = load_prior(models["prior_b"]).fingerprint

    code, _, err, _ = run("decode", target, "-m", vq, "-o", tmp_path / "a.wav", "-q")
    assert code == 1 and len(error_lines(err)) == 1, err
    assert f"entropy-coded with prior {needed}" in err and "--prior" in err and "Traceback" not in err
    code, _, err, _ = run(
        "decode", target, "-m", vq, "--prior", models["prior_b"], "-o", tmp_path / "b.wav", "-q"
    )
    assert code == 1 and len(error_lines(err)) == 1, err
    assert f"coded with prior {needed}, got {other}" in " ".join(err.split())
    assert not (tmp_path / "a.wav").exists() and not (tmp_path / "b.wav").exists()


def test_a_damaged_coded_payload_is_refused(tmp_path: Path, models: dict[str, Path]) -> None:
    wav = write_tone(tmp_path / "s01_003.wav", seconds=0.4)
    vq, prior = models["vqvae"], models["prior"]
    target = tmp_path / "x.vqt"
    assert run("encode", wav, "-m", vq, "--prior", prior, "-o", target, "-q")[0] == 0
    data = bytearray(target.read_bytes())
    data[-10] ^= 0x10  # a payload bit, with the file's CRC made valid again: only codes_crc32 can tell
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    target.write_bytes(bytes(data))
    code, _, err, _ = run("decode", target, "-m", vq, "--prior", prior, "-o", tmp_path / "x.wav", "-q")
    assert code == 1 and len(error_lines(err)) == 1 and "Traceback" not in err, err
    assert "corrupt" in err or "checksum" in err
    target.write_bytes(bytes(data[:-12]))  # truncated: the file's CRC catches it
    code, _, err, _ = run("decode", target, "-m", vq, "--prior", prior, "-o", tmp_path / "x.wav", "-q")
    assert code == 1 and ("truncated" in err or "corrupted" in err), err


def test_a_prior_of_another_model_or_a_non_vqt_format_is_refused(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    wav = write_tone(tmp_path / "a.wav", seconds=0.2)
    vq = models["vqvae"]
    code, _, err, _ = run("encode", wav, "-m", vq, "--prior", models["other_prior"], "-o", tmp_path / "a.vqt")
    assert code == 1 and "trained on the codes of model" in err and not (tmp_path / "a.vqt").exists()
    code, _, err, _ = run("encode", wav, "-m", vq, "--prior", models["prior"], "-f", "npy")
    assert code == 1 and "vqt" in err and not (tmp_path / "a.npy").exists()
    code, _, err, _ = run("encode", wav, "-m", vq, "--prior", tmp_path / "missing.pt")
    assert code == 1 and "missing.pt" in err and "Traceback" not in err


def test_batches_and_stdout_with_a_prior(tmp_path: Path, models: dict[str, Path]) -> None:
    vq, prior = models["vqvae"], models["prior"]
    inputs = [write_tone(tmp_path / "in" / f"s0{i}" / f"u{i}.wav", seconds=0.2 + 0.05 * i) for i in (1, 2, 3)]
    code, _, err, _ = run("encode", tmp_path / "in", "-m", vq, "--prior", prior, "-o", tmp_path / "tok", "-q")
    assert code == 0, err
    codec = Codec.load(vq, "cpu")
    loaded = load_prior(prior)
    for i, wav in enumerate(inputs, 1):
        coded = load_container(tmp_path / "tok" / f"s0{i}" / f"u{i}.vqt")
        assert isinstance(coded, CodedTokens)
        plain = decode_tokens(coded, loaded.integer())
        np.testing.assert_array_equal(plain.codes, codec.encode_audio(_audio(wav)))
    # one result to stdout: the same bytes as the file
    code, _, _, raw = run("encode", inputs[0], "-m", vq, "--prior", prior, "-o", "-", "-q")
    assert code == 0 and raw == (tmp_path / "tok" / "s01" / "u1.vqt").read_bytes()
    # a folder that mixes plain and coded files decodes with one --prior
    assert run("encode", inputs[0], "-m", vq, "-o", tmp_path / "tok" / "plain.vqt", "-q")[0] == 0
    code, _, err, _ = run(
        "decode", tmp_path / "tok", "-m", vq, "--prior", prior, "-o", tmp_path / "wav", "-q"
    )
    assert code == 0, err
    assert len(list((tmp_path / "wav").rglob("*.wav"))) == 4


def _audio(path: Path) -> np.ndarray:
    from vqspeech.audio import load_audio

    return load_audio(path, 16000)
