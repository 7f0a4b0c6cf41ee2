"""The VQ-VAE for speech: encoder -> vector quantiser -> speaker-conditioned decoder(s).

Loss (paper eq. 3): ``log p(x | z_q(x)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2``, with the
straight-through estimator carrying the decoders' gradients to the encoder. The
reconstruction term is the sum over the model's decoder families:

* ``wavenet`` (the paper's): 256-way cross-entropy over 8-bit mu-law samples under teacher
  forcing, in nats per sample;
* ``spectrogram`` (project issue #5): L1 on log STFT magnitudes plus L1 on log-mel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import ModelConfig
from vqspeech.errors import ConfigError
from vqspeech.features import mu_law_decode, mu_law_encode
from vqspeech.nn.adversary import CodeSpeakerAdversary
from vqspeech.nn.encoder import Encoder
from vqspeech.nn.quantizer import VectorQuantizer
from vqspeech.nn.speaker import SpeakerEncoder, envelope_dims, envelope_synthesis, measured_dims
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.nn.wavenet import WaveNet

#: Latent frames of overlap between Griffin-Lim chunks when decoding long files (0.256 s at 16 kHz).
SPECTROGRAM_OVERLAP = 64


class VQVAEOutput(NamedTuple):
    """What one training forward pass returns; every loss term is a named scalar.

    A decoder family the model does not have leaves its fields ``None``.
    """

    loss: Tensor  # reconstruction + codebook + commitment (the commitment term already has beta)
    reconstruction_loss: Tensor  # sum of the decoders' terms below
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor  # of the batch's code usage
    usage: Tensor  # [K] code counts in the batch
    codes: Tensor  # [B, F] int64
    wavenet_loss: Tensor | None  # cross-entropy, nats per sample
    spectrogram_loss: Tensor | None  # L1 log-magnitude + L1 log-mel
    logits: Tensor | None  # [B, Q, T] WaveNet logits over mu-law classes
    spectrogram: Tensor | None  # [B, n_fft // 2 + 1, F] predicted log magnitudes
    speaker_loss: Tensor | None = None  # speaker encoder vs table vector, mean square (issue #7)
    adversary_loss: Tensor | None = None  # code speaker classifier's cross-entropy, nats (issue #7)


class VQVAE(nn.Module):
    """Speech VQ-VAE. Audio is float ``[B, T]`` at ``config.sample_rate``; codes are ``[B, F]``
    with ``F = ceil(T / hop_length)``; speakers are int64 ids ``[B]`` into the speaker table
    (or float speaker vectors ``[B, speaker_dim]``). With a speaker encoder
    (``config.speaker_encoder.enabled``), :meth:`encode_speaker` turns recordings into such
    vectors, and table rows are squashed into the same [-1, 1] range.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        q = config.quantizer
        self.encoder = Encoder(config.encoder, q.dim)
        self.quantizer = VectorQuantizer(q)
        self.speaker_embedding = nn.Embedding(config.n_speakers, config.speaker_dim)
        self.speaker_encoder: SpeakerEncoder | None = None
        if config.speaker_encoder.enabled:
            self.speaker_encoder = SpeakerEncoder(
                config.speaker_encoder, config.speaker_dim, config.sample_rate
            )
        # last entries of every speaker vector that hold a measured envelope (0: none), and
        # all the measured ones (pitch, then envelope)
        self.envelope_dims = envelope_dims(config.speaker_encoder, config.speaker_dim)
        self.measured_dims = measured_dims(config.speaker_encoder, config.speaker_dim)
        if self.measured_dims:
            with torch.no_grad():  # the table's measurements start neutral, not at random values
                self.speaker_embedding.weight[:, -self.measured_dims :].zero_()
        envelope = None
        if self.envelope_dims:
            envelope = envelope_synthesis(
                config.speaker_encoder, self.envelope_dims, config.sample_rate, config.spectrogram.n_fft
            )
        self.code_adversary: CodeSpeakerAdversary | None = None
        if config.code_adversary > 0:
            self.code_adversary = CodeSpeakerAdversary(q.dim, config.n_speakers, config.code_adversary)
        self.decoders = nn.ModuleDict()
        if "wavenet" in config.decoders:
            self.decoders["wavenet"] = WaveNet(
                config.decoder, cond_dim=q.dim, hop_length=config.hop_length, speaker_dim=config.speaker_dim
            )
        if "spectrogram" in config.decoders:
            self.decoders["spectrogram"] = SpectrogramDecoder(
                config.spectrogram, q.dim, config.speaker_dim, config.hop_length, config.sample_rate, envelope
            )

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def wavenet(self) -> WaveNet:
        return self._decoder("wavenet")  # type: ignore[return-value]

    @property
    def spectrogram_decoder(self) -> SpectrogramDecoder:
        return self._decoder("spectrogram")  # type: ignore[return-value]

    def _decoder(self, family: str) -> nn.Module:
        if family not in self.decoders:
            have = ", ".join(self.config.decoders)
            raise ConfigError(f"this model has no {family} decoder (it has: {have})")
        return self.decoders[family]

    def forward(self, audio: Tensor, speaker: Tensor, reference: Tensor | None = None) -> VQVAEOutput:
        """Teacher-forced training pass. ``audio`` ``[B, T]`` with ``T % hop_length == 0``.

        ``reference`` ``[B, T_ref]``: other audio of each item's speaker, for the speaker encoder
        (ignored without one). In training, each item is decoded with the encoder's vector, or
        with the table's with probability ``table_prob`` (drawn from torch's global generator,
        which checkpoints save, so resuming stays exact); in eval mode always with the encoder's.
        """
        z_e = self.encoder(audio)
        vq = self.quantizer(z_e)
        voice = self.speaker_vector(speaker)
        speaker_loss = None
        by_id = speaker.dtype in (torch.int32, torch.int64)
        if self.speaker_encoder is not None and reference is not None and by_id:
            heard = self.speaker_encoder(reference)
            # The encoder is pulled toward its speaker's table row, never the row toward the
            # encoder: pulling both ways lets the two meet at one point that says nothing.
            # The measured entries (envelope, pitch) go the other way: they are facts about
            # the recording, so the table's rows learn them (a per-speaker measurement table).
            e = self.measured_dims
            pulled, target = heard, voice.detach()
            if e:
                pulled = torch.cat([heard[:, :-e], voice[:, -e:]], dim=1)
                target = torch.cat([voice.detach()[:, :-e], heard.detach()[:, -e:]], dim=1)
            speaker_loss = F.mse_loss(pulled, target)
            if self.training:
                table_prob = self.config.speaker_encoder.table_prob
                keep = torch.rand(voice.shape[0], 1, device=voice.device) < table_prob
                voice = torch.where(keep, voice, heard)
            else:
                voice = heard
        wavenet_loss = spectrogram_loss = logits = spectrogram = None
        terms = []
        if "wavenet" in self.decoders:
            target = mu_law_encode(audio, self.config.decoder.quantization_channels)
            logits = self.decoders["wavenet"](target, vq.quantized, voice)
            wavenet_loss = F.cross_entropy(logits.float(), target)
            terms.append(wavenet_loss)
        if "spectrogram" in self.decoders:
            spectrogram = self.spectrogram_decoder(vq.quantized, voice)
            spectrogram_loss = self.spectrogram_decoder.loss(spectrogram, audio)
            terms.append(spectrogram_loss)
        reconstruction = torch.stack(terms).sum()
        loss = reconstruction + vq.codebook_loss + vq.commitment_loss
        if speaker_loss is not None:
            loss = loss + self.config.speaker_encoder.pull_weight * speaker_loss
        adversary_loss = None
        if self.code_adversary is not None and by_id:
            # added at weight 1: the classifier learns at full rate; the reversal inside hands
            # the encoder -code_adversary times its gradient
            adversary_loss = self.code_adversary(vq.quantized, speaker)
            loss = loss + adversary_loss
        return VQVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            codebook_loss=vq.codebook_loss,
            commitment_loss=vq.commitment_loss,
            perplexity=vq.perplexity,
            usage=vq.usage,
            codes=vq.codes,
            wavenet_loss=wavenet_loss,
            spectrogram_loss=spectrogram_loss,
            logits=logits,
            spectrogram=spectrogram,
            speaker_loss=speaker_loss,
            adversary_loss=adversary_loss,
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
        """Speaker ids ``[B]`` (int64) -> vectors ``[B, speaker_dim]``; vectors pass through.

        With a speaker encoder, table rows go through ``tanh`` so they live where the encoder's
        vectors do (in [-1, 1]) and can be compared with them.
        """
        if speaker.dtype in (torch.int32, torch.int64):
            rows = self.speaker_embedding(speaker)
            return torch.tanh(rows) if self.speaker_encoder is not None else rows
        return speaker

    @property
    def has_speaker_encoder(self) -> bool:
        return self.speaker_encoder is not None

    @torch.no_grad()
    def encode_speaker(self, audio: Tensor) -> Tensor:
        """Recordings ``[B, T]`` -> speaker vectors ``[B, speaker_dim]`` in [-1, 1]. Deterministic.

        ConfigError when the model has no speaker encoder.
        """
        if self.speaker_encoder is None:
            raise ConfigError(
                "this model has no speaker encoder; train one with --set model.speaker_encoder.enabled=true"
            )
        return self.speaker_encoder(audio)

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor,
        speaker: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
        decoder: str | None = None,
    ) -> Tensor:
        """Codes ``[B, F]`` + speaker ids ``[B]`` (or vectors) -> float audio ``[B, F * hop_length]``.

        ``decoder`` picks the family (default: the model's first, ``config.decoders[0]``).
        WaveNet: autoregressive sampling with cached activations, ``temperature=0`` greedy,
        the same waveform for the same ``generator`` seed whatever ``chunk_frames`` is.
        Spectrogram: predicted magnitudes, Griffin-Lim phases seeded by ``generator``.
        """
        pieces = list(self.iter_decode(codes, speaker, temperature, generator, chunk_frames, decoder))
        return torch.cat(pieces, dim=1)

    @torch.no_grad()
    def iter_decode(
        self,
        codes: Tensor,
        speaker: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
        decoder: str | None = None,
    ) -> Iterator[Tensor]:
        """Like :meth:`decode`, but yields audio ``[B, n]`` chunk by chunk at bounded memory.

        WaveNet: its state (per-layer queues, sampling noise) is carried across chunks, so
        the chunks concatenate to one-shot decoding exactly. Spectrogram: each chunk's
        magnitudes are exact (computed with the decoder's full context); Griffin-Lim runs
        per chunk with :data:`SPECTROGRAM_OVERLAP` frames of overlap, cross-faded linearly.
        """
        family = decoder or self.config.decoders[0]
        self._decoder(family)
        frames = codes.shape[1]
        step = chunk_frames or max(frames, 1)
        if step < 1:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
        voice = self.speaker_vector(speaker)
        if family == "spectrogram":
            yield from self._iter_spectrogram(codes, voice, generator, step)
            return
        stream = self.wavenet.stream(voice, generator=generator)
        q = self.config.decoder.quantization_channels
        for start in range(0, max(frames, 1), step):
            stop = min(frames, start + step)
            classes = stream.push(
                self.quantizer.lookup(codes[:, start:stop]), temperature=temperature, final=stop >= frames
            )
            yield mu_law_decode(classes, q)

    def _iter_spectrogram(
        self, codes: Tensor, voice: Tensor, generator: torch.Generator | None, step: int
    ) -> Iterator[Tensor]:
        decoder = self.spectrogram_decoder
        frames, hop, stride = codes.shape[1], self.hop_length, decoder.stride
        if step >= frames:
            yield decoder.vocode(decoder(self.quantizer.lookup(codes), voice), frames, generator)
            return
        # chunk edges on multiples of the decoder's stride, so each chunk's frames are the
        # same frames (same centres, same context) as one-shot decoding computes
        step = -(-step // stride) * stride
        ctx = decoder.context_frames
        overlap = min(SPECTROGRAM_OVERLAP // stride * stride, step)
        fade = torch.linspace(0.0, 1.0, overlap * hop + 2, device=codes.device)[1:-1]
        tail: Tensor | None = None  # the previous chunk's last overlap * hop samples
        for start in range(0, frames, step):
            stop = min(frames, start + step)
            first = max(0, start - overlap)
            lo, hi = max(0, first - ctx) // stride * stride, min(frames, stop + ctx)
            log_mag = decoder(self.quantizer.lookup(codes[:, lo:hi]), voice)
            wanted = log_mag[..., (first - lo) // stride : decoder.output_frames(stop - lo)]
            audio = decoder.vocode(wanted, stop - first, generator)
            if tail is not None:
                head = audio[:, : tail.shape[1]]
                audio = torch.cat([tail * (1 - fade) + head * fade, audio[:, tail.shape[1] :]], dim=1)
            if stop < frames:
                tail = audio[:, -overlap * hop :]
                audio = audio[:, : -overlap * hop]
            yield audio

    def parameter_counts(self) -> dict[str, int]:
        """Trainable + buffer-free parameter counts per part and in total."""
        parts = {
            "encoder": self.encoder,
            "quantizer": self.quantizer,
            "speaker_embedding": self.speaker_embedding,
            **({"speaker_encoder": self.speaker_encoder} if self.speaker_encoder is not None else {}),
            **{f"decoder_{name}": module for name, module in self.decoders.items()},
        }
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        # An EMA codebook is a buffer, not a parameter, but it is still part of the model's size.
        if "embedding" not in dict(self.quantizer.named_parameters()):
            counts["quantizer"] += self.quantizer.codebook.numel()
        counts["total"] = sum(counts.values())
        return counts
