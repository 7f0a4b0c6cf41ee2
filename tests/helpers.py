"""Test helpers: tiny random-weight checkpoints and short test signals, made in tmp folders.

The model is the ``demo`` recipe shrunk (as in ``tests/test_train.py``'s TINY list) so that the
WaveNet generates a second of audio in a fraction of a second on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from vqspeech.checkpoint import save_checkpoint
from vqspeech.config import ModelConfig, Recipe, WaveNetConfig, load_recipe
from vqspeech.loop import SilentCallback, StepMetrics
from vqspeech.model import VQVAE

TINY_MODEL = [
    "model.encoder.channels=16",
    "model.encoder.res_dilations=[1, 2]",
    "model.quantizer.dim=8",
    "model.quantizer.codebook_size=32",
    "model.decoder.residual_channels=16",
    "model.decoder.gate_channels=32",
    "model.decoder.skip_channels=32",
    "model.decoder.layers_per_cycle=4",
    "model.decoder.cond_channels=16",
]

#: The image and video tests' shrunk networks (``vqspeech.vision`` recipes) and short schedules.
TINY_VISION_NETWORKS = [
    "model.channels=16",
    "model.res_channels=8",
    "model.n_res_blocks=1",
    "model.quantizer.dim=8",
    "model.quantizer.codebook_size=16",
    "prior.channels=8",
    "prior.layers=2",
    "prior.kernel_size=3",
]
TINY_VISION_SCHEDULES = [
    "train.batch_size=4",
    "train.eval_every=2",
    "train.warmup_steps=1",
    "prior_train.batch_size=4",
    "prior_train.eval_every=2",
    "prior_train.warmup_steps=1",
]

SPEAKERS = ("s01", "s02", "s03")


def _speaker_dims() -> list[str]:
    """Overrides for the speaker-vector size wherever this version's config keeps it."""
    places = {"model.speaker_dim": ModelConfig, "model.decoder.speaker_dim": WaveNetConfig}
    return [key for key, cls in places.items() if "speaker_dim" in {f.name for f in dataclasses.fields(cls)}]


def tiny_recipe(n_speakers: int = len(SPEAKERS), *extra: str) -> Recipe:
    """The ``demo`` recipe shrunk to a few thousand weights, with ``n_speakers`` speakers and the
    paper's WaveNet as its (only) decoder unless ``extra`` says otherwise."""
    dims = [f"{key}=8" for key in _speaker_dims()]
    families = (
        ["model.decoders=[wavenet]"]
        if "decoders" in {f.name for f in dataclasses.fields(ModelConfig)}
        else []
    )
    return load_recipe("demo", [*TINY_MODEL, *dims, *families, f"model.n_speakers={n_speakers}", *extra])


def make_checkpoint(
    path: Path, seed: int = 0, speakers: Sequence[str] = SPEAKERS, extra: Sequence[str] = ()
) -> Path:
    """A tiny random-weight checkpoint at ``path`` whose speakers are ``speakers`` (with metadata).

    The codebook is drawn around the encoder's outputs for a few test tones (their mean and
    spread per dimension), so that speech-like audio uses many codes, and far enough apart that
    no frame sits within rounding error of two codes (as after training; a random codebook
    would sit on the encoder's output bias, where float rounding decides the code).
    """
    recipe = tiny_recipe(len(speakers), *extra)
    torch.manual_seed(seed)
    model = VQVAE(recipe.model)
    batch = torch.stack(
        [torch.from_numpy(tone(0.256, f0=f0, seed=i)) for i, f0 in enumerate((90, 150, 220, 400))]
    )
    batch = batch * torch.linspace(0.1, 1.0, batch.shape[1])
    with torch.no_grad():
        out = model.encoder.out  # centre the latents on the tones' mean (bias) and spread them (weight)
        out.bias.zero_()
        latents = model.encoder(batch).transpose(1, 2).flatten(0, 1)
        out.bias.copy_(-latents.mean(0) / latents.std(0))
        out.weight.div_(latents.std(0)[:, None, None])
        q = model.quantizer
        q.embedding.copy_(torch.randn(q.codebook_size, latents.shape[1]))
        if hasattr(q, "ema_sum"):
            q.ema_sum.copy_(q.embedding * q.ema_count[:, None])
        q.initialized.fill_(True)
    model.eval()
    table = [{"id": i, "name": name, "gender": "F" if i % 2 == 0 else "M", "age": 20 + i} for i, name in
             enumerate(speakers)]  # fmt: skip
    return save_checkpoint(path, model, recipe, table)


def tone(seconds: float, sample_rate: int = 16000, f0: float = 180.0, seed: int = 0) -> np.ndarray:
    """A short voiced-sounding signal (f0 and two harmonics, a little noise), float32 ``[T]``."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3)) / 2.0
    return (0.5 * wave + 0.01 * rng.standard_normal(t.shape[0])).astype(np.float32)


def write_tone(
    path: Path, seconds: float = 0.3, sample_rate: int = 16000, channels: int = 1, **kw: float
) -> Path:
    """Write :func:`tone` to ``path`` (format from the extension); parents are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = tone(seconds, sample_rate, **kw)  # type: ignore[arg-type]
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    sf.write(path, data, sample_rate)
    return path


class InterruptAt(SilentCallback):
    """Sends this process SIGINT after step ``at``, as Ctrl-C (or a cluster's SIGTERM) would: the
    training loop saves a checkpoint and stops."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, metrics: StepMetrics) -> None:
        if metrics.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def flip_weight_bytes(path: Path, count: int = 50) -> None:
    """Flip ``count`` bytes inside the largest tensor's storage of checkpoint ``path``, leaving
    the zip archive itself readable (only the content digest can tell)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    (name_len, extra_len) = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(count):
        data[start + (k * 7) % info.file_size] ^= 0x5A
    path.write_bytes(bytes(data))


def voiced_harmonic_model(max_hz: float = 8000.0) -> VQVAE:
    """A tiny spectrogram model with the harmonic vocoder (two speakers) whose pitch head says
    every frame is voiced at ~128 Hz: below ``max_hz`` its audio is harmonics only, no random
    noise, so two decodings differ only where the computation does."""
    torch.manual_seed(0)
    recipe = tiny_recipe(
        2,
        "model.decoders=[spectrogram]",
        "model.spectrogram.channels=16",
        "model.spectrogram.dilations=[1, 2]",
        "model.spectrogram.vocoder=harmonic",
        f"model.spectrogram.harmonic_max_hz={max_hz}",
    )
    model = VQVAE(recipe.model).eval()
    head = model.spectrogram_decoder.pitch
    assert head is not None
    with torch.no_grad():
        weight, bias = head.out.parameters()
        weight.mul_(0.01)
        bias.copy_(torch.tensor([5.0, 0.0]))
    return model
