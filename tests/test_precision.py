"""Decoding precision (issue 16's decode speed): the decoder network in bfloat16 where it is native."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_checkpoint, tiny_recipe, voiced_harmonic_model
from typer.testing import CliRunner

from vqspeech.codec import Codec
from vqspeech.device import autocast, native_bfloat16, resolve_precision
from vqspeech.errors import ConfigError
from vqspeech.model import VQVAE
from vqspeech.vocoder import stft_magnitude
from vqspeech_cli.main import app

CPU = torch.device("cpu")
#: A tiny spectrogram model with the harmonic vocoder, for checkpoints the CLI loads.
HARMONIC = (
    "model.decoders=[spectrogram]",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
    "model.spectrogram.vocoder=harmonic",
)


@pytest.mark.parametrize("native", [False, True])
def test_auto_is_bfloat16_exactly_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert native_bfloat16(CPU) is native
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    # the explicit names mean what they say on any CPU
    assert resolve_precision("float32", CPU) == torch.float32
    assert resolve_precision("bfloat16", CPU) == torch.bfloat16


def test_an_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="float16"):
        resolve_precision("float16", CPU)


def test_bfloat16_decoding_is_float32_audio_close_to_float32_decoding() -> None:
    model = voiced_harmonic_model()
    codes = torch.randint(0, 16, (1, 300), generator=torch.Generator().manual_seed(1))
    speaker = torch.tensor([0])
    exact = model.decode(codes, speaker, generator=torch.Generator().manual_seed(0))
    fast = model.decode(codes, speaker, generator=torch.Generator().manual_seed(0), dtype=torch.bfloat16)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert not torch.equal(fast, exact)  # the network did compute in bfloat16
    # the same sound: log spectra within a fraction of a dB on average
    a, b = (torch.log10(stft_magnitude(x, 512, 128).clamp(min=1e-4)) for x in (exact, fast))
    assert float(exact.square().mean()) > 1e-4
    assert float((a - b).abs().mean()) < 0.02  # 0.2 dB


def test_decoding_leaves_autocast_off_between_chunks() -> None:
    """The network's autocast must not outlive its call: the chunks are yielded to code that
    runs on the same thread (a training step, another model)."""
    model = voiced_harmonic_model()
    codes = torch.randint(0, 16, (1, 300))
    for _ in model.iter_decode(codes, torch.tensor([0]), chunk_frames=64, dtype=torch.bfloat16):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")


def test_the_wavenet_samples_in_float32_whatever_it_is_asked() -> None:
    # each sample feeds the next: rounding would compound, so the family ignores bfloat16
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(2).model).eval()
    codes = torch.randint(0, 16, (1, 12))
    runs = [
        model.decode(codes, torch.tensor([1]), generator=torch.Generator().manual_seed(3), dtype=dtype)
        for dtype in (torch.float32, torch.bfloat16)
    ]
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)


def test_codec_load_resolves_the_precision(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert Codec.load(ckpt, "cpu", precision="float32").decode_dtype == torch.float32
    assert Codec.load(ckpt, "cpu", precision="bfloat16").decode_dtype == torch.bfloat16
    assert Codec.load(ckpt, "cpu").decode_dtype == resolve_precision("auto", CPU)


def test_the_cli_takes_a_precision_and_refuses_a_bad_one(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt", extra=HARMONIC)
    wav = tmp_path / "x.wav"
    t = np.arange(8000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16000)
    runner = CliRunner()
    outs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.wav"
        args = ["convert", str(wav), "-m", str(ckpt), "--speaker", "s02", "-o", str(out), "-q"]
        result = runner.invoke(app, [*args, "--precision", precision])
        assert result.exit_code == 0, result.output
        outs[precision] = sf.read(out)[0]
    assert outs["float32"].shape == outs["bfloat16"].shape == (8000,)
    bad = runner.invoke(app, ["convert", str(wav), "-m", str(ckpt), "--speaker", "s02", "-o", "-",
                              "--precision", "half"])  # fmt: skip
    assert bad.exit_code != 0
    assert "unknown precision 'half'" in bad.output
    assert "Traceback" not in bad.output
