"""Training steps of the Vocos decoder (issue 16): reconstruction warm-up, then adversarial.

Three functions a loop calls (``benchmarks/compare_decoders.py`` is one such loop):

* :func:`reconstruction_step`: multi-resolution STFT + log-mel loss, one optimiser step;
* :func:`discriminator_step`: the discriminators learn real vs the decoder's (detached) output;
  only the discriminators' gradients are written, so the decoder is untouched;
* :func:`generator_step`: the decoder learns from the reconstruction terms, the LSGAN loss and
  feature matching; the discriminators' parameters do not require gradients meanwhile, so
  their gradients stay as the discriminator step left them (HiFi-GAN's alternation).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vqspeech.nn.discriminators import (
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from vqspeech.nn.vocos import VocosDecoder
from vqspeech.nn.vocos_config import VocosLossConfig

#: Gradient-norm clip of both players (Vocos and HiFi-GAN train without; on CPU-sized batches
#: an early discriminator spike otherwise throws the decoder off).
CLIP_NORM = 10.0


class GeneratorLosses(NamedTuple):
    """One decoder step's loss terms (floats); the GAN terms are None in the warm-up."""

    loss: float
    stft_loss: float
    mel_loss: float
    adversarial_loss: float | None
    feature_loss: float | None


def reconstruction_step(
    decoder: VocosDecoder,
    optimizer: torch.optim.Optimizer,
    codes: Tensor,
    voice: Tensor,
    audio: Tensor,
    weights: VocosLossConfig | None = None,
) -> GeneratorLosses:
    """One warm-up step on codes ``[B, D, T]``, voices ``[B, S]``, audio ``[B, T * hop_length]``."""
    optimizer.zero_grad(set_to_none=True)
    terms = decoder.loss(decoder(codes, voice), audio, weights)
    terms.loss.backward()
    torch.nn.utils.clip_grad_norm_(decoder.parameters(), CLIP_NORM)
    optimizer.step()
    return GeneratorLosses(
        float(terms.loss.detach()),
        float(terms.stft_loss.detach()),
        float(terms.mel_loss.detach()),
        None,
        None,
    )


def _window_start(length: int, window: int | None, generator: torch.Generator | None) -> int:
    if window is None or window >= length:
        return 0
    return int(torch.randint(length - window + 1, (1,), generator=generator))


def discriminator_step(
    discriminators: Discriminators,
    optimizer: torch.optim.Optimizer,
    fake: Tensor,
    audio: Tensor,
    window: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """One discriminator step on real ``audio`` and the decoder's ``fake`` (detached here); its loss.

    ``window``: judge a random span of that many samples (None: all of it).
    """
    optimizer.zero_grad(set_to_none=True)
    start = _window_start(audio.shape[-1], window, generator)
    end = start + (window or audio.shape[-1])
    loss = discriminator_loss(
        discriminators(audio[..., start:end]), discriminators(fake.detach()[..., start:end])
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(discriminators.parameters(), CLIP_NORM)
    optimizer.step()
    return float(loss.detach())


def generator_step(
    decoder: VocosDecoder,
    discriminators: Discriminators,
    optimizer: torch.optim.Optimizer,
    fake: Tensor,
    audio: Tensor,
    weights: VocosLossConfig | None = None,
    window: int | None = None,
    generator: torch.Generator | None = None,
) -> GeneratorLosses:
    """One adversarial decoder step; ``fake = decoder(codes, voice)`` with its graph.

    The reconstruction terms see the whole segment; the discriminators a random ``window`` of
    samples of it (None: all), which cuts their cost on CPU (HiFi-GAN trains on 8192 samples).
    """
    w = weights or VocosLossConfig()
    discriminators.requires_grad_(False)
    try:
        optimizer.zero_grad(set_to_none=True)
        terms = decoder.loss(fake, audio, w)
        start = _window_start(audio.shape[-1], window, generator)
        end = start + (window or audio.shape[-1])
        with torch.no_grad():
            real = discriminators(audio[..., start:end])
        judged = discriminators(fake[..., start:end])
        adversarial = generator_loss(judged)
        features = feature_matching_loss(real, judged)
        loss = (
            w.gan_reconstruction_scale * terms.loss
            + w.adversarial_weight * adversarial
            + w.feature_weight * features
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), CLIP_NORM)
        optimizer.step()
    finally:
        discriminators.requires_grad_(True)
    return GeneratorLosses(
        float(loss.detach()),
        float(terms.stft_loss.detach()),
        float(terms.mel_loss.detach()),
        float(adversarial.detach()),
        float(features.detach()),
    )


def gan_step(
    decoder: VocosDecoder,
    discriminators: Discriminators,
    generator_optimizer: torch.optim.Optimizer,
    discriminator_optimizer: torch.optim.Optimizer,
    codes: Tensor,
    voice: Tensor,
    audio: Tensor,
    weights: VocosLossConfig | None = None,
    window: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[GeneratorLosses, float]:
    """Decode once, then a discriminator step and a decoder step; (decoder losses, discriminator loss).

    ``window`` / ``generator``: the discriminators' random span, as in :func:`generator_step`.
    """
    fake = decoder(codes, voice)
    d_loss = discriminator_step(discriminators, discriminator_optimizer, fake, audio, window, generator)
    g = generator_step(decoder, discriminators, generator_optimizer, fake, audio, weights, window, generator)
    return g, d_loss
