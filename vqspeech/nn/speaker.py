"""Speaker encoder (project issue #7): a recording of a voice -> a bounded speaker vector.

log-mel ``[B, n_mels, N]`` -> ``layers`` 1-d convs (ReLU) -> mean and standard deviation over
the *speech* frames -> linear -> ``tanh``: float ``[B, speaker_dim]`` in [-1, 1]. Pooling over
time throws away the order of the frames, so the vector can say how the voice sounds on
average, not what was said; training it on another utterance than the one being decoded (see
:mod:`vqspeech.data.batches`) removes what is left of the words. The bound lets token files
store the vector on a fixed grid (:class:`vqspeech.tokens.SpeakerVector`).

Long inputs are read in chunks (each with its own level and speech frames) whose pooling sums
add up, so memory follows the chunk and a 10-minute file costs no more than a 30-second one;
the same audio always gives the same vector. :class:`SpeakerPooling` takes the recording in
pieces as they are read (encoding a file block by block, issue 18) and cuts the same chunks,
so its vector is exactly the whole recording's.

With ``config.envelope`` the last :func:`envelope_dims` entries of the vector are not learned:
they are the voice's long-term spectral envelope, the first cepstral coefficients (orthonormal
DCT-II, ``c_1..c_k``; ``c_0``, the level, is left out) of the mean level-free log-mel over the
speech frames, divided by :data:`ENVELOPE_SCALE` and clipped to [-1, 1]. A measured statistic
rather than a learned code, so an unseen voice gets its own envelope, and it travels inside
the speaker vector (token files need nothing new). :func:`envelope_synthesis` maps those
entries back to log magnitudes per STFT bin for the decoder to add.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import SpeakerEncoderConfig
from vqspeech.features import log_mel_spectrogram, mel_frequencies
from vqspeech.nn.pitch import yin

#: Frames quieter than this (natural-log mel units, ~40 dB) below the loudest are not pooled.
SPEECH_RANGE = 40.0 / (20.0 / math.log(10.0))
#: Samples per chunk when pooling a long recording (30 s at 16 kHz).
CHUNK_SAMPLES = 30 * 16000
#: Cepstral coefficients of the envelope (at most half the speaker vector).
ENVELOPE_COEFFS = 16
#: Envelope coefficients are divided by this to fit [-1, 1]: on the synthetic and demo corpora
#: |c_1| reaches ~9 natural-log units, the higher ones less than 6.
ENVELOPE_SCALE = 12.0


#: The measured pitch entry: (mean log2 F0 over voiced frames - log2 PITCH_CENTRE) / PITCH_OCTAVES,
#: clipped to [-1, 1], so 57-453 Hz fit and 8 bits resolve a seventh of a semitone.
PITCH_CENTRE = 160.0
PITCH_OCTAVES = 1.5


def envelope_dims(config: SpeakerEncoderConfig, speaker_dim: int) -> int:
    """Entries of a ``speaker_dim`` vector that hold the measured envelope (0 unless ``config.envelope``)."""
    return min(ENVELOPE_COEFFS, speaker_dim // 2) if config.enabled and config.envelope else 0


def measured_dims(config: SpeakerEncoderConfig, speaker_dim: int) -> int:
    """Entries at the end of a speaker vector that are measured, not learned: the pitch entry
    (``config.pitch``) and then the envelope (:func:`envelope_dims`)."""
    pitch = 1 if config.enabled and config.pitch else 0
    return envelope_dims(config, speaker_dim) + pitch


def log2_f0_sums(
    audio: Tensor, sample_rate: int, hop_length: int, fmin: float = 60.0, fmax: float = 400.0
) -> tuple[Tensor, Tensor]:
    """Voiced frames ``[B]`` and the sum of their log2 F0 ``[B]`` (Hz) in audio ``[B, T]``.

    :func:`vqspeech.nn.pitch.yin` frames (one every ``hop_length``, uncentred), summed so that
    chunks of a long recording add up. No gradient: a measurement. Not ``librosa.yin`` (which
    :func:`vqspeech.evaluation.median_f0` uses): that is numpy, one signal at a time on the CPU,
    and this runs inside the model's forward pass, on a batch of references, on its device.
    """
    voiced, log2_f0 = yin(audio, sample_rate, hop_length, fmin, fmax)
    v = voiced.float()
    return v.sum(dim=-1), (log2_f0 * v).sum(dim=-1)


def cepstral_basis(n_mels: int, coeffs: int) -> Tensor:
    """Orthonormal DCT-II rows ``1..coeffs`` ``[coeffs, n_mels]``: log-mel bands -> cepstrum (no ``c_0``)."""
    k = torch.arange(1, coeffs + 1, dtype=torch.float64)[:, None]
    m = torch.arange(n_mels, dtype=torch.float64)[None, :]
    return (torch.cos(math.pi * k * (m + 0.5) / n_mels) * math.sqrt(2.0 / n_mels)).float()


def envelope_synthesis(config: SpeakerEncoderConfig, coeffs: int, sample_rate: int, n_fft: int) -> Tensor:
    """Fixed map ``[n_fft // 2 + 1, coeffs]``: envelope entries of a speaker vector -> log magnitude per bin.

    Undoes :data:`ENVELOPE_SCALE`, the inverse DCT gives the ``config.n_mels`` band levels, and
    each STFT bin takes the band levels linearly interpolated at its frequency (held flat
    beyond the first and last band centres). Not learned: an unseen envelope maps the same way.
    """
    centres = mel_frequencies(config.n_mels + 2, 0.0, sample_rate / 2)[1:-1]
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    eye = np.eye(config.n_mels)
    interp = np.stack([np.interp(bins, centres, eye[m]) for m in range(config.n_mels)], axis=1)
    bands = torch.from_numpy(interp).float()  # [bins, n_mels]
    return bands @ cepstral_basis(config.n_mels, coeffs).T * ENVELOPE_SCALE


class SpeakerEncoder(nn.Module):
    """Audio float ``[B, T]`` at ``sample_rate`` -> speaker vectors ``[B, speaker_dim]`` in [-1, 1].

    ``lengths`` ``[B]`` (samples) marks zero padding to leave out; silence is left out anyway.
    """

    def __init__(self, config: SpeakerEncoderConfig, speaker_dim: int, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = sample_rate
        self.hop_length = max(1, round(config.hop_length_ms * sample_rate / 1000))
        layers: list[nn.Module] = []
        channels = config.n_mels
        for _ in range(config.layers):
            layers += [nn.Conv1d(channels, config.channels, config.kernel_size, padding="same"), nn.ReLU()]
            channels = config.channels
        self.convs = nn.Sequential(*layers)
        self.envelope_dims = envelope_dims(config, speaker_dim)
        self.measured_dims = measured_dims(config, speaker_dim)
        self.out = nn.Linear(2 * config.channels, speaker_dim - self.measured_dims)

    def features(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel ``[B, n_mels, N]`` with the overall level removed, and speech-frame weights ``[B, N]``.

        The level (mean log-mel over the speech frames) is subtracted so that a louder recording
        of the same voice gives the same vector; the spectral shape, which is the voice, stays.
        """
        c = self.config
        if audio.shape[-1] < c.n_fft:  # the STFT's reflect padding needs a window's worth of samples
            audio = F.pad(audio, (0, c.n_fft - audio.shape[-1]))
        log_mel = log_mel_spectrogram(audio, self.sample_rate, c.n_fft, self.hop_length, c.n_mels)
        loudness = log_mel.mean(dim=1)  # [B, N]
        speech = (loudness > loudness.amax(dim=1, keepdim=True) - SPEECH_RANGE).float()
        level = (loudness * speech).sum(dim=1) / speech.sum(dim=1).clamp(min=1.0)
        return log_mel - level[:, None, None], speech

    def chunk_sums(self, audio: Tensor) -> tuple[Tensor, ...]:
        """Pooling sums of one chunk: weights ``[B]``, sum of h ``[B, C]``, of h^2 ``[B, C]``,
        of the log-mel ``[B, n_mels]``, voiced frames ``[B]`` and their log2 F0 ``[B]``."""
        log_mel, speech = self.features(audio)
        h = self.convs(log_mel)  # [B, C, N]
        w = speech[:, None, :]
        sums = (speech.sum(dim=1), (h * w).sum(dim=2), (h.square() * w).sum(dim=2), (log_mel * w).sum(dim=2))
        if self.measured_dims > self.envelope_dims:
            return (*sums, *log2_f0_sums(audio, self.sample_rate, self.hop_length))
        zero = speech.new_zeros(speech.shape[0])
        return (*sums, zero, zero)

    def forward(self, audio: Tensor, chunk_samples: int | None = CHUNK_SAMPLES) -> Tensor:
        """Audio ``[B, T]`` -> ``[B, speaker_dim]``; chunks of ``chunk_samples`` (None: one pass).

        :class:`SpeakerPooling` fed the audio in one piece.
        """
        pooling = SpeakerPooling(self, chunk_samples)
        pooling.feed(audio)
        return pooling.vector()

    def finish(self, sums: tuple[Tensor, ...]) -> Tensor:
        """Pooling sums of a whole recording (see :meth:`chunk_sums`) -> ``[B, speaker_dim]``."""
        count, total, squares, mels, voiced, log2_f0 = sums
        count = count.clamp(min=1.0)[:, None]
        mean = total / count
        std = (squares / count - mean.square()).clamp(min=1e-6).sqrt()
        parts = [torch.tanh(self.out(torch.cat([mean, std], dim=1)))]
        if self.measured_dims > self.envelope_dims:
            # no voiced frame (silence, noise): the centre, which means "a typical voice"
            octaves = torch.where(
                voiced > 0,
                log2_f0 / voiced.clamp(min=1.0) - math.log2(PITCH_CENTRE),
                torch.zeros_like(voiced),
            )
            parts.append((octaves / PITCH_OCTAVES).clamp(-1.0, 1.0)[:, None])
        if self.envelope_dims:
            basis = cepstral_basis(self.config.n_mels, self.envelope_dims).to(mels.device)
            envelope = (mels / count) @ basis.T / ENVELOPE_SCALE  # [B, envelope_dims]
            parts.append(envelope.clamp(-1.0, 1.0))
        return torch.cat(parts, dim=1)


class SpeakerPooling:
    """A :class:`SpeakerEncoder`'s vector of a recording fed piece by piece: :meth:`feed` consecutive
    pieces ``[B, n]``, then :meth:`vector`.

    The recording is cut into the same chunks of ``chunk_samples`` (at least ``n_fft``) as the
    encoder cuts it when given the whole, and their sums are added in the same order, so the
    vector is exactly the encoder's of the joined pieces, while what is held is one chunk
    (30 s by default) whatever the recording's length. ``chunk_samples`` None: one pass over
    the whole recording (it is all kept).
    """

    def __init__(self, encoder: SpeakerEncoder, chunk_samples: int | None = CHUNK_SAMPLES) -> None:
        self.encoder = encoder
        self.step = None if chunk_samples is None else max(chunk_samples, encoder.config.n_fft, 1)
        self._pending: Tensor | None = None  # the samples after the last whole chunk (None: none fed)
        self._total: tuple[Tensor, ...] | None = None

    def feed(self, audio: Tensor) -> None:
        """Add the next piece ``[B, n]`` of the recording (any length, empty included)."""
        held = audio if self._pending is None else torch.cat([self._pending, audio], dim=-1)
        start = 0
        if self.step is not None:
            while held.shape[-1] - start >= self.step:
                self._add(held[:, start : start + self.step])
                start += self.step
        self._pending = held[:, start:]

    def vector(self) -> Tensor:
        """``[B, speaker_dim]`` of everything fed (an empty recording: of silence)."""
        if self._pending is None:
            raise ValueError("SpeakerPooling.vector: nothing was fed")
        if self._total is None or self._pending.shape[-1]:  # an empty recording: one empty chunk
            self._add(self._pending)
        self._pending = self._pending[:, :0]
        assert self._total is not None
        return self.encoder.finish(self._total)

    def _add(self, chunk: Tensor) -> None:
        sums = self.encoder.chunk_sums(chunk)
        self._total = (
            sums if self._total is None else tuple(a + b for a, b in zip(self._total, sums, strict=True))
        )
