"""Speaker encoder (project issue #7): a recording of a voice -> a bounded speaker vector.

log-mel ``[B, n_mels, N]`` -> ``layers`` 1-d convs (ReLU) -> mean and standard deviation over
the *speech* frames -> linear -> ``tanh``: float ``[B, speaker_dim]`` in [-1, 1]. Pooling over
time throws away the order of the frames, so the vector can say how the voice sounds on
average, not what was said; training it on another utterance than the one being decoded (see
:mod:`vqspeech.data.batches`) removes what is left of the words. The bound lets token files
store the vector on a fixed grid (:class:`vqspeech.tokens.SpeakerVector`).

Long inputs are read in chunks (each with its own level and speech frames) whose pooling sums
add up, so memory follows the chunk and a 10-minute file costs no more than a 30-second one;
the same audio always gives the same vector.

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
from vqspeech.features import log_mel_spectrogram

#: Frames quieter than this (natural-log mel units, ~40 dB) below the loudest are not pooled.
SPEECH_RANGE = 40.0 / (20.0 / math.log(10.0))
#: Samples per chunk when pooling a long recording (30 s at 16 kHz).
CHUNK_SAMPLES = 30 * 16000
#: Cepstral coefficients of the envelope (at most half the speaker vector).
ENVELOPE_COEFFS = 16
#: Envelope coefficients are divided by this to fit [-1, 1]: on the synthetic and demo corpora
#: |c_1| reaches ~9 natural-log units, the higher ones less than 6.
ENVELOPE_SCALE = 12.0


def envelope_dims(config: SpeakerEncoderConfig, speaker_dim: int) -> int:
    """Entries of a ``speaker_dim`` vector that hold the measured envelope (0 unless ``config.envelope``)."""
    return min(ENVELOPE_COEFFS, speaker_dim // 2) if config.enabled and config.envelope else 0


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
    import librosa  # as in vqspeech.features: slow to import, needed only here

    centres = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
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
        self.out = nn.Linear(2 * config.channels, speaker_dim - self.envelope_dims)

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

    def _sums(self, audio: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pooling sums of one chunk: weights ``[B]``, sum of h ``[B, C]``, of h^2 ``[B, C]``,
        and of the log-mel ``[B, n_mels]``."""
        log_mel, speech = self.features(audio)
        h = self.convs(log_mel)  # [B, C, N]
        w = speech[:, None, :]
        return speech.sum(dim=1), (h * w).sum(dim=2), (h.square() * w).sum(dim=2), (log_mel * w).sum(dim=2)

    def forward(self, audio: Tensor, chunk_samples: int | None = CHUNK_SAMPLES) -> Tensor:
        """Audio ``[B, T]`` -> ``[B, speaker_dim]``; chunks of ``chunk_samples`` (None: one pass)."""
        step = audio.shape[-1] if chunk_samples is None else max(chunk_samples, self.config.n_fft)
        starts = range(0, max(audio.shape[-1], 1), max(step, 1))
        count, total, squares, mels = self._sums(audio[:, :step])
        for start in starts[1:]:
            n, s, q, m = self._sums(audio[:, start : start + step])
            count, total, squares, mels = count + n, total + s, squares + q, mels + m
        count = count.clamp(min=1.0)[:, None]
        mean = total / count
        std = (squares / count - mean.square()).clamp(min=1e-6).sqrt()
        learned = torch.tanh(self.out(torch.cat([mean, std], dim=1)))
        if not self.envelope_dims:
            return learned
        basis = cepstral_basis(self.config.n_mels, self.envelope_dims).to(mels.device)
        envelope = (mels / count) @ basis.T / ENVELOPE_SCALE  # [B, envelope_dims]
        return torch.cat([learned, envelope.clamp(-1.0, 1.0)], dim=1)
