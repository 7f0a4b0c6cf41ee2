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


#: ``--precision`` names: how decoder networks compute when decoding (encoding is always float32).
PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 where ``device`` computes it natively (:func:`native_bfloat16`), else
    float32; or ``float32`` / ``bfloat16``. ConfigError for another name.

    Why bfloat16 by default where it is native: the spectrogram decoder's network is most of a
    decode's time and runs at the CPU's float32 multiply rate; in bfloat16 it is ~2x faster and a
    600-s file decodes ~1.35x faster (issue 16, one thread), and the decoded audio scores the
    same (20 held-out-engine files: STOI 0.7987 vs 0.7991, PESQ-WB 1.354 vs 1.347, DNSMOS 2.834 vs 2.833).
    """
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """The context a decoder network runs in to compute in ``dtype`` (a no-op for float32).

    Only around plain calls, never around a ``yield``: autocast is thread-wide state, and a
    generator suspended inside it would leave it on for whoever iterates it."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
