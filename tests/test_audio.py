"""vqspeech.audio: load any format/rate/channels -> mono 16 kHz float32; clear errors; atomic save."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from vqspeech import audio as audio_module
from vqspeech.audio import is_audio_file, load_audio, resample, save_audio
from vqspeech.errors import AudioError


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.argmax(spectrum) * sample_rate / x.shape[0])


@pytest.mark.parametrize(
    ("name", "rate", "channels", "subtype"),
    [
        ("a.wav", 44100, 2, "PCM_16"),
        ("b.wav", 8000, 1, "PCM_24"),
        ("c.flac", 48000, 1, "PCM_16"),
        ("d.flac", 22050, 3, "PCM_16"),
        ("e.ogg", 22050, 2, "VORBIS"),
        ("f.wav", 16000, 1, "FLOAT"),
    ],
)
def test_load_converts_to_mono_16k_and_keeps_the_tone(
    tmp_path: Path, name: str, rate: int, channels: int, subtype: str
) -> None:
    seconds, freq = 0.5, 440.0
    mono = sine(freq, seconds, rate)
    sf.write(tmp_path / name, np.stack([mono] * channels, axis=1), rate, subtype=subtype)
    out = load_audio(tmp_path / name)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.shape[0] - math.ceil(mono.shape[0] * 16000 / rate)) <= 1
    assert abs(dominant_frequency(out, 16000) - freq) < 5.0
    # Downmixing identical channels keeps the level; lossy Vorbis only roughly.
    assert abs(float(np.abs(out).max()) - 0.5) < (0.06 if subtype == "VORBIS" else 0.02)


def test_downmix_averages_channels(tmp_path: Path) -> None:
    left = sine(300, 0.25, 16000)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), left / 2, atol=1e-6)


def test_other_target_rate_and_file_objects(tmp_path: Path) -> None:
    x = sine(1000, 0.4, 16000)
    buffer = io.BytesIO()
    save_audio(buffer, x, 16000, subtype="FLOAT")
    buffer.seek(0)
    np.testing.assert_allclose(load_audio(buffer, sample_rate=16000), x, atol=1e-7)
    buffer.seek(0)
    out = load_audio(buffer, sample_rate=8000)
    assert out.shape[0] == 3200 and abs(dominant_frequency(out, 8000) - 1000) < 10


def test_silence_is_valid(tmp_path: Path) -> None:
    sf.write(tmp_path / "quiet.wav", np.zeros(4800, np.float32), 48000)
    out = load_audio(tmp_path / "quiet.wav")
    assert out.shape == (1600,) and not out.any()


def _write_bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_samples":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "not_audio":
        path.write_text("this is a text file, not audio\n" * 20)
    elif kind == "nan":
        x = sine(440, 0.1, 16000)
        x[10] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "inf":
        x = sine(440, 0.1, 16000)
        x[-1] = np.inf
        sf.write(path, x, 16000, subtype="FLOAT")
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("missing", "no such audio file"),
        ("empty", "empty (0 bytes)"),
        ("no_samples", "holds no samples"),
        ("not_audio", "not a readable audio file"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("folder", "is not a file"),
    ],
)
def test_bad_inputs_raise_one_clear_audio_error(tmp_path: Path, kind: str, phrase: str) -> None:
    path = _write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert phrase in message and str(path) in message
    assert "\n" not in message and ";" in message  # one line, with what to do after the ';'


def test_save_writes_format_from_extension(tmp_path: Path) -> None:
    x = sine(440, 0.2, 16000)
    for name, fmt in (("x.wav", "WAV"), ("x.flac", "FLAC"), ("x.ogg", "OGG")):
        save_audio(tmp_path / name, x, 16000)
        info = sf.info(str(tmp_path / name))
        assert info.format == fmt and info.samplerate == 16000 and info.channels == 1
    assert sf.info(str(tmp_path / "x.wav")).subtype == "PCM_16"
    np.testing.assert_allclose(load_audio(tmp_path / "x.flac"), x, atol=1 / 16000)


def test_save_clips_instead_of_wrapping(tmp_path: Path) -> None:
    save_audio(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.5], np.float32), 16000)
    data, _ = sf.read(tmp_path / "loud.wav", dtype="float32")
    assert data[0] > 0.99 and data[1] <= -0.99 and abs(data[2] - 0.5) < 1e-3


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.wav"
    save_audio(target, sine(440, 0.1, 16000), 16000)
    before = target.read_bytes()
    save_audio(target, sine(880, 0.2, 16000), 16000)  # replaces on success
    assert target.read_bytes() != before and [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    before = target.read_bytes()

    def broken_write(handle, samples, sample_rate, fmt, subtype):  # type: ignore[no-untyped-def]
        handle.write(b"RIFF half a file")
        raise OSError("disk full")

    monkeypatch.setattr(audio_module, "_write", broken_write)
    with pytest.raises(OSError):
        save_audio(target, sine(440, 0.3, 16000), 16000)
    assert target.read_bytes() == before  # the old file survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # and no temp file is left


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="unknown audio extension"):
        save_audio(tmp_path / "x.mp4", np.zeros(10, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        save_audio(tmp_path / "x.wav", np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="mono"):
        save_audio(tmp_path / "x.wav", np.zeros((2, 10), np.float32), 16000)
    with pytest.raises(AudioError, match="does not exist"):
        save_audio(tmp_path / "nope" / "x.wav", np.zeros(10, np.float32), 16000)
    assert not list(tmp_path.iterdir())


def test_is_audio_file() -> None:
    assert is_audio_file("a/p225_001.wav") and is_audio_file("X.FLAC") and is_audio_file("y.ogg")
    assert not is_audio_file("a/._p225_001.wav") and not is_audio_file(".DS_Store")
    assert not is_audio_file("log.txt")


def test_resample_identity_and_length() -> None:
    x = sine(100, 1.0, 48000)
    assert resample(x, 48000, 48000) is not None and resample(x, 48000, 48000).shape == x.shape
    assert resample(x, 48000, 16000).shape == (16000,)
    with pytest.raises(AudioError):
        resample(x, 0, 16000)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(min_value=1, max_value=3000), seed=st.integers(0, 2**16))
def test_pcm16_round_trip_is_within_one_step(n: int, seed: int) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    buffer = io.BytesIO()
    save_audio(buffer, x, 16000)
    buffer.seek(0)
    y = load_audio(buffer, 16000)
    assert y.shape == x.shape
    assert float(np.abs(x - y).max()) <= 1.0 / 32768 + 1e-6
