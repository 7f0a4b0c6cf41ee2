"""Pitch: a batched YIN that measures it, and the head that predicts it from the codes (issue 16).

:func:`yin` is YIN (de Cheveigne and Kawahara 2002) in torch, on a batch, on the model's device:
the speaker encoder pools its frames into the measured pitch entry
(:func:`vqspeech.nn.speaker.log2_f0_sums`), and the spectrogram decoder's harmonic vocoder
learns from its frames (:class:`PitchHead`, trained on :func:`pitch_targets`). Not
``librosa.yin`` / ``pyin``: those are numpy, one signal at a time, and pYIN costs ~0.3 s per
second of audio; this runs inside a training step on the batch's own audio.

:class:`PitchHead` reads the spectrogram decoder's hidden frames (codes + speaker, after its
FiLM blocks) and predicts, per output frame, a voicing logit and log2 F0. Why predict pitch at
all: the decoder's L1-regressed magnitudes blur the harmonics, so Griffin-Lim's output has no
pitch a tracker can find (pYIN calls 0-3 % of its frames voiced where the recordings have
60-70 %), and that is much of why it sounds rough. Synthesising the harmonics at a predicted
F0 (:func:`vqspeech.vocoder.harmonic_plus_noise`) makes them coherent by construction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import PITCH_DILATIONS, PITCH_KERNEL

#: YIN's threshold on the cumulative-mean-normalised difference (de Cheveigne and Kawahara 2002).
YIN_THRESHOLD = 0.15
#: Frames whose best normalised difference stays above this are not voiced.
VOICED_MAX = 0.35
#: The pitch head predicts ``log2(F0 / 2 ** PITCH_REFERENCE)``, so its outputs start near 0 (128 Hz).
PITCH_REFERENCE = 7.0
#: Weight of the log2-F0 error (octaves) against the voicing cross-entropy in :func:`pitch_loss`:
#: a tenth of an octave (1.2 semitones) then costs about what a 10 % voicing error does.
F0_WEIGHT = 4.0


class Yin(NamedTuple):
    """Per-frame YIN measurements of a batch: ``voiced [B, N]`` (bool), ``log2_f0 [B, N]`` (Hz).

    ``log2_f0`` is defined on every frame; it means something only where ``voiced``.
    """

    voiced: Tensor
    log2_f0: Tensor


def yin(
    audio: Tensor,
    sample_rate: int,
    hop_length: int,
    fmin: float = 60.0,
    fmax: float = 400.0,
    frames: int | None = None,
    centred: bool = False,
) -> Yin:
    """YIN on float audio ``[B, T]``: one frame every ``hop_length`` samples.

    Frames of ``2W`` samples (``W`` = one period of ``fmin``); the difference function
    ``d(tau) = sum_j (x_j - x_{j+tau})^2`` over the first ``W`` samples, from an FFT
    cross-correlation and running energies; its cumulative-mean normalisation; the first lag in
    ``[sr / fmax, W]`` below :data:`YIN_THRESHOLD` (else the smallest), walked down to its dip's
    bottom and refined by a parabola. A frame is voiced when it is loud (within 40 dB of the
    batch row's loudest) and periodic (normalised difference below :data:`VOICED_MAX`).

    ``centred=False``: frame ``n`` starts at sample ``n * hop`` (``1 + (T - 2W) // hop`` frames).
    ``centred=True``: frame ``n`` is centred on sample ``n * hop`` (the audio is zero-padded by
    ``W`` each side), ``frames`` of them (default ``1 + T // hop``): an STFT's frame grid.
    No gradient: a measurement.
    """
    with torch.no_grad():
        audio = audio.float()
        w = math.ceil(sample_rate / fmin)
        frame = 2 * w
        if centred:
            count = 1 + audio.shape[-1] // hop_length if frames is None else frames
            need = (count - 1) * hop_length + frame
            audio = F.pad(audio, (w, max(0, need - audio.shape[-1] - w)))[..., :need]
        elif audio.shape[-1] < frame:
            audio = F.pad(audio, (0, frame - audio.shape[-1]))
        x = audio.unfold(-1, frame, hop_length)  # [B, N, 2W]
        x = x - x.mean(dim=-1, keepdim=True)
        n_fft = 1 << (2 * frame - 1).bit_length()
        head = torch.fft.rfft(x[..., :w], n=n_fft)
        whole = torch.fft.rfft(x, n=n_fft)
        r = torch.fft.irfft(head.conj() * whole, n=n_fft)[..., : w + 1]  # [B, N, W+1]: sum x_j x_{j+tau}
        squares = F.pad(x.square().cumsum(dim=-1), (1, 0))  # [B, N, 2W+1]
        e0 = squares[..., w : w + 1]  # energy of x_0..x_{W-1}
        lags = torch.arange(w + 1, device=audio.device)
        e_tau = squares[..., lags + w] - squares[..., lags]  # energy of x_tau..x_{tau+W-1}
        d = (e0 + e_tau - 2 * r).clamp(min=0.0)
        running = d[..., 1:].cumsum(dim=-1) / lags[1:]
        cmnd = torch.cat([torch.ones_like(d[..., :1]), d[..., 1:] / running.clamp(min=1e-12)], dim=-1)
        lo = max(2, math.floor(sample_rate / fmax))
        window = cmnd[..., lo:w]  # [B, N, W - lo]
        below = window < YIN_THRESHOLD
        # YIN takes the first dip below the threshold, then walks down to its local minimum
        idx = torch.where(below.any(dim=-1), below.float().argmax(dim=-1), window.argmin(dim=-1))
        for _ in range(window.shape[-1]):  # downhill to the dip's bottom (low voices: wide dips)
            nxt = (idx + 1).clamp(max=window.shape[-1] - 1)
            step = window.gather(-1, nxt[..., None])[..., 0] < window.gather(-1, idx[..., None])[..., 0]
            if not step.any():
                break
            idx = torch.where(step, nxt, idx)
        best = window.gather(-1, idx[..., None])[..., 0]
        left = window.gather(-1, (idx - 1).clamp(min=0)[..., None])[..., 0]
        right = window.gather(-1, (idx + 1).clamp(max=window.shape[-1] - 1)[..., None])[..., 0]
        curve = left - 2 * best + right
        shift = torch.where(
            curve > 1e-9, 0.5 * (left - right) / curve.clamp(min=1e-9), torch.zeros_like(best)
        )
        period = (idx + lo).float() + shift.clamp(-1.0, 1.0)
        energy = e0[..., 0]
        loud = energy > energy.amax(dim=-1, keepdim=True) * 1e-4
        voiced = loud & (best < VOICED_MAX)
        return Yin(voiced, torch.log2(sample_rate / period.clamp(min=1.0)))


class PitchHead(nn.Module):
    """Decoder hidden frames ``[B, C, F']`` -> ``[B, 2, F']``: voicing logit, ``log2 F0 - PITCH_REFERENCE``.

    A 3-wide conv to ``hidden`` channels, residual dilated :data:`~vqspeech.config.PITCH_KERNEL`-wide
    convs (GELU before each), a 1x1 out. It reaches
    :data:`~vqspeech.config.PITCH_HEAD_REACH` output frames each side, beyond the decoder's own.
    """

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.inp = nn.Conv1d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(hidden, hidden, PITCH_KERNEL, dilation=d, padding=d * (PITCH_KERNEL - 1) // 2)
            for d in PITCH_DILATIONS
        )
        self.out = nn.Conv1d(hidden, 2, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.inp(hidden)
        for block in self.blocks:
            h = h + block(F.gelu(h))
        return self.out(F.gelu(h))


def pitch_loss(predicted: Tensor, target: Yin) -> Tensor:
    """Voicing cross-entropy plus :data:`F0_WEIGHT` x mean absolute log2-F0 error on voiced frames.

    ``predicted [B, 2, F']`` from :class:`PitchHead`; ``target`` the audio's :func:`yin` on the
    same frame grid (``[B, F']``).
    """
    logit, log2_f0 = predicted[:, 0].float(), predicted[:, 1].float() + PITCH_REFERENCE
    voiced = target.voiced
    bce = F.binary_cross_entropy_with_logits(logit, voiced.float())
    if not voiced.any():
        return bce
    return bce + F0_WEIGHT * (log2_f0[voiced] - target.log2_f0[voiced]).abs().mean()


def decode_pitch(predicted: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`PitchHead` output ``[B, 2, N]`` -> ``f0 [B, N]`` in Hz, ``voiced [B, N]`` (bool)."""
    return torch.exp2(predicted[:, 1].float() + PITCH_REFERENCE), predicted[:, 0] > 0
