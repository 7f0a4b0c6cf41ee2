"""Pictures for people: spectrograms, code usage and training curves as PNG.

matplotlib is the optional ``[train]`` extra: it is imported lazily, inside each function,
with the Agg backend (no display needed), so importing this module costs nothing. Every
function returns the PNG's bytes (for embedding, e.g. :mod:`vqspeech.report`) or writes it
atomically (:func:`save_spectrograms`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqspeech.features import log_mel_spectrogram
from vqspeech.files import write_atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int) -> bytes:
    """Render ``fig`` to PNG bytes and free it (pyplot keeps every open figure otherwise)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def spectrograms_png(audio: Mapping[str, np.ndarray], sample_rate: int, dpi: int = 80) -> bytes:
    """One log-mel panel per named waveform (float ``[T]``), stacked vertically, as PNG bytes.

    The panels share one time axis (the longest waveform's seconds) and one colour scale, so
    a reconstruction or conversion compares with its original at a glance.
    """
    plt = _pyplot()
    mels = {
        name: log_mel_spectrogram(torch.from_numpy(np.asarray(wav, dtype=np.float32)), sample_rate).numpy()
        for name, wav in audio.items()
    }
    seconds = max(len(wav) for wav in audio.values()) / sample_rate
    low = min(float(m.min()) for m in mels.values())
    high = max(float(m.max()) for m in mels.values())
    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 1.2 + 1.6 * len(mels)), squeeze=False)
    for ax, (name, mel) in zip(axes[:, 0], mels.items(), strict=True):
        extent = (0.0, len(audio[name]) / sample_rate, 0.0, float(mel.shape[0]))
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=extent, vmin=low, vmax=high)
        ax.set_xlim(0.0, seconds)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    return _png(fig, dpi)


def save_spectrograms(path: str | Path, audio: Mapping[str, np.ndarray], sample_rate: int) -> Path:
    """:func:`spectrograms_png` written to ``path`` atomically (temp file + rename)."""
    data = spectrograms_png(audio, sample_rate)
    return write_atomic(path, lambda handle: handle.write(data), "spectrogram picture")


def code_usage_png(counts: Sequence[int], dpi: int = 80) -> bytes:
    """Codebook usage: the ``K`` codes' counts ``[K]`` sorted from most to least used, log scale.

    A healthy codebook gives a long, gently falling curve; collapse shows as a few tall bars
    and a long run of zeros (drawn as the shaded "unused" span).
    """
    plt = _pyplot()
    ordered = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    used = int((ordered > 0).sum())
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.bar(np.arange(len(ordered)), np.maximum(ordered, 0.5), width=1.0, color="#3b6ea5")
    if used < len(ordered):
        ax.axvspan(used - 0.5, len(ordered) - 0.5, color="#dddddd", label=f"unused ({len(ordered) - used})")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(ordered) - 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("count")
    ax.set_title(f"{used} of {len(ordered)} codes used", fontsize=9, loc="left")
    fig.tight_layout()
    return _png(fig, dpi)


def curves_png(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], dpi: int = 80
) -> bytes:
    """Line plots side by side: ``{panel title: {series label: (steps, values)}}``.

    Panels with no series are left out; an empty mapping gives a one-panel "no data" figure.
    """
    plt = _pyplot()
    shown = {title: series for title, series in panels.items() if series}
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.0 * max(1, len(shown)), 2.8), squeeze=False)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no training metrics", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, (title, series) in zip(axes[0], shown.items(), strict=False):
        for label, (steps, values) in series.items():
            ax.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, label=label)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig, dpi)
