"""Discriminators for the adversarial stage of waveform decoders (issue 16); training only.

* :class:`MultiPeriodDiscriminator` (HiFi-GAN, Kong et al. 2020, section 2.2): the waveform
  folded into ``[T / p, p]`` for periods 2, 3, 5, 7, 11, then 2-d convs along time only, so each
  sub-discriminator judges the periodic structure (harmonics) at one period.
* :class:`MultiResolutionDiscriminator` (UnivNet, Jang et al. 2021; used by Vocos): 2-d convs
  over linear STFT magnitudes at several resolutions, judging the spectral detail that L1
  regression blurs.

Both are CPU-sized (16-64 channels; HiFi-GAN's go to 1024). Every sub-discriminator returns
its logits and its intermediate feature maps, for :func:`feature_matching_loss`. Losses are
least-squares (LSGAN, as HiFi-GAN and Vocos): :func:`discriminator_loss` and
:func:`generator_loss`.

These modules are never part of a decoder's inference weights: a training script keeps them
(and their optimiser) beside the decoder and saves them, if at all, separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class Judgement(NamedTuple):
    """One sub-discriminator's verdict on a batch: logits and the feature maps before them."""

    logits: Tensor  # [B, ...] per-patch realness scores
    features: list[Tensor]


class PeriodDiscriminator(nn.Module):
    """Waveform ``[B, L]`` folded at ``period`` -> :class:`Judgement` (HiFi-GAN's MPD branch)."""

    def __init__(self, period: int, channels: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        self.period = period
        layers = []
        c_in = 1
        for i, c in enumerate(channels):
            stride = 3 if i < len(channels) - 1 else 1
            layers.append(weight_norm(nn.Conv2d(c_in, c, (5, 1), (stride, 1), padding=(2, 0))))
            c_in = c
        self.convs = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: Tensor) -> Judgement:
        b, n = audio.shape
        x = F.pad(audio, (0, (-n) % self.period), mode="reflect" if n > self.period else "constant")
        x = x.view(b, 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        logits = self.out(x)
        features.append(logits)
        return Judgement(logits.flatten(1), features)


class ResolutionDiscriminator(nn.Module):
    """Waveform ``[B, L]`` -> magnitude STFT ``[B, 1, bins, frames]`` -> 2-d convs -> :class:`Judgement`."""

    def __init__(self, n_fft: int, hop_length: int, channels: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        convs = [weight_norm(nn.Conv2d(1, channels, (7, 5), padding=(3, 2)))]
        for _ in range(layers - 1):
            convs.append(weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), padding=(2, 1))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, audio: Tensor) -> Judgement:
        window: Tensor = self.window  # type: ignore[assignment]
        spec = torch.stft(
            audio.float(), self.n_fft, self.hop_length, self.n_fft, window, center=True, return_complex=True
        )
        # compressed magnitude: keeps quiet bands visible to the convs, gradient finite at 0
        x = (spec.real.square() + spec.imag.square() + 1e-8).pow(0.25).unsqueeze(1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        logits = self.out(x)
        features.append(logits)
        return Judgement(logits.flatten(1), features)


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period (default 2, 3, 5, 7, 11: primes, so no two
    branches see the same fold)."""

    def __init__(
        self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = (16, 32, 64, 64)
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, audio: Tensor) -> list[Judgement]:
        return [branch(audio) for branch in self.branches]


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`ResolutionDiscriminator` per (n_fft, hop) resolution."""

    def __init__(
        self,
        resolutions: Sequence[tuple[int, int]] = ((512, 128), (1024, 256), (256, 64)),
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(ResolutionDiscriminator(n, h, channels) for n, h in resolutions)

    def forward(self, audio: Tensor) -> list[Judgement]:
        return [branch(audio) for branch in self.branches]


class Discriminators(nn.Module):
    """Multi-period + multi-resolution discriminators: waveform ``[B, L]`` -> all judgements."""

    def __init__(
        self, period_channels: Sequence[int] = (16, 32, 64, 64), resolution_channels: int = 32
    ) -> None:
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(channels=period_channels)
        self.mrd = MultiResolutionDiscriminator(channels=resolution_channels)

    def forward(self, audio: Tensor) -> list[Judgement]:
        return [*self.mpd(audio), *self.mrd(audio)]


def discriminator_loss(real: Sequence[Judgement], fake: Sequence[Judgement]) -> Tensor:
    """LSGAN: mean over sub-discriminators of ``E[(1 - D(real))^2] + E[D(fake)^2]``."""
    terms = [((1 - r.logits) ** 2).mean() + (f.logits**2).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def generator_loss(fake: Sequence[Judgement]) -> Tensor:
    """LSGAN: mean over sub-discriminators of ``E[(1 - D(fake))^2]``."""
    return torch.stack([((1 - f.logits) ** 2).mean() for f in fake]).mean()


def feature_matching_loss(real: Sequence[Judgement], fake: Sequence[Judgement]) -> Tensor:
    """Mean L1 between the real (detached) and fake feature maps, over every layer of every branch.

    0 when the discriminators see the same audio as real and fake.
    """
    terms = [
        F.l1_loss(f, r.detach())
        for rj, fj in zip(real, fake, strict=True)
        for r, f in zip(rj.features, fj.features, strict=True)
    ]
    return torch.stack(terms).mean()
