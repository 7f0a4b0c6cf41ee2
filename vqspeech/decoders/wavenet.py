"""The paper's decoder family: an autoregressive WaveNet over 8-bit mu-law samples.

Loss: 256-way cross-entropy over mu-law classes under teacher forcing, in nats per sample.
Decoding samples one value at a time with cached activations (:class:`~vqspeech.nn.wavenet.WaveNetStream`);
its state (per-layer queues, sampling noise) is carried across chunks, so the chunks
concatenate to one-shot decoding exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import ModelConfig, WaveNetConfig
from vqspeech.decoders.base import DecoderFamily, FamilyLoss, Lookup
from vqspeech.features import mu_law_decode, mu_law_encode
from vqspeech.nn.wavenet import WaveNet


class WaveNetFamily(DecoderFamily):
    name = "wavenet"
    config_class = WaveNetConfig
    summary = "the paper's, slow"

    def build(self, config: ModelConfig) -> nn.Module:
        return WaveNet(
            config.decoder,
            cond_dim=config.quantizer.dim,
            hop_length=config.hop_length,
            speaker_dim=config.speaker_dim,
        )

    def loss(self, module: nn.Module, audio: Tensor, z_q: Tensor, voice: Tensor) -> FamilyLoss:
        net = cast(WaveNet, module)
        target = mu_law_encode(audio, net.config.quantization_channels)
        logits = net(target, z_q, voice)  # [B, Q, T]
        return FamilyLoss(F.cross_entropy(logits.float(), target), logits)

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
        # float32 whatever ``dtype`` asks: every sample is fed back, so rounding would compound
        net = cast(WaveNet, module)
        stream = net.stream(voice, generator=generator)
        frames = codes.shape[1]
        for start in range(0, max(frames, 1), step):
            stop = min(frames, start + step)
            classes = stream.push(lookup(codes[:, start:stop]), temperature=temperature, final=stop >= frames)
            yield mu_law_decode(classes, net.config.quantization_channels)

    def receptive_field(self, config: ModelConfig) -> int:
        return config.decoder.receptive_field
