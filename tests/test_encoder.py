"""The strided encoder: 64x downsampling, the documented receptive field, hop-equivariance."""

from __future__ import annotations

import pytest
import torch

from vqspeech.config import EncoderConfig, load_recipe
from vqspeech.nn.encoder import Encoder


def _support(encoder: Encoder, length: int, frame: int, trials: int = 4) -> torch.Tensor:
    """Input positions whose value can change latent ``frame`` (union over random inputs)."""
    hit = torch.zeros(length, dtype=torch.bool)
    for seed in range(trials):
        torch.manual_seed(seed)
        audio = torch.randn(1, length, requires_grad=True)
        encoder(audio)[0, :, frame].sum().backward()
        hit |= audio.grad[0] != 0
    return hit


@pytest.mark.parametrize(
    "config",
    [
        EncoderConfig(channels=16),
        EncoderConfig(channels=16, n_downsample=4, kernel_size=6, res_kernel_size=5, res_dilations=(1, 3)),
        EncoderConfig(channels=16, res_dilations=()),
    ],
)
def test_receptive_field_is_the_documented_number(config: EncoderConfig) -> None:
    torch.manual_seed(0)
    encoder = Encoder(config, dim=8)
    hop = config.hop_length
    frames = 2 * (config.receptive_field // hop) + 8
    frame = frames // 2
    support = _support(encoder, frames * hop, frame)
    positions = support.nonzero().squeeze(1)
    width = int(positions.max() - positions.min() + 1)
    assert width == config.receptive_field
    assert int(support.sum()) == width  # contiguous
    # non-causal: the latent sees samples after its own frame as well as before it
    assert positions.max() > (frame + 1) * hop and positions.min() < frame * hop


def test_paper_encoder_downsamples_64x() -> None:
    config = load_recipe("paper").model
    encoder = Encoder(config.encoder, dim=config.quantizer.dim)
    out = encoder(torch.zeros(2, 64 * 10))
    assert out.shape == (2, config.quantizer.dim, 10)
    with pytest.raises(ValueError, match="multiple of hop_length"):
        encoder(torch.zeros(1, 64 * 10 + 1))


def test_shifting_the_input_by_one_hop_shifts_the_latents_by_one_frame() -> None:
    torch.manual_seed(0)
    config = EncoderConfig(channels=16, res_dilations=(1, 2))
    encoder = Encoder(config, dim=8).eval()
    hop = config.hop_length
    audio = torch.randn(1, 40 * hop)
    shifted = torch.cat([torch.randn(1, hop), audio[:, :-hop]], dim=1)
    with torch.no_grad():
        a, b = encoder(audio), encoder(shifted)
    margin = config.receptive_field // hop + 1  # frames touched by the zero padding at either edge
    torch.testing.assert_close(a[..., margin:-margin], b[..., margin + 1 : -margin + 1], atol=1e-5, rtol=1e-5)
