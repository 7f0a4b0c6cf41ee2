"""Strided 1-d convolutional encoder: waveform -> latent vectors at ``sample_rate / hop_length``.

Paper section 4.3: "6 strided convolutions with stride 2 and window-size 4", so latents are
64x shorter than the waveform. A bare strided stack sees only ~190 samples (12 ms) per
latent, too little to pick out a phone, so non-causal dilated residual convolutions at the
latent rate follow; with the default dilations (1..16, kernel 3) each latent sees ~260 ms.
The exact figure is :attr:`vqspeech.config.EncoderConfig.receptive_field`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqspeech.config import EncoderConfig


class ResidualDilatedBlock(nn.Module):
    """``x + W2 relu(conv_dilated(relu(x)))``, length-preserving ("same" padding), non-causal."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """``[B, C, F] -> [B, C, F]``; ``valid`` (``[B, 1, F]`` bool, optional): zero the conv's
        input past each row's end, as the conv's own zero padding does for a row alone."""
        h = torch.relu(x)
        return x + self.proj(torch.relu(self.conv(h if valid is None else h * valid)))


class Encoder(nn.Module):
    """Waveform ``[B, T]`` (float, [-1, 1]) -> latents ``z_e`` ``[B, dim, T / hop_length]``.

    Each stride-2 conv (kernel ``kernel_size``, padding ``kernel_size // 2 - 1``) halves the
    length exactly, so ``T`` must be a multiple of ``hop_length``; callers pad (see
    :meth:`vqspeech.model.VQVAE.encode`). Frame ``f`` is centred on samples around
    ``f * hop_length``, and the network is translation-equivariant in steps of
    ``hop_length``, which is what makes chunked encoding with overlap exact.
    """

    def __init__(self, config: EncoderConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 1
        for _ in range(config.n_downsample):
            layers += [
                nn.Conv1d(
                    in_channels,
                    config.channels,
                    config.kernel_size,
                    stride=2,
                    padding=config.kernel_size // 2 - 1,
                ),
                nn.ReLU(),
            ]
            in_channels = config.channels
        self.downsample = nn.Sequential(*layers)
        self.residual = nn.Sequential(
            *(ResidualDilatedBlock(config.channels, config.res_kernel_size, d) for d in config.res_dilations)
        )
        self.out = nn.Conv1d(config.channels, dim, 1)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``[B, T]`` float waveform -> ``[B, dim, T // hop_length]`` latents.

        ``lengths`` (``[B]`` int, multiples of ``hop_length``, optional): each row's real samples,
        the rest being padding (issue 19's padded batches). Every conv then sees zeros past a
        row's end, exactly the zero padding it gives that row encoded alone, so latents
        ``[:length // hop_length]`` equal encoding the row alone; the ones past it are garbage.
        """
        if audio.dim() != 2:
            raise ValueError(f"encoder expects [B, T] audio, got shape {tuple(audio.shape)}")
        if audio.shape[-1] % self.hop_length:
            raise ValueError(
                f"audio length {audio.shape[-1]} is not a multiple of hop_length {self.hop_length}"
            )
        if lengths is None:
            x = self.downsample(audio.unsqueeze(1))
            return self.out(torch.relu(self.residual(x)))
        valid = lengths.to(audio.device)
        x = audio.unsqueeze(1)
        for layer in self.downsample:
            if isinstance(layer, nn.Conv1d):
                x = x * _mask(valid, x.shape[-1])
                valid = valid // 2
            x = layer(x)
        mask = _mask(valid, x.shape[-1])
        for block in self.residual:
            x = block(x, mask)
        return self.out(torch.relu(x))


def _mask(lengths: Tensor, size: int) -> Tensor:
    """``[B, 1, size]`` bool: True where position < that row's length."""
    return (torch.arange(size, device=lengths.device)[None, :] < lengths[:, None])[:, None, :]
