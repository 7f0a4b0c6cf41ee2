"""Pictures for people: spectrogram panels as PNG (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vqspeech.features import log_mel_spectrogram


def save_spectrograms(path: str | Path, audio: Mapping[str, np.ndarray], sample_rate: int) -> Path:
    """One log-mel panel per named waveform (``[T]`` float), stacked vertically, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(len(audio), 1, figsize=(8, 2.2 * len(audio)), squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], audio.items(), strict=True):
        mel = log_mel_spectrogram(torch.from_numpy(np.asarray(wav, dtype=np.float32)), sample_rate)
        seconds = len(wav) / sample_rate
        ax.imshow(
            mel.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0])
        )
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
