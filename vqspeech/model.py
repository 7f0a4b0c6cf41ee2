"""The VQ-VAE for speech: encoder -> vector quantiser -> speaker-conditioned WaveNet decoder.

Loss (paper eq. 3): ``log p(x | z_q(x)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2``, with the
reconstruction term a 256-way cross-entropy over 8-bit mu-law samples under teacher forcing,
and the straight-through estimator carrying the decoder's gradient to the encoder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import ModelConfig
from vqspeech.features import mu_law_decode, mu_law_encode
from vqspeech.nn.encoder import Encoder
from vqspeech.nn.quantizer import VectorQuantizer
from vqspeech.nn.wavenet import WaveNet


class VQVAEOutput(NamedTuple):
    """What one training forward pass returns; every loss term is a named scalar."""

    loss: Tensor  # reconstruction + codebook + commitment (the commitment term already has beta)
    reconstruction_loss: Tensor  # cross-entropy in nats per sample
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor  # of the batch's code usage
    usage: Tensor  # [K] code counts in the batch
    codes: Tensor  # [B, F] int64
    logits: Tensor  # [B, Q, T] decoder logits over mu-law classes


class VQVAE(nn.Module):
    """Speech VQ-VAE. Audio is float ``[B, T]`` at ``config.sample_rate``; codes are ``[B, F]``
    with ``F = ceil(T / hop_length)``; speakers are int64 ids ``[B]`` into the speaker table
    (or, for :meth:`decode`, float speaker vectors ``[B, speaker_dim]``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        q = config.quantizer
        self.encoder = Encoder(config.encoder, q.dim)
        self.quantizer = VectorQuantizer(q)
        self.speaker_embedding = nn.Embedding(config.n_speakers, config.decoder.speaker_dim)
        self.decoder = WaveNet(config.decoder, cond_dim=q.dim, hop_length=config.hop_length)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, audio: Tensor, speaker: Tensor) -> VQVAEOutput:
        """Teacher-forced training pass. ``audio`` ``[B, T]`` with ``T % hop_length == 0``."""
        z_e = self.encoder(audio)
        vq = self.quantizer(z_e)
        target = mu_law_encode(audio, self.config.decoder.quantization_channels)
        logits = self.decoder(target, vq.quantized, self.speaker_embedding(speaker))
        reconstruction = F.cross_entropy(logits.float(), target)
        loss = reconstruction + vq.codebook_loss + vq.commitment_loss
        return VQVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            codebook_loss=vq.codebook_loss,
            commitment_loss=vq.commitment_loss,
            perplexity=vq.perplexity,
            usage=vq.usage,
            codes=vq.codes,
            logits=logits,
        )

    def pad(self, audio: Tensor) -> Tensor:
        """Right-pad ``[B, T]`` audio with zeros to a multiple of ``hop_length``."""
        remainder = audio.shape[-1] % self.hop_length
        return F.pad(audio, (0, self.hop_length - remainder)) if remainder else audio

    @torch.no_grad()
    def encode(self, audio: Tensor, chunk_frames: int | None = None) -> Tensor:
        """Float audio ``[B, T]`` -> codes ``[B, ceil(T / hop_length)]`` (int64). Deterministic.

        With ``chunk_frames``, the audio is encoded ``chunk_frames`` latents at a time, each
        chunk read with :attr:`context_frames` of real audio on both sides and those edge
        frames dropped, so the codes equal whole-file encoding while peak memory stays
        proportional to the chunk, not the file (a 10-minute file would otherwise need GBs).
        """
        audio = self.pad(audio)
        frames = audio.shape[-1] // self.hop_length
        if chunk_frames is None or chunk_frames >= frames:
            return self.quantizer.quantize(self.encoder(audio))
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
        hop, ctx = self.hop_length, self.context_frames
        pieces = []
        for start in range(0, frames, chunk_frames):
            stop = min(frames, start + chunk_frames)
            lo, hi = max(0, start - ctx), min(frames, stop + ctx)
            codes = self.quantizer.quantize(self.encoder(audio[:, lo * hop : hi * hop]))
            pieces.append(codes[:, start - lo : stop - lo])
        return torch.cat(pieces, dim=1)

    @property
    def context_frames(self) -> int:
        """Latent frames of context on each side that make chunked encoding exact.

        The encoder's zero padding only changes latents within its receptive field of an edge,
        so a full receptive field (rounded up to frames) of real audio on each side suffices.
        """
        return -(-self.config.encoder.receptive_field // self.hop_length)

    def speaker_vector(self, speaker: Tensor) -> Tensor:
        """Speaker ids ``[B]`` (int64) -> vectors ``[B, speaker_dim]``; vectors pass through."""
        if speaker.dtype in (torch.int32, torch.int64):
            return self.speaker_embedding(speaker)
        return speaker

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor,
        speaker: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
    ) -> Tensor:
        """Codes ``[B, F]`` + speaker ids ``[B]`` (or vectors) -> float audio ``[B, F * hop_length]``.

        Autoregressive WaveNet sampling with cached activations; ``temperature=0`` is greedy.
        The same ``generator`` seed gives the same waveform, whatever ``chunk_frames`` is.
        """
        pieces = list(self.iter_decode(codes, speaker, temperature, generator, chunk_frames))
        return torch.cat(pieces, dim=1)

    @torch.no_grad()
    def iter_decode(
        self,
        codes: Tensor,
        speaker: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
    ) -> Iterator[Tensor]:
        """Like :meth:`decode`, but yields audio ``[B, n]`` chunk by chunk at bounded memory.

        The WaveNet's state (per-layer queues, sampling noise) is carried across chunks, so
        the concatenated chunks equal one-shot decoding with the same seed.
        """
        frames = codes.shape[1]
        step = chunk_frames or max(frames, 1)
        if step < 1:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
        stream = self.decoder.stream(self.speaker_vector(speaker), generator=generator)
        q = self.config.decoder.quantization_channels
        for start in range(0, max(frames, 1), step):
            stop = min(frames, start + step)
            classes = stream.push(self.quantizer.lookup(codes[:, start:stop]), temperature=temperature,
                                  final=stop >= frames)
            yield mu_law_decode(classes, q)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable + buffer-free parameter counts per part and in total."""
        parts = {
            "encoder": self.encoder,
            "quantizer": self.quantizer,
            "speaker_embedding": self.speaker_embedding,
            "decoder": self.decoder,
        }
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        # An EMA codebook is a buffer, not a parameter, but it is still part of the model's size.
        if "codebook" not in dict(self.quantizer.named_parameters()):
            counts["quantizer"] += self.quantizer.codebook.numel()
        counts["total"] = sum(counts.values())
        return counts
