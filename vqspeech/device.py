"""Which torch device a ``--device`` name means: the one place that decides (training and inference)."""

from __future__ import annotations

import torch

from vqspeech.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (this rank's GPU under torchrun), else CPU; or ``cpu``/``cuda``.

    ConfigError for ``cuda`` without a CUDA device, or an unknown name.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device("cpu")
