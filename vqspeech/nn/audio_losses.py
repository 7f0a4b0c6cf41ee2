"""Waveform reconstruction losses for decoders that output audio (issue 16).

* :func:`multi_resolution_stft_loss`: spectral convergence + log-magnitude L1, averaged over STFT
  resolutions (Yamamoto et al. 2020, Parallel WaveGAN, eq. 4-6). Several resolutions because one
  window trades time for frequency resolution: 256-point windows see onsets, 1024-point windows
  see harmonics.
* :func:`log_mel_loss`: L1 between natural-log mel magnitudes (librosa's Slaney filters, as
  :func:`vqspeech.features.mel_basis`), the HiFi-GAN / Vocos reconstruction term; it weights the
  low bands where speech lives.

Both take float waveforms ``[B, L]`` of the same length and are 0 for identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vqspeech.features import mel_basis

#: Magnitude floor before logs (about -100 dB): silence stays finite.
LOG_FLOOR = 1e-5


def stft_magnitude(audio: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """Float audio ``[B, L]`` -> Hann STFT magnitudes ``[B, n_fft // 2 + 1, 1 + L // hop_length]`` (centred).

    Differentiable; floored at :data:`LOG_FLOOR` so its log and its gradient stay finite.
    """
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio.float(), n_fft, hop_length, n_fft, window, center=True, return_complex=True)
    # |S| through the squared norm with a floor: the gradient of abs() at 0 is NaN-prone
    return (spec.real.square() + spec.imag.square()).clamp(min=LOG_FLOOR**2).sqrt()


def stft_loss(predicted: Tensor, target: Tensor, n_fft: int, hop_length: int) -> tuple[Tensor, Tensor]:
    """(spectral convergence, log-magnitude L1) at one resolution, for waveforms ``[B, L]``.

    Spectral convergence: ``||S - S'||_F / ||S||_F`` per batch (the norms over the whole batch).
    """
    pred = stft_magnitude(predicted, n_fft, hop_length)
    true = stft_magnitude(target, n_fft, hop_length)
    convergence = torch.linalg.vector_norm(true - pred) / torch.linalg.vector_norm(true).clamp(min=LOG_FLOOR)
    log_l1 = F.l1_loss(torch.log(pred), torch.log(true))
    return convergence, log_l1


def multi_resolution_stft_loss(
    predicted: Tensor,
    target: Tensor,
    resolutions: Sequence[tuple[int, int]] = ((512, 128), (1024, 256), (256, 64)),
) -> Tensor:
    """Mean over ``resolutions`` (n_fft, hop) of spectral convergence + log-magnitude L1."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    total = predicted.new_zeros((), dtype=torch.float32)
    for n_fft, hop in resolutions:
        convergence, log_l1 = stft_loss(predicted, target, n_fft, hop)
        total = total + convergence + log_l1
    return total / len(resolutions)


def log_mel(
    audio: Tensor, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 80
) -> Tensor:
    """Float audio ``[B, L]`` -> natural-log mel ``[B, n_mels, 1 + L // hop_length]``, differentiable."""
    basis = mel_basis(sample_rate, n_fft, n_mels, 0.0, None).to(audio.device)
    mel = basis @ stft_magnitude(audio, n_fft, hop_length)
    return torch.log(mel.clamp(min=LOG_FLOOR))


def log_mel_loss(
    predicted: Tensor,
    target: Tensor,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
) -> Tensor:
    """Mean |log-mel(predicted) - log-mel(target)| for waveforms ``[B, L]`` (natural log)."""
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} differ")
    return F.l1_loss(
        log_mel(predicted, sample_rate, n_fft, hop_length, n_mels),
        log_mel(target, sample_rate, n_fft, hop_length, n_mels),
    )
