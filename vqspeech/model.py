"""The VQ-VAE for speech: encoder -> vector quantiser -> speaker-conditioned decoder(s).

Loss (paper eq. 3): ``log p(x | z_q(x)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2``, with the
straight-through estimator carrying the decoders' gradients to the encoder. The
reconstruction term is the sum over the model's decoder families (:mod:`vqspeech.decoders`),
each supplying its own term:

* ``wavenet`` (the paper's): 256-way cross-entropy over 8-bit mu-law samples under teacher
  forcing, in nats per sample;
* ``spectrogram`` (project issue #5): L1 on log STFT magnitudes plus L1 on log-mel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import ModelConfig
from vqspeech.decoders import DecoderFamily, get_family, registered
from vqspeech.errors import ConfigError
from vqspeech.nn.adversary import CodeSpeakerAdversary
from vqspeech.nn.encoder import Encoder
from vqspeech.nn.quantizer import VectorQuantizer
from vqspeech.nn.speaker import SpeakerEncoder, SpeakerPooling, envelope_dims, measured_dims
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.nn.wavenet import WaveNet


class VQVAEOutput(NamedTuple):
    """What one training forward pass returns; every loss term is a named scalar."""

    loss: Tensor  # reconstruction + codebook + commitment (the commitment term already has beta)
    reconstruction_loss: Tensor  # sum of decoder_losses' terms
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor  # of the batch's code usage
    usage: Tensor  # [K] code counts in the batch
    codes: Tensor  # [B, F] int64
    decoder_losses: dict[str, Tensor]  # family name -> its reconstruction term (scalar)
    predictions: dict[str, Tensor]  # family name -> what its decoder predicted
    speaker_loss: Tensor | None = None  # speaker encoder vs table vector, mean square (issue #7)
    adversary_loss: Tensor | None = None  # code speaker classifier's cross-entropy, nats (issue #7)

    # The built-in families' terms by their older names; None when the model lacks the family.
    @property
    def wavenet_loss(self) -> Tensor | None:
        """Cross-entropy over mu-law classes, nats per sample."""
        return self.decoder_losses.get("wavenet")

    @property
    def spectrogram_loss(self) -> Tensor | None:
        """L1 log-magnitude + L1 log-mel."""
        return self.decoder_losses.get("spectrogram")

    @property
    def logits(self) -> Tensor | None:
        """``[B, Q, T]`` WaveNet logits over mu-law classes."""
        return self.predictions.get("wavenet")

    @property
    def spectrogram(self) -> Tensor | None:
        """``[B, n_fft // 2 + 1, F']`` predicted log magnitudes."""
        return self.predictions.get("spectrogram")


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
        self.code_adversary: CodeSpeakerAdversary | None = None
        if config.code_adversary > 0:
            self.code_adversary = CodeSpeakerAdversary(q.dim, config.n_speakers, config.code_adversary)
        # One module per listed family at decoders.<name> (the state_dict keys), built in
        # registration order whatever the order of config.decoders (its first is the default).
        self.families: dict[str, DecoderFamily] = {}
        self.decoders = nn.ModuleDict()
        for family in registered():
            if family.name in config.decoders:
                self.families[family.name] = family
                self.decoders[family.name] = family.build(config)
        for name in config.decoders:
            get_family(name)  # a family listed but not registered: ConfigError naming the known ones

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    # typed accessors for the built-in families' modules (any family's: decoders[name])
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
        decoder_losses: dict[str, Tensor] = {}
        predictions: dict[str, Tensor] = {}
        for name, family in self.families.items():
            term = family.loss(self.decoders[name], audio, vq.quantized, voice)
            decoder_losses[name], predictions[name] = term.loss, term.prediction
        reconstruction = torch.stack(list(decoder_losses.values())).sum()
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
            decoder_losses=decoder_losses,
            predictions=predictions,
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
        :meth:`encode_stream` with the audio as its one block.
        """
        pieces = list(self.encode_stream([audio], chunk_frames))
        if not pieces:
            return torch.zeros(audio.shape[0], 0, dtype=torch.int64, device=audio.device)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)

    @torch.no_grad()
    def encode_stream(self, blocks: Iterable[Tensor], chunk_frames: int | None = None) -> Iterator[Tensor]:
        """Consecutive pieces ``[B, n_i]`` of one float signal -> its codes, in pieces ``[B, f_j]`` (int64).

        Joined, the pieces equal :meth:`encode` of the joined blocks: a chunk of
        ``chunk_frames`` latents is encoded as soon as the blocks reach :attr:`context_frames`
        past its end, so what is held is one chunk, its context on both sides and one block,
        whatever the signal's length (issue 18). The last chunks are encoded when the blocks
        end, the signal zero-padded to a whole number of hops. ``chunk_frames`` None: the whole
        signal in one pass (it is all kept). Blocks may have any length, empty included.
        """
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
        hop, ctx = self.hop_length, self.context_frames
        held: Tensor | None = None  # the signal from sample base * hop on
        base = 0  # latent frame at which `held` starts
        start = 0  # first latent frame not yet encoded
        for block in blocks:
            held = block if held is None else torch.cat([held, block], dim=-1)
            if chunk_frames is None:
                continue
            while base * hop + held.shape[-1] >= (start + chunk_frames + ctx) * hop:
                stop = start + chunk_frames
                yield self._encode_window(held, base, start, stop, stop + ctx)
                start = stop
                keep = max(0, start - ctx)
                held, base = held[..., (keep - base) * hop :], keep
        if held is None:
            return
        held = self.pad(held)  # `base * hop` is whole hops, so this pads the signal's end
        frames = base + held.shape[-1] // hop
        step = chunk_frames or max(frames - start, 1)
        while start < frames:
            stop = min(frames, start + step)
            yield self._encode_window(held, base, start, stop, min(frames, stop + ctx))
            start = stop

    def _encode_window(self, held: Tensor, base: int, start: int, stop: int, hi: int) -> Tensor:
        """Codes ``[B, stop - start]`` of frames ``[start, stop)``, read with real audio up to frame
        ``hi`` and :attr:`context_frames` before ``start`` (``held`` starts at frame ``base``)."""
        hop = self.hop_length
        lo = max(0, start - self.context_frames)
        codes = self.quantizer.quantize(self.encoder(held[..., (lo - base) * hop : (hi - base) * hop]))
        return codes[:, start - lo : stop - lo]

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

    def speaker_pooling(self) -> SpeakerPooling:
        """A :class:`~vqspeech.nn.speaker.SpeakerPooling` of the speaker encoder: a recording's
        vector from its pieces, equal to :meth:`encode_speaker` of the whole. Feed it under
        ``torch.no_grad()``. ConfigError when the model has no speaker encoder.
        """
        if self.speaker_encoder is None:
            raise ConfigError(
                "this model has no speaker encoder; train one with --set model.speaker_encoder.enabled=true"
            )
        return SpeakerPooling(self.speaker_encoder)

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor,
        speaker: Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_frames: int | None = None,
        decoder: str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Codes ``[B, F]`` + speaker ids ``[B]`` (or vectors) -> float audio ``[B, F * hop_length]``.

        ``decoder`` picks the family (default: the model's first, ``config.decoders[0]``).
        WaveNet: autoregressive sampling with cached activations, ``temperature=0`` greedy,
        the same waveform for the same ``generator`` seed whatever ``chunk_frames`` is.
        Spectrogram: predicted magnitudes, Griffin-Lim phases seeded by ``generator``.
        Other families: see their :meth:`~vqspeech.decoders.DecoderFamily.iter_decode`.
        ``dtype``: what the decoder network computes in (float32, or bfloat16 where it is native;
        see :func:`vqspeech.device.resolve_precision`).
        """
        pieces = list(self.iter_decode(codes, speaker, temperature, generator, chunk_frames, decoder, dtype))
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
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[Tensor]:
        """Like :meth:`decode`, but yields audio ``[B, n]`` chunk by chunk at bounded memory.

        The family decodes (:meth:`~vqspeech.decoders.DecoderFamily.iter_decode`). WaveNet: its
        state (per-layer queues, sampling noise) is carried across chunks, so the chunks
        concatenate to one-shot decoding exactly. Spectrogram: each chunk's magnitudes are
        exact (computed with the decoder's full context); Griffin-Lim runs per chunk with
        overlap (``vqspeech.decoders.spectrogram.SPECTROGRAM_OVERLAP``), cross-faded linearly.
        """
        family = decoder or self.config.decoders[0]
        module = self._decoder(family)
        frames = codes.shape[1]
        step = chunk_frames or max(frames, 1)
        if step < 1:
            raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
        voice = self.speaker_vector(speaker)
        yield from self.families[family].iter_decode(
            module,
            codes,
            voice,
            self.quantizer.lookup,
            step=step,
            temperature=temperature,
            generator=generator,
            dtype=dtype,
        )

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
