"""Phase gradient heap integration (issue 16): phases from magnitudes, as Griffin-Lim's start."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqspeech.config import load_recipe
from vqspeech.vocoder import griffin_lim, pghi_phase, stft_magnitude

N_FFT, HOP, SR = 512, 128, 16000


def speech_like(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A gliding harmonic tone (f0 120 -> 200 Hz, 20 harmonics) with a syllable-rate envelope, ``[1, T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 80 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 21))
    wave *= 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return torch.from_numpy((0.1 * wave).astype(np.float32))[None]


def spectral_convergence(reference: torch.Tensor, audio: torch.Tensor) -> float:
    """||S_ref| - |S||_F / ||S_ref||_F: how far the audio's magnitudes are from the ones asked for."""
    a, b = stft_magnitude(reference, N_FFT, HOP), stft_magnitude(audio, N_FFT, HOP)
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(a))


@pytest.mark.parametrize("f", [1003.7, 1010.0, 2222.2])
def test_a_steady_tone_gets_its_phase_advances_right(f: float) -> None:
    # A stationary sinusoid between bins: its STFT phase advances by 2 pi f hop per frame (read
    # off the log-magnitude's slope across bins: the bin's own frequency is not the tone's) and
    # steps by pi from bin to bin across its main lobe (torch.stft's frame-start convention).
    t = torch.arange(SR) / SR
    wave = torch.sin(2 * math.pi * f * t + 0.7)[None]
    spec = torch.stft(wave, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), center=True, return_complex=True)
    estimated = pghi_phase(torch.log(spec.abs().clamp(min=1e-10)), N_FFT, HOP)[0].double()
    centre = round(f * N_FFT / SR)
    lobe, steady = slice(centre - 1, centre + 2), slice(4, -4)  # away from the padded edges
    true = spec[0, lobe, steady]

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        return torch.angle(torch.exp(1j * x)).abs()

    advance = estimated[lobe, steady][:, 1:] - estimated[lobe, steady][:, :-1]
    assert wrapped(torch.angle(true[:, 1:] * true[:, :-1].conj()) - advance).max() < 0.05
    across = estimated[lobe, steady][1:] - estimated[lobe, steady][:-1]
    assert wrapped(torch.angle(true[1:] * true[:-1].conj()) - across).max() < 0.01


def test_a_click_gets_its_phase_slope_across_bins_right() -> None:
    # An impulse between frame centres: each frame's phase is linear across bins, its slope set by
    # the click's offset from the frame centre, read off the log-magnitude's slope across frames.
    wave = torch.zeros(1, SR)
    wave[0, 8000 + 37] = 1.0
    spec = torch.stft(wave, N_FFT, HOP, N_FFT, torch.hann_window(N_FFT), center=True, return_complex=True)
    estimated = pghi_phase(torch.log(spec.abs().clamp(min=1e-10)), N_FFT, HOP)[0].double()
    for frame in (62, 63, 64):  # the frames whose windows hold the click
        true = torch.angle(spec[0, 11:200, frame] * spec[0, 10:199, frame].conj())
        step = estimated[11:200, frame] - estimated[10:199, frame]
        assert torch.angle(torch.exp(1j * (true - step))).abs().max() < 0.05


def test_pghi_phases_rebuild_the_magnitudes_far_better_than_random_ones() -> None:
    wave = speech_like()
    mag = stft_magnitude(wave, N_FFT, HOP)
    window = torch.hann_window(N_FFT)
    phase = pghi_phase(torch.log(mag.clamp(min=1e-10)), N_FFT, HOP)
    rebuilt = torch.istft(torch.polar(mag, phase), N_FFT, HOP, N_FFT, window, center=True, length=SR)
    noise = torch.rand(mag.shape, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    scrambled = torch.istft(torch.polar(mag, noise), N_FFT, HOP, N_FFT, window, center=True, length=SR)
    assert spectral_convergence(wave, rebuilt) < 0.25
    assert spectral_convergence(wave, rebuilt) < 0.5 * spectral_convergence(wave, scrambled)


@pytest.mark.parametrize("iterations", [4, 12])
def test_griffin_lim_from_pghi_converges_further_than_from_random_phases(iterations: int) -> None:
    wave = speech_like(seed=1)
    mag = stft_magnitude(wave, N_FFT, HOP)
    runs = {
        init: griffin_lim(
            mag, N_FFT, HOP, SR, n_iter=iterations, generator=torch.Generator().manual_seed(0), init=init
        )
        for init in ("random", "pghi")
    }
    assert spectral_convergence(wave, runs["pghi"]) < 0.7 * spectral_convergence(wave, runs["random"])


def test_pghi_is_deterministic_and_batched_rows_are_independent() -> None:
    a, b = speech_like(seed=2), speech_like(seed=3)
    log_mag = torch.log(stft_magnitude(torch.cat([a, b]), N_FFT, HOP).clamp(min=1e-10))
    both = pghi_phase(log_mag, N_FFT, HOP)
    assert torch.equal(both, pghi_phase(log_mag, N_FFT, HOP))
    assert torch.equal(both[1:], pghi_phase(log_mag[1:], N_FFT, HOP))
    out = griffin_lim(log_mag.exp(), N_FFT, HOP, SR, n_iter=3, init="pghi")
    assert torch.equal(out, griffin_lim(log_mag.exp(), N_FFT, HOP, SR, n_iter=3, init="pghi"))


def test_phase_init_is_a_checked_setting_and_the_demo_uses_pghi() -> None:
    assert load_recipe("demo").model.spectrogram.phase_init == "pghi"
    assert load_recipe("paper").model.spectrogram.phase_init == "random"  # as before
    with pytest.raises(Exception, match="phase_init"):
        load_recipe("demo", ["model.spectrogram.phase_init=zero"])
    with pytest.raises(ValueError, match="init"):
        griffin_lim(torch.ones(1, 257, 4), N_FFT, HOP, 3 * HOP, n_iter=1, init="zero")
