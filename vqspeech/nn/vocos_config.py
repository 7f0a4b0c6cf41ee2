"""Configuration of the Vocos-style waveform decoder (issue 16); imports no torch.

Kept apart from :mod:`vqspeech.nn.vocos` so that the recipe layer (``config.py``, which must not
import torch) can hold it once the decoder-family registry lands: it moves there unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class VocosConfig:
    """Codes + speaker -> ConvNeXt backbone at the STFT frame rate -> log-magnitude and phase -> iSTFT.

    One STFT frame every ``frame_stride`` tokens: the STFT hop is ``frame_stride * hop_length``
    samples and the window ``n_fft`` (Hann, centred). The default, 2 tokens per frame at the
    demo's 64-sample tokens (hop 128, n_fft 512 = 32 ms, 31 Hz bins), halves the backbone's
    work against one frame per token (hop 64, n_fft 256, 62.5 Hz bins: too coarse for the
    harmonics of low voices) and is the grid the Griffin-Lim copy-synthesis ceiling of issue 16
    is measured on, so the two families are compared on the same analysis.

    Backbone: ``blocks`` ConvNeXt blocks of ``channels`` (depthwise conv of ``kernel_size``
    frames, adaptive LayerNorm whose scale and shift come from the speaker vector, pointwise
    ``channels -> expansion * channels -> channels``, layer scale), then the head predicts
    ``n_fft // 2 + 1`` log magnitudes (clamped at ``max_log_magnitude`` before ``exp``) and as
    many phase angles, used through ``cos`` / ``sin`` as in Vocos (Siuzdak 2023, section 3).
    """

    channels: int = 192
    blocks: int = 8
    kernel_size: int = 7
    expansion: int = 3
    n_fft: int = 512
    frame_stride: int = 2
    max_log_magnitude: float = 7.0  # exp(7) ~ 1100: far above any speech frame (< ~100), finite

    def __post_init__(self) -> None:
        if self.channels < 1 or self.blocks < 0 or self.expansion < 1:
            raise ValueError(f"channels, blocks and expansion must be positive: {self}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {self.frame_stride}")
        if self.n_fft < 2 or self.n_fft % 2:
            raise ValueError(f"n_fft must be even, got {self.n_fft}")

    def frame_hop(self, hop_length: int) -> int:
        """STFT hop in samples: ``frame_stride * hop_length``."""
        return self.frame_stride * hop_length

    @property
    def backbone_reach(self) -> int:
        """STFT frames either side that one backbone output frame depends on (input conv excluded)."""
        return self.blocks * (self.kernel_size // 2)

    def context_tokens(self, hop_length: int) -> int:
        """Tokens of context either side of a chunk that make chunked decoding exact.

        An output sample depends on the frames whose window covers it (``n_fft / 2`` samples
        either side), each of those on ``backbone_reach`` frames either side, and each frame on
        ``frame_stride`` tokens either side of its centre (the input conv), plus one frame of
        rounding at each end.
        """
        hop = self.frame_hop(hop_length)
        frames = math.ceil(self.n_fft / 2 / hop) + 1 + self.backbone_reach + 1
        return frames * self.frame_stride

    def receptive_field(self, hop_length: int) -> int:
        """Samples one output sample depends on (both sides together), an upper bound."""
        return 2 * self.context_tokens(hop_length) * hop_length


@dataclass(frozen=True)
class VocosLossConfig:
    """Loss weights of the two training stages.

    Reconstruction stage: ``stft_weight`` x multi-resolution STFT loss (spectral convergence +
    log-magnitude L1 at ``resolutions`` of (n_fft, hop)) + ``mel_weight`` x log-mel L1.
    Adversarial stage (after the warm-up): the generator adds ``adversarial_weight`` x the
    least-squares GAN loss and ``feature_weight`` x feature matching, and the reconstruction
    terms are scaled by ``gan_reconstruction_scale`` (HiFi-GAN weights mel 45, features 2,
    adversarial 1; our mel term is a mean, not a sum over mels, so the scale is smaller).
    """

    stft_weight: float = 1.0
    mel_weight: float = 1.0
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (256, 64))
    n_mels: int = 80
    mel_n_fft: int = 1024
    mel_hop: int = 256
    adversarial_weight: float = 1.0
    feature_weight: float = 2.0
    gan_reconstruction_scale: float = 15.0
