"""A checkpoint's speech VQ-VAE loaded once on a device: :class:`Codec`, what every verb is given.

:meth:`Codec.encode_audio` turns float audio ``[T]`` into codes ``[1, F]`` (chunked, exact);
:meth:`Codec.encode_blocks` does the same for a signal read block by block (and takes its voice),
at memory flat in the signal's length;
:meth:`Codec.tokens` wraps them in a :class:`~vqspeech.tokens.TokenFile` with a full header;
:meth:`Codec.reference_vector` takes a voice from recordings. The devices are
:func:`vqspeech.device.resolve_device`'s.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vqspeech.audio import stream_audio
from vqspeech.checkpoint import Checkpoint, load_checkpoint
from vqspeech.device import resolve_device, resolve_precision
from vqspeech.errors import ConfigError
from vqspeech.model import VQVAE
from vqspeech.tokens import SPEAKER_VECTOR_KEY, SpeakerVector, TokenFile, TokenHeader

#: Latent frames per encoder pass (4096 x hop 64 = 16 s at 16 kHz): bounds encoder memory.
ENCODE_CHUNK_FRAMES = 4096


class Encoded(NamedTuple):
    """What :meth:`Codec.encode_blocks` returns."""

    codes: np.ndarray  # int64 [1, ceil(num_samples / hop_length)]
    num_samples: int  # of the signal, at the model's rate
    speaker_vector: SpeakerVector | None  # the signal's quantised voice, when asked for


@dataclass
class Codec:
    """A checkpoint's VQ-VAE, loaded once, in eval mode on ``device``; see :meth:`load`.

    Safe to share between threads: inference reads the weights and never changes them.
    """

    checkpoint: Checkpoint
    model: VQVAE
    device: torch.device
    fingerprint: str  # Checkpoint.fingerprint, computed once (it hashes every weight)
    #: What decoder networks compute in when decoding (encoding is always float32).
    decode_dtype: torch.dtype = torch.float32

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str = "auto", local_rank: int = 0, precision: str = "auto"
    ) -> Codec:
        """Load checkpoint ``path`` on ``device`` (auto/cpu/cuda; under torchrun, this rank's GPU
        ``local_rank``); CheckpointError if it is unusable. ``precision`` (auto/float32/bfloat16,
        :func:`~vqspeech.device.resolve_precision`) sets :attr:`decode_dtype`: auto is bfloat16
        where the device computes it natively, else float32."""
        target = resolve_device(device, local_rank)
        dtype = resolve_precision(precision, target)
        ckpt = load_checkpoint(Path(path))
        model = ckpt.build_model(target)
        return cls(ckpt, model, target, ckpt.fingerprint, dtype)

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.model.hop_length

    @property
    def codebook_size(self) -> int:
        return self.model.config.quantizer.codebook_size

    @property
    def speaker_names(self) -> list[str]:
        return self.checkpoint.speaker_names

    def speaker_id(self, name: str) -> int:
        """Id of speaker ``name``; CheckpointError listing the known speakers if absent."""
        return self.checkpoint.speaker_id(name)

    @property
    def decoders(self) -> tuple[str, ...]:
        """The decoder families this model can decode with; the first is the default."""
        return tuple(self.model.config.decoders)

    def check_decoder(self, decoder: str | None) -> str:
        """``decoder`` (default: the model's first family); ConfigError if the model lacks it."""
        family = decoder or self.decoders[0]
        if family not in self.decoders:
            raise ConfigError(
                f"this model has no {family} decoder; it decodes with: {', '.join(self.decoders)}"
            )
        return family

    def encode_audio(self, audio: np.ndarray, chunk_frames: int | None = ENCODE_CHUNK_FRAMES) -> np.ndarray:
        """Mono float audio ``[T]`` at :attr:`sample_rate` -> int64 codes ``[1, ceil(T / hop_length)]``.

        Deterministic, and the same for every ``chunk_frames`` (None: the whole file in one pass);
        memory follows the chunk, not the file (see :meth:`VQVAE.encode`).
        """
        samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        codes = self.model.encode(samples[None], chunk_frames=chunk_frames)
        return codes.cpu().numpy().astype(np.int64, copy=False)

    def encode_blocks(
        self,
        blocks: Iterable[np.ndarray],
        chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
        *,
        speaker_vector: bool = False,
    ) -> Encoded:
        """Consecutive mono float blocks ``[n_i]`` of one signal at :attr:`sample_rate` (e.g.
        :func:`~vqspeech.audio.stream_audio`'s) -> its codes, length and (``speaker_vector``) voice.

        The codes equal :meth:`encode_audio` of the joined blocks and the vector equals
        :meth:`speaker_vector` of them, but each block is used once and let go: memory follows
        ``chunk_frames`` and the speaker encoder's pooling chunk, not the signal's length
        (issue 18). ``chunk_frames`` None keeps the whole signal (one pass).
        """
        pooling = self.model.speaker_pooling() if speaker_vector else None
        num_samples = 0

        def tensors() -> Iterator[torch.Tensor]:
            nonlocal num_samples
            for block in blocks:
                num_samples += int(block.shape[0])
                piece = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(self.device)[None]
                if pooling is not None:
                    pooling.feed(piece)
                yield piece

        # One buffer grown by doubling, not a list of per-chunk pieces: small long-lived arrays
        # between each chunk's transient ones would pin the heap and grow it with the file.
        codes = np.empty((1, 1024), np.int64)
        frames = 0
        with torch.no_grad():
            for piece in self.model.encode_stream(tensors(), chunk_frames):
                end = frames + piece.shape[1]
                if end > codes.shape[1]:
                    grown = np.empty((1, max(2 * codes.shape[1], end)), np.int64)
                    grown[:, :frames] = codes[:, :frames]
                    codes = grown
                codes[:, frames:end] = piece.cpu().numpy()
                frames = end
            vector = self._quantized_mean([pooling.vector()]) if pooling is not None else None
        return Encoded(codes[:, :frames], num_samples, vector)

    @property
    def has_speaker_encoder(self) -> bool:
        """True when the model can take a voice from a recording (``--reference``, issue #7)."""
        return self.model.has_speaker_encoder

    def speaker_vector(self, recordings: Sequence[np.ndarray]) -> SpeakerVector:
        """Mono float recordings ``[T_i]`` of one voice -> its quantised speaker vector.

        Each recording's vector comes from the speaker encoder; several are averaged, then the
        mean goes on the ``vector_bits`` grid, exactly as a token file stores it, so converting
        with a reference and decoding a token file with the same reference sound the same.
        ConfigError for a model without a speaker encoder.
        """
        if not self.has_speaker_encoder:
            raise ConfigError(
                "this model has no speaker encoder, so it cannot take a voice from a recording; "
                "use --speaker NAME, or a model trained with --set model.speaker_encoder.enabled=true"
            )
        if not recordings:
            raise ConfigError("no reference recordings given")
        return self._quantized_mean(
            [
                self.model.encode_speaker(
                    torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)[None]
                )
                for a in recordings
            ]
        )

    def _quantized_mean(self, vectors: Sequence[torch.Tensor]) -> SpeakerVector:
        """The mean of speaker vectors ``[1, D]`` on the ``vector_bits`` grid."""
        mean = torch.cat(list(vectors)).mean(dim=0).float().cpu().numpy()
        return SpeakerVector.quantize(mean, self.model.config.speaker_encoder.vector_bits)

    def reference_vector(self, paths: Sequence[str | os.PathLike[str]]) -> SpeakerVector:
        """:meth:`speaker_vector` of audio files ``paths`` (any format soundfile reads), each read
        block by block (:meth:`encode_blocks`' pooling), so a long reference costs no more memory
        than a short one."""
        if not self.has_speaker_encoder or not paths:
            self.speaker_vector([])  # the message about the model, before any file is read
        vectors = []
        with torch.no_grad():
            for path in paths:
                pooling = self.model.speaker_pooling()
                for block in stream_audio(path, self.sample_rate):
                    pooling.feed(torch.from_numpy(block).to(self.device)[None])
                vectors.append(pooling.vector())
        return self._quantized_mean(vectors)

    def tokens(
        self,
        codes: np.ndarray,
        num_samples: int,
        speaker: str | None,
        speaker_vector: SpeakerVector | None = None,
    ) -> TokenFile:
        """Codes ``[1, F]`` from :meth:`encode_audio` plus their header (rates, sizes, fingerprint,
        and the source's quantised speaker vector when given)."""
        header = TokenHeader(
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
            codebook_size=self.codebook_size,
            n_codebooks=1,
            n_frames=int(codes.shape[1]),
            num_samples=num_samples,
            speaker=speaker,
            model_fingerprint=self.fingerprint,
            extra={SPEAKER_VECTOR_KEY: speaker_vector.to_json()} if speaker_vector is not None else {},
        )
        return TokenFile(header, codes)

    def infer_speaker(self, path: str | os.PathLike[str]) -> str | None:
        """The source speaker of audio file ``path``, if the name says so and the model knows it.

        The parent folder's name (VCTK and speaker-folder layouts: ``p225/p225_001.wav``), else
        the file name's prefix before the first ``_`` (``p225_001.wav``), else the nearest
        ancestor folder with a speaker's name (``p225/day2/take1.wav``); None otherwise.
        """
        return infer_speaker(path, self.speaker_names)


def infer_speaker(path: str | os.PathLike[str], known: Collection[str]) -> str | None:
    """See :meth:`Codec.infer_speaker`."""
    p = Path(path)
    prefix = p.name.split("_", 1)[0] if "_" in p.name else ""
    for candidate in (p.parent.name, prefix, *(a.name for a in p.parents[1:])):
        if candidate and candidate in known:
            return candidate
    return None
