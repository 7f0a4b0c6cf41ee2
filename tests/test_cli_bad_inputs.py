"""Bad inputs to encode / decode / convert: one clear stderr line per input, the right exit code,
the other inputs still processed, and nothing half-written (outputs appear whole or not at all)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_checkpoint, write_tone
from typer.testing import CliRunner

from vqspeech.tokens import load_tokens
from vqspeech_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def errors(stderr: str) -> dict[str, str]:
    """``{input name: reason}`` from the ``error: NAME: reason`` lines (one per failed input)."""
    lines = [line.removeprefix("error: ") for line in stderr.splitlines() if line.startswith("error: ")]
    out = {}
    for line in lines:
        name, _, reason = line.partition(": ")
        assert Path(name).exists() or "no such" in reason or "cannot read" in reason, line
        out[Path(name).name] = reason
    assert len(out) == len(lines)
    return out


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


@pytest.fixture
def bad_audio(tmp_path: Path) -> Path:
    """A folder of audio inputs, most of them broken, plus two good ones (one pure silence)."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_tone(folder / "good.wav", 0.1)
    sf.write(folder / "silence.wav", np.zeros(1600, np.float32), 16000)
    (folder / "empty.wav").write_bytes(b"")
    sf.write(folder / "zero.wav", np.zeros(0, np.float32), 16000)  # a valid header, no samples
    (folder / "text.wav").write_bytes(b"this is not audio at all, just some bytes\n" * 10)
    nan = np.full(800, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full(800, 0.1, np.float32)
    inf[5] = np.inf
    sf.write(folder / "inf.flac.wav", inf, 16000, subtype="FLOAT")
    good = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(good[: len(good) // 3])
    return folder


def test_encode_reports_each_bad_input_and_does_the_rest(bad_audio: Path, tmp_path: Path, ckpt: Path) -> None:
    missing = tmp_path / "missing.wav"
    code, err = run("encode", bad_audio, missing, "-m", ckpt, "-o", tmp_path / "out", "-q")
    assert code == 1
    reasons = errors(err)
    assert set(reasons) == {"empty.wav", "zero.wav", "text.wav", "nan.wav", "inf.flac.wav", "missing.wav"} | (
        {"truncated.wav"} if "truncated.wav" in reasons else set()
    )
    assert "no such audio file" in reasons["missing.wav"]
    assert "empty" in reasons["empty.wav"]
    assert "no samples" in reasons["zero.wav"]
    assert "not a readable audio file" in reasons["text.wav"]
    assert "NaN or infinite" in reasons["nan.wav"] and "NaN or infinite" in reasons["inf.flac.wav"]
    assert len(err.strip().splitlines()) == len(reasons)  # -q: only the error lines
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "good.vqt" in made and "silence.vqt" in made  # pure silence works
    assert load_tokens(tmp_path / "out" / "silence.vqt").header.n_frames == 25
    assert all(name[:-4] + ".wav" not in reasons for name in made)
    assert not leftovers(tmp_path / "out")


def test_convert_reports_bad_inputs_too(bad_audio: Path, tmp_path: Path, ckpt: Path) -> None:
    code, err = run("convert", bad_audio / "good.wav", bad_audio / "nan.wav", bad_audio / "silence.wav",
                    "-m", ckpt, "-s", "s02", "-o", tmp_path / "out", "-q")  # fmt: skip
    assert code == 1 and list(errors(err)) == ["nan.wav"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav", "silence.wav"]
    assert sf.info(tmp_path / "out" / "silence.wav").frames == 1600


def test_bad_token_files(tmp_path: Path, ckpt: Path) -> None:
    write_tone(tmp_path / "s01" / "a.wav", 0.2)
    assert run("encode", tmp_path / "s01" / "a.wav", "-m", ckpt, "-o", tmp_path / "tok" / "good.vqt")[0] == 0
    data = (tmp_path / "tok" / "good.vqt").read_bytes()
    (tmp_path / "tok" / "truncated.vqt").write_bytes(data[:-9])
    flipped = bytearray(data)
    flipped[-6] ^= 0x10
    (tmp_path / "tok" / "corrupt.vqt").write_bytes(bytes(flipped))
    (tmp_path / "tok" / "empty.vqt").write_bytes(b"")
    (tmp_path / "tok" / "audio.vqt").write_bytes((tmp_path / "s01" / "a.wav").read_bytes())
    code, err = run(
        "decode", tmp_path / "tok", tmp_path / "nope.vqt", "-m", ckpt, "-o", tmp_path / "out", "-q"
    )
    assert code == 1
    reasons = errors(err)
    assert set(reasons) == {"truncated.vqt", "corrupt.vqt", "empty.vqt", "audio.vqt", "nope.vqt"}
    assert "truncated" in reasons["truncated.vqt"]
    assert "checksum" in reasons["corrupt.vqt"]
    assert "empty" in reasons["empty.vqt"]
    assert "not a vqspeech token file" in reasons["audio.vqt"]
    assert "cannot read" in reasons["nope.vqt"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.wav"]
    assert not leftovers(tmp_path / "out")


def test_missing_or_corrupt_checkpoint_stops_before_any_input(tmp_path: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.1)
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    for model in (tmp_path / "none.pt", tmp_path / "bad.pt"):
        for args in (["encode", wav], ["convert", wav, "-s", "s01"], ["decode", tmp_path / "x.vqt"]):
            code, err = run(*args, "-m", model, "-o", f"{tmp_path / 'out'}/")
            assert code == 1, err
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
            assert str(model) in err
            assert not (tmp_path / "out").exists()
    code, err = run("speakers", "-m", tmp_path / "none.pt")
    assert code == 1 and "does not exist" in err


def test_output_folder_that_cannot_be_written(tmp_path: Path, ckpt: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.1)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    code, err = run("encode", wav, "-m", ckpt, "-o", f"{tmp_path / 'blocker' / 'sub'}/", "-q")
    assert code == 1
    assert "cannot write to" in err and "writable folder" in err and len(err.strip().splitlines()) == 1
    code, err = run("encode", wav, wav, "-m", ckpt, "-o", tmp_path / "blocker")
    assert code == 2  # a file given where several inputs need a folder: usage


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_output_folder(tmp_path: Path, ckpt: Path) -> None:
    wav = write_tone(tmp_path / "a.wav", 0.1)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run("encode", wav, "-m", ckpt, "-o", locked, "-q")
        assert code == 1 and "cannot write to" in err
    finally:
        locked.chmod(0o755)


def test_output_name_clash_fails_the_second_input(tmp_path: Path, ckpt: Path) -> None:
    a = write_tone(tmp_path / "x" / "same.wav", 0.1)
    b = write_tone(tmp_path / "y" / "same.wav", 0.1, f0=300)
    code, err = run("encode", a, b, "-m", ckpt, "-o", tmp_path / "out", "-q")
    assert code == 1
    assert err.count("error:") == 1 and f"error: {b}: output" in err and f"also the output of {a}" in err
    assert load_tokens(tmp_path / "out" / "same.vqt").header.num_samples == 1600


def test_empty_folder_is_reported(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "nothing").mkdir()
    code, err = run("encode", tmp_path / "nothing", "-m", ckpt, "-q")
    assert code == 1 and "no .flac/.ogg/.wav files in this folder" in err
