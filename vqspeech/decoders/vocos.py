"""The Vocos-style family (issue 16): codes + speaker -> ConvNeXt -> log magnitude and phase -> iSTFT.

A waveform decoder with no phase retrieval: it predicts the phase itself
(:mod:`vqspeech.nn.vocos`), so decoding is one network pass and one inverse STFT. Loss:
multi-resolution STFT plus log-mel (:mod:`vqspeech.nn.audio_losses`); the adversarial stage
(:mod:`vqspeech.vocos_training`) is not part of the VQ-VAE's single-optimiser loop. Settings:
``model.families.vocos`` (:class:`~vqspeech.nn.vocos_config.VocosConfig`), e.g.
``--set 'model.decoders=[vocos]' --set model.families.vocos.channels=128``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor, nn

from vqspeech.config import ModelConfig
from vqspeech.decoders.base import DecoderFamily, FamilyLoss, Lookup
from vqspeech.nn.vocos import VocosDecoder
from vqspeech.nn.vocos_config import VocosConfig


class VocosFamily(DecoderFamily):
    name = "vocos"
    config_class = VocosConfig
    summary = "waveform, predicted phase"

    def build(self, config: ModelConfig) -> nn.Module:
        return VocosDecoder(
            config.family_config(self.name),
            config.quantizer.dim,
            config.speaker_dim,
            config.hop_length,
            config.sample_rate,
        )

    def loss(self, module: nn.Module, audio: Tensor, z_q: Tensor, voice: Tensor) -> FamilyLoss:
        decoder = cast(VocosDecoder, module)
        waveform = decoder(z_q, voice)  # [B, F * hop_length]
        return FamilyLoss(decoder.loss(waveform, audio).loss, waveform)

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
        # Deterministic: temperature and generator do not apply. The decoder takes latents, so
        # it looks up each chunk's window itself through ``lookup`` of the whole code sequence.
        decoder = cast(VocosDecoder, module)
        yield from decoder.iter_decode(lookup(codes), voice, max(1, step), dtype)

    def receptive_field(self, config: ModelConfig) -> int:
        return cast(VocosConfig, config.family_config(self.name)).receptive_field(config.hop_length)
