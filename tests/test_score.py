"""``vqspeech score`` and vqspeech.evaluation.transcode: any recordings through a model and back, scored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_checkpoint, write_tone
from typer.testing import CliRunner

from vqspeech.codec import Codec
from vqspeech.evaluation.transcode import score_recordings
from vqspeech_cli.main import app

runner = CliRunner()

SPECTROGRAM = [
    "model.decoders=[spectrogram]",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
    "model.spectrogram.n_fft=256",
    "model.spectrogram.griffin_lim_iters=4",
]


@pytest.fixture(scope="module")
def wavenet_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("score") / "wavenet.pt")


@pytest.fixture(scope="module")
def spectrogram_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("score") / "spectrogram.pt", extra=SPECTROGRAM)


@pytest.fixture
def tones(tmp_path: Path) -> list[Path]:
    return [
        write_tone(tmp_path / "rec" / "a.wav", 1.0, f0=110.0, seed=1),
        write_tone(tmp_path / "rec" / "sub" / "b.flac", 0.8, 8000, f0=220.0, seed=2),  # telephone rate
    ]


def test_one_row_per_file_and_their_mean(wavenet_ckpt: Path, tones: list[Path]) -> None:
    codec = Codec.load(wavenet_ckpt, "cpu")
    report = score_recordings(codec, tones, checkpoint=wavenet_ckpt)
    assert [f.path for f in report.files] == [str(p) for p in tones] and not report.failed
    assert [f.seconds for f in report.files] == pytest.approx([1.0, 0.8])  # 8 kHz came up to 16 kHz
    mean = report.mean
    assert mean is not None and mean.n == 2
    assert mean.stoi == pytest.approx(np.mean([f.decoded.stoi for f in report.files]))
    assert mean.mel_cepstral_distortion == pytest.approx(
        np.mean([f.decoded.mel_cepstral_distortion for f in report.files])
    )
    # no speaker encoder: each file in a table voice, chosen from the model's own speakers
    assert {f.voice for f in report.files} <= set(codec.speaker_names)
    assert "nearest table speaker" in report.voice_policy
    assert report.raw_bitrate == 250 * 5  # 16 kHz / hop 64 tokens/s, 32 codes = 5 bits
    assert report.ceiling is None and all(f.ceiling is None for f in report.files)  # WaveNet: no vocoder path
    again = score_recordings(codec, tones, checkpoint=wavenet_ckpt)
    assert again.to_dict() == report.to_dict()  # seeded: the same scores every run


def test_a_fixed_voice_and_a_speaker_encoders_own_voice(tmp_path: Path, tones: list[Path]) -> None:
    encoder = ["model.speaker_encoder.enabled=true", "model.speaker_encoder.channels=8"]
    codec = Codec.load(make_checkpoint(tmp_path / "se.pt", extra=encoder), "cpu")
    own = score_recordings(codec, tones[:1])
    assert own.files[0].voice == "own vector" and "speaker vector" in own.voice_policy
    fixed = score_recordings(codec, tones[:1], speaker="s02")
    assert fixed.files[0].voice == "s02" and "s02" in fixed.voice_policy


def test_the_copy_synthesis_ceiling_of_a_spectrogram_model(
    spectrogram_ckpt: Path, tones: list[Path], tmp_path: Path
) -> None:
    codec = Codec.load(spectrogram_ckpt, "cpu")
    out = tmp_path / "audio"
    report = score_recordings(codec, tones, audio_dir=out)
    ceiling, mean = report.ceiling, report.mean
    assert ceiling is not None and mean is not None and ceiling.n == 2
    for f in report.files:
        assert f.ceiling is not None
        # Griffin-Lim from the true magnitudes beats an untrained decoder's guesses by far
        assert f.ceiling.log_mel_distance < f.decoded.log_mel_distance
        assert f.ceiling.stoi > f.decoded.stoi + 0.2
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "001_a.ceiling.wav",
        "001_a.decoded.wav",
        "001_a.orig.wav",
        "002_b.ceiling.wav",
        "002_b.decoded.wav",
        "002_b.orig.wav",
    ]
    assert {sf.info(out / n).frames for n in names if n.startswith("001")} == {16000}


def test_cli_scores_a_folder_reports_a_broken_file_and_exits_1(
    wavenet_ckpt: Path, tones: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "rec" / "broken.wav"
    broken.write_bytes(b"RIFF but not audio")
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["score", str(tmp_path / "rec"), "-m", str(wavenet_ckpt), "--json", str(out)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.wav" in errors[0] and "not a readable audio file" in errors[0]
    report = json.loads(out.read_text())
    assert [Path(f["path"]).name for f in report["files"]] == ["a.wav", "b.flac"]
    assert [Path(f["path"]).name for f in report["failed"]] == ["broken.wav"]
    assert report["mean"]["n"] == 2 and report["n_files"] == 2
    lines = result.stdout.splitlines()
    assert any("a.wav" in line for line in lines) and any("b.flac" in line for line in lines)
    assert any("mean (2)" in line for line in lines)
    assert not list(out.parent.glob(".*.tmp"))


def test_cli_json_dash_is_strict_json_and_max_files(wavenet_ckpt: Path, tones: list[Path]) -> None:
    args = ["score", *map(str, tones), "-m", str(wavenet_ckpt), "--json", "-", "-q", "--max-files", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert report["n_files"] == 1 and report["failed"] == []
    assert report["files"][0]["decoded"]["stoi"] == pytest.approx(report["mean"]["stoi"])
    assert math.isfinite(report["raw_bitrate"]) and report["coded_bitrate"] is None
    assert set(report["extras"]) == {"pesq", "dnsmos", "speaker_similarity"}


def test_cli_refuses_an_unknown_voice_in_one_line(wavenet_ckpt: Path, tones: list[Path]) -> None:
    result = runner.invoke(app, ["score", str(tones[0]), "-m", str(wavenet_ckpt), "--speaker", "nobody"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "nobody" in result.stderr and "s01" in result.stderr
