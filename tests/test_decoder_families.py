"""The decoder-family protocol (vqspeech.decoders): a new family is one module plus one registration.

``ToyFamily`` below is such a module, written here and nowhere else: it trains through
``VQVAE.forward``, decodes through ``VQVAE.decode``/``iter_decode`` and the CLI, is configured
from recipes under ``model.families.toy``, and ``vqspeech info`` describes it, with no change to
the model. The registry is restored after each test, so other tests see the built-ins only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from helpers import SPEAKERS, make_checkpoint, tiny_recipe, tone, write_tone
from torch import Tensor, nn
from typer.testing import CliRunner

import vqspeech.config
import vqspeech.decoders.base
from vqspeech.checkpoint import load_checkpoint, model_fingerprint, save_checkpoint
from vqspeech.config import ModelConfig, decoder_families, load_recipe, recipe_from_dict
from vqspeech.decoders import DecoderFamily, FamilyLoss, Lookup, get_family, register
from vqspeech.errors import ConfigError
from vqspeech.model import VQVAE
from vqspeech.recipe_io import to_dict
from vqspeech_cli.main import app

# --- the whole toy family: config, module, family ------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    """Each latent frame -> ``hop_length`` samples through one linear map, scaled by ``gain``."""

    gain: float = 0.5


class ToyDecoder(nn.Module):
    """``z_q [B, D, F]`` + voice ``[B, S]`` -> audio ``[B, F * hop_length]``, frame by frame."""

    def __init__(self, config: ToyConfig, cond_dim: int, speaker_dim: int, hop_length: int) -> None:
        super().__init__()
        self.gain = config.gain
        self.frame = nn.Conv1d(cond_dim + speaker_dim, hop_length, 1)

    def forward(self, z_q: Tensor, voice: Tensor) -> Tensor:
        x = torch.cat([z_q, voice[:, :, None].expand(-1, -1, z_q.shape[2])], dim=1)
        return (self.gain * torch.tanh(self.frame(x))).transpose(1, 2).flatten(1)


class ToyFamily(DecoderFamily):
    name = "toy"
    config_class = ToyConfig
    summary = "a test's linear frames"

    def build(self, config: ModelConfig) -> nn.Module:
        return ToyDecoder(
            config.family_config(self.name), config.quantizer.dim, config.speaker_dim, config.hop_length
        )

    def loss(self, module: nn.Module, audio: Tensor, z_q: Tensor, voice: Tensor) -> FamilyLoss:
        predicted = module(z_q, voice)
        return FamilyLoss(F.l1_loss(predicted, audio), predicted)

    def iter_decode(
        self,
        module: nn.Module,
        codes: Tensor,
        voice: Tensor,
        lookup: Lookup,
        *,
        step: int,
        temperature: float,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Iterator[Tensor]:
        for start in range(0, codes.shape[1], step):
            yield module(lookup(codes[:, start : start + step]), voice)

    def receptive_field(self, config: ModelConfig) -> int:
        return config.hop_length  # one latent frame's samples


# -------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> DecoderFamily:
    """The toy family registered for one test (the registries are restored afterwards)."""
    monkeypatch.setattr(vqspeech.decoders.base, "_REGISTRY", dict(vqspeech.decoders.base._REGISTRY))
    monkeypatch.setattr(vqspeech.config, "_FAMILY_CONFIGS", dict(vqspeech.config._FAMILY_CONFIGS))
    return register(ToyFamily())  # the one registration line a new family needs


def toy_model(*extra: str) -> tuple[VQVAE, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    recipe = tiny_recipe(len(SPEAKERS), "model.decoders=[toy, wavenet]", *extra)
    audio = torch.stack([torch.from_numpy(tone(0.128, f0=f0, seed=i)) for i, f0 in enumerate((110, 230))])
    return VQVAE(recipe.model), audio, torch.tensor([0, 2])


def test_the_built_in_families_are_registered_in_order() -> None:
    assert decoder_families()[:3] == ("wavenet", "spectrogram", "vocos")
    assert get_family("spectrogram").receptive_field(load_recipe("demo").model) == load_recipe(
        "demo"
    ).model.spectrogram.receptive_field(64)
    with pytest.raises(ConfigError, match="unknown decoder family 'toy'; known: wavenet, spectrogram, vocos"):
        get_family("toy")
    with pytest.raises(
        ConfigError, match=r"model\.decoders must list distinct families from wavenet, spectrogram, vocos"
    ):
        load_recipe("demo", ["model.decoders=[toy]"])


def test_a_registered_family_trains_through_the_model(toy: DecoderFamily) -> None:
    model, audio, speakers = toy_model("model.families.toy.gain=0.8")
    assert list(model.decoders) == ["wavenet", "toy"]  # registration order: state_dict keys stay put
    assert any(key.startswith("decoders.toy.frame.") for key in model.state_dict())
    out = model(audio, speakers)
    assert set(out.decoder_losses) == {"wavenet", "toy"}
    torch.testing.assert_close(
        out.reconstruction_loss, out.decoder_losses["wavenet"] + out.decoder_losses["toy"]
    )
    assert out.predictions["toy"].shape == audio.shape
    assert out.predictions["toy"].abs().max() <= 0.8  # its config reached it: gain * tanh
    out.loss.backward()
    assert model.decoders["toy"].frame.weight.grad is not None
    assert model.encoder.out.weight.grad is not None and model.encoder.out.weight.grad.abs().sum() > 0

    optimizer = torch.optim.Adam(model.decoders["toy"].parameters(), lr=1e-2)
    first = float(out.decoder_losses["toy"].detach())
    for _ in range(5):
        optimizer.zero_grad()
        model(audio, speakers).decoder_losses["toy"].backward()
        optimizer.step()
    assert float(model(audio, speakers).decoder_losses["toy"].detach()) < first


def test_a_registered_family_decodes_in_chunks_and_by_default(toy: DecoderFamily) -> None:
    model, audio, speakers = toy_model()
    model.eval()
    codes = model.encode(audio)  # [2, 32]
    whole = model.decode(codes, speakers)  # toy is the first listed: the default
    assert whole.shape == (2, codes.shape[1] * 64)
    torch.testing.assert_close(whole, model.decode(codes, speakers, decoder="toy"), rtol=0, atol=0)
    direct = model.decoders["toy"](model.quantizer.lookup(codes), model.speaker_vector(speakers))
    torch.testing.assert_close(whole, direct, rtol=0, atol=0)
    chunks = list(model.iter_decode(codes, speakers, chunk_frames=5, decoder="toy"))
    assert [c.shape[1] for c in chunks] == [5 * 64] * 6 + [2 * 64]
    torch.testing.assert_close(torch.cat(chunks, dim=1), whole)
    assert not torch.equal(whole, model.decode(codes, speakers, decoder="wavenet", temperature=0.0))


def test_a_registered_family_round_trips_a_checkpoint_and_info_describes_it(
    toy: DecoderFamily, tmp_path: Path
) -> None:
    path = make_checkpoint(
        tmp_path / "toy.pt", extra=["model.decoders=[toy, wavenet]", "model.families.toy.gain=0.3"]
    )
    ckpt = load_checkpoint(path)
    assert ckpt.recipe.model.family_config("toy") == ToyConfig(gain=0.3)
    assert toy.describe(ckpt.recipe.model) == {
        "family": "toy",
        "summary": "a test's linear frames",
        "receptive_field": 64,
        "receptive_field_ms": 4.0,
        "config": {"gain": 0.3},
    }
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["decoder"] == "toy" and info["decoders"] == ["toy", "wavenet"]
    assert info["decoder_receptive_field"] == 64 and info["decoder_receptive_field_ms"] == 4.0
    assert info["parameters"]["decoder_toy"] == sum(
        p.numel() for p in ckpt.build_model().decoders["toy"].parameters()
    )

    wav = write_tone(tmp_path / "in.wav", 0.2)
    result = runner.invoke(
        app,
        [
            "convert",
            str(wav),
            "-m",
            str(path),
            "-s",
            "s02",
            "--decoder",
            "toy",
            "-o",
            str(tmp_path / "out.wav"),
        ],
    )
    assert result.exit_code == 0, result.output
    decoded, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(decoded) == 3200 and 0 < abs(decoded).max() <= 0.3 + 1e-4


def test_family_settings_are_checked_like_any_recipe_key(toy: DecoderFamily) -> None:
    with pytest.raises(ConfigError, match=r"unknown key model\.families\.toy\.width; known keys: gain"):
        load_recipe("demo", ["model.decoders=[toy]", "model.families.toy.width=3"])
    with pytest.raises(ConfigError, match=r"model\.families\.toy\.gain: expected a number"):
        load_recipe("demo", ["model.decoders=[toy]", "model.families.toy.gain=loud"])
    with pytest.raises(
        ConfigError, match=r"model\.families is for registered families; configure wavenet in model\.decoder,"
    ):
        load_recipe("demo", ["model.families.spectrogram.channels=8"])
    assert load_recipe("demo", ["model.decoders=[toy]"]).model.family_config("toy") == ToyConfig()


def test_built_in_models_keep_their_fingerprint_without_the_families_section(tmp_path: Path) -> None:
    """A checkpoint written before ``model.families`` existed lacks the key: same model, same fingerprint."""
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "m.pt"))
    saved = to_dict(ckpt.recipe)
    assert saved["model"].pop("families") == {}
    old = recipe_from_dict(saved)
    assert old == ckpt.recipe
    assert model_fingerprint(old, ckpt.model_state) == ckpt.fingerprint
    path = save_checkpoint(tmp_path / "again.pt", ckpt.build_model(), old, ckpt.speakers)
    assert load_checkpoint(path).fingerprint == ckpt.fingerprint
