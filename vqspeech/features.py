"""Pure signal functions on tensors: mu-law companding and log-mel spectrograms.

Shapes: audio is ``[..., T]`` float in [-1, 1]; mu-law classes are ``[..., T]`` int64 in
``[0, quantization_channels - 1]``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor


def mu_law_encode(audio: Tensor, quantization_channels: int = 256) -> Tensor:
    """Float audio ``[..., T]`` in [-1, 1] -> int64 mu-law classes ``[..., T]`` (ITU G.711 curve)."""
    mu = quantization_channels - 1
    x = audio.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(classes: Tensor, quantization_channels: int = 256) -> Tensor:
    """Mu-law classes ``[..., T]`` -> float audio ``[..., T]`` in [-1, 1] (inverse of encode)."""
    mu = quantization_channels - 1
    y = classes.float() / mu * 2 - 1
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the Slaney mel scale, ``fmin`` to ``fmax``.

    ``librosa.mel_frequencies(htk=False)``, written out because decoding needs nothing else
    from librosa and importing it costs ~0.5 s on every ``vqspeech decode`` (a test pins the
    two equal). Slaney's scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
    """
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def to_mel(hz: float) -> float:
        return hz / f_sp if hz < min_log_hz else min_log_mel + math.log(hz / min_log_hz) / logstep

    mels = np.linspace(to_mel(fmin), to_mel(fmax), n_mels)
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> Tensor:
    """Slaney mel filters ``[n_mels, n_fft // 2 + 1]``, float32, cached per setting.

    ``librosa.filters.mel(norm="slaney")``, written out for the reason :func:`mel_frequencies`
    is: importing ``librosa.filters`` (numba and librosa's core with it) took 1.0 s of every
    ``vqspeech encode``, whose speaker encoder reads log-mel features (a test pins the two equal).
    Triangles between consecutive mel frequencies, each scaled to unit area in Hz / 2.
    """
    edges = mel_frequencies(n_mels + 2, fmin, sample_rate / 2 if fmax is None else fmax)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return torch.from_numpy(weights)


def log_mel_spectrogram(
    audio: Tensor,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Float audio ``[..., T]`` -> natural-log mel magnitudes ``[..., n_mels, 1 + T // hop_length]``.

    Hann window of ``n_fft`` samples, centred frames, Slaney mel filters (librosa's), and
    ``log(max(mel, eps))`` so silence stays finite.
    """
    shape = audio.shape
    flat = audio.reshape(-1, shape[-1]).float()
    window = torch.hann_window(n_fft, device=flat.device)
    spec = torch.stft(flat, n_fft, hop_length, window=window, center=True, return_complex=True).abs()
    mel = mel_basis(sample_rate, n_fft, n_mels, fmin, fmax).to(flat.device) @ spec
    return torch.log(mel.clamp(min=eps)).reshape(*shape[:-1], n_mels, -1)
