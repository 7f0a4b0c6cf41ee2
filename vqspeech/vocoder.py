"""Vocoders that need no training: magnitude spectrogram -> waveform.

:func:`griffin_lim` is the fast Griffin-Lim of Perraudin, Balazs and Søndergaard (2013):
alternate projections between consistent STFTs and the given magnitudes, with momentum.
It runs batched on torch (CPU or GPU), because torchaudio's version no longer loads and
librosa's is single-utterance numpy.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stft_magnitude(audio: Tensor, n_fft: int, hop_length: int, win_length: int | None = None) -> Tensor:
    """Float audio ``[B, T]`` -> magnitudes ``[B, n_fft // 2 + 1, 1 + T // hop_length]`` (Hann, centred)."""
    win = win_length or n_fft
    window = torch.hann_window(win, device=audio.device)
    return torch.stft(
        audio.float(),
        n_fft,
        hop_length,
        win,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    ).abs()


def griffin_lim(
    magnitude: Tensor,
    n_fft: int,
    hop_length: int,
    length: int,
    n_iter: int = 32,
    momentum: float = 0.99,
    win_length: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Magnitudes ``[B, n_fft // 2 + 1, frames]`` -> float audio ``[B, length]``.

    Starts from random phases (``generator`` makes it repeatable) and runs ``n_iter``
    fast Griffin-Lim iterations with ``momentum`` (0 gives the classic algorithm).
    """
    win = win_length or n_fft
    window = torch.hann_window(win, device=magnitude.device)
    magnitude = magnitude.float()
    phase = torch.rand(magnitude.shape, generator=generator, device="cpu").to(magnitude.device)
    angles = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * phase)
    previous = torch.zeros_like(angles)
    alpha = momentum / (1 + momentum)
    for _ in range(n_iter):
        audio = torch.istft(magnitude * angles, n_fft, hop_length, win, window=window, length=length)
        rebuilt = torch.stft(
            audio,
            n_fft,
            hop_length,
            win,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        angles = torch.sgn(rebuilt - alpha * previous)  # z / |z| in one op (0 stays 0)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft, hop_length, win, window=window, length=length)
