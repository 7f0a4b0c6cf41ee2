"""The fast decoder family (project issue #5): codes + speaker -> log STFT magnitudes -> Griffin-Lim.

Loss: L1 on log STFT magnitudes plus L1 on log-mel (and, with ``vocoder: harmonic``, the pitch
head's voicing cross-entropy and log2-F0 error against YIN of the target audio). Decoding in
chunks: each chunk's magnitudes (and pitch) are exact (computed with the decoder's full context);
the vocoder runs per chunk with :data:`SPECTROGRAM_OVERLAP` frames of overlap, cross-faded
linearly. The harmonic vocoder carries its phase from one chunk to the next, so its harmonics in
the overlap are the same in both chunks and the cross-fade leaves them as one-shot decoding has
them; only the noise (random phases) differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor, nn

from vqspeech.config import ModelConfig, SpectrogramConfig
from vqspeech.decoders.base import DecoderFamily, FamilyLoss, Lookup
from vqspeech.device import autocast
from vqspeech.nn.speaker import envelope_dims, envelope_synthesis
from vqspeech.nn.spectrogram import SpectrogramDecoder

#: Latent frames of overlap between Griffin-Lim chunks when decoding long files (0.256 s at 16 kHz).
SPECTROGRAM_OVERLAP = 64


class SpectrogramFamily(DecoderFamily):
    name = "spectrogram"
    config_class = SpectrogramConfig
    summary = "fast"
    # 4096 x hop 64 = 16 s at 16 kHz, a few MB of working memory: each chunk recomputes
    # ``context_frames`` (128) each side plus the vocoder's overlap, which at 1-s chunks doubled
    # the decoder network's work (issue 16: bundled model, one thread, 52x -> 130x real time).
    chunk_frames = 4096

    def build(self, config: ModelConfig) -> nn.Module:
        # With a measured envelope in the speaker vectors (issue #7), the decoder adds it,
        # mapped to its STFT bins by a fixed matrix, to its log magnitudes.
        dims = envelope_dims(config.speaker_encoder, config.speaker_dim)
        envelope = None
        if dims:
            envelope = envelope_synthesis(
                config.speaker_encoder, dims, config.sample_rate, config.spectrogram.n_fft
            )
        return SpectrogramDecoder(
            config.spectrogram,
            config.quantizer.dim,
            config.speaker_dim,
            config.hop_length,
            config.sample_rate,
            envelope,
        )

    def loss(self, module: nn.Module, audio: Tensor, z_q: Tensor, voice: Tensor) -> FamilyLoss:
        decoder = cast(SpectrogramDecoder, module)
        log_mag, pitch = decoder.frames(z_q, voice)  # [B, n_fft // 2 + 1, F'], [B, 2, F'] or None
        loss = decoder.loss(log_mag, audio)
        if pitch is not None:
            loss = loss + decoder.pitch_loss(pitch, audio)
        return FamilyLoss(loss, log_mag)

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
        decoder = cast(SpectrogramDecoder, module)
        frames, hop, stride = codes.shape[1], decoder.hop_length, decoder.stride

        def network(z_q: Tensor) -> tuple[Tensor, Tensor | None]:  # in ``dtype``; float32 out
            with autocast(z_q.device, dtype):
                log_mag, pitch = decoder.frames(z_q, voice)
            return log_mag.float(), None if pitch is None else pitch.float()

        if step >= frames:
            log_mag, pitch = network(lookup(codes))
            yield decoder.vocode(log_mag, frames, generator, pitch=pitch)
            return
        # chunk edges on multiples of the decoder's stride, so each chunk's frames are the
        # same frames (same centres, same context) as one-shot decoding computes
        step = -(-step // stride) * stride
        ctx = decoder.context_frames
        overlap = min(SPECTROGRAM_OVERLAP // stride * stride, step)
        fade = torch.linspace(0.0, 1.0, overlap * hop + 2, device=codes.device)[1:-1]
        tail: Tensor | None = None  # the previous chunk's last overlap * hop samples
        phase: Tensor | None = None  # the harmonics' phase where this chunk starts
        for start in range(0, frames, step):
            stop = min(frames, start + step)
            first = max(0, start - overlap)
            lo, hi = max(0, first - ctx) // stride * stride, min(frames, stop + ctx)
            log_mag, pitch = network(lookup(codes[:, lo:hi]))
            wanted = slice((first - lo) // stride, decoder.output_frames(stop - lo))
            if pitch is None:
                audio = decoder.vocode(log_mag[..., wanted], stop - first, generator)
            else:
                audio, phases = decoder.vocode_harmonic(
                    log_mag[..., wanted], pitch[..., wanted], stop - first, generator, phase
                )
                if stop < frames:  # the next chunk starts overlap frames before this one stops
                    phase = phases[:, (stop - overlap - first) * hop]
            if tail is not None:
                head = audio[:, : tail.shape[1]]
                audio = torch.cat([tail * (1 - fade) + head * fade, audio[:, tail.shape[1] :]], dim=1)
            if stop < frames:
                tail = audio[:, -overlap * hop :]
                audio = audio[:, : -overlap * hop]
            yield audio

    def receptive_field(self, config: ModelConfig) -> int:
        return config.spectrogram.receptive_field(config.hop_length)
