"""Pure signal functions on tensors: mu-law companding (more join as the project grows).

Shapes: audio is ``[..., T]`` float in [-1, 1]; mu-law classes are ``[..., T]`` int64 in
``[0, quantization_channels - 1]``.
"""

from __future__ import annotations

import math

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
