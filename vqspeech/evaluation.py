"""Objective measures of reconstructions: intelligibility (STOI), spectral distances, bitrate.

Every metric compares a reference and a degraded waveform of the same length at the same
rate (float ``[T]`` numpy arrays). Conventions:

* ``log_mel_distance``: mean absolute difference of 80-band log-mel spectrograms in dB
  (``20 log10`` of mel magnitudes; 1024-point FFT, 256 hop, at 16 kHz). 0 is identical.
* ``mel_cepstral_distortion``: MCD in dB over mel-cepstra 1..13 (c0, the loudness, is left
  out), frame by frame without time warping (reconstructions are aligned with their source),
  over the frames where the reference is within 40 dB of its loudest: silent frames would
  otherwise dominate it with noise-floor differences nobody hears.
* ``stoi``: short-time objective intelligibility (Taal et al. 2011) via ``pystoi``, in [0, 1].
  For scale: noise shaped by the speech's loudness envelope scores ~0.6 on our corpus.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from vqspeech.audio import load_audio
from vqspeech.checkpoint import load_checkpoint
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import open_corpus
from vqspeech.errors import ConfigError
from vqspeech.features import log_mel_spectrogram

_DB = 20.0 / math.log(10.0)  # natural log of magnitude -> dB


def log_mel_distance(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean |log-mel(reference) - log-mel(degraded)| in dB (see the module docstring)."""
    ref, deg = _pair(reference, degraded)
    a = log_mel_spectrogram(ref, sample_rate)
    b = log_mel_spectrogram(deg, sample_rate)
    return float((a - b).abs().mean()) * _DB


def mel_cepstral_distortion(
    reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000, n_coefficients: int = 13
) -> float:
    """MCD in dB: ``(10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged over frames, d = 1..13."""
    ref, deg = _pair(reference, degraded)
    ca, loudness = _mel_cepstrum(ref, sample_rate, n_coefficients)
    cb, _ = _mel_cepstrum(deg, sample_rate, n_coefficients)
    speech = loudness > loudness.max() - 40.0 / _DB  # natural-log units
    per_frame = torch.sqrt(2.0 * ((ca - cb)[:, speech] ** 2).sum(dim=0))
    return float(per_frame.mean()) * 10.0 / math.log(10.0)


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility in [0, 1] (``pystoi``; ``pip install vqspeech[eval]``)."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        raise ConfigError("STOI needs the pystoi package: pip install 'vqspeech[eval]'") from None
    n = min(len(reference), len(degraded))
    return float(
        _stoi(np.asarray(reference[:n], np.float64), np.asarray(degraded[:n], np.float64), sample_rate)
    )


def median_f0(audio: np.ndarray, sample_rate: int = 16000, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median fundamental frequency in Hz over the loud frames (YIN, librosa); NaN if none.

    Loud frames (RMS within 25 dB of the loudest) stand in for voiced ones: cheap, and
    enough to tell a 110 Hz voice from a 220 Hz one.
    """
    import librosa

    wave = np.asarray(audio, np.float32)
    if len(wave) < 2048:
        return float("nan")
    f0 = librosa.yin(wave, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=1024, hop_length=256)
    rms = librosa.feature.rms(y=wave, frame_length=1024, hop_length=256)[0]
    n = min(len(f0), len(rms))
    loud = rms[:n] > rms.max() * 10 ** (-25 / 20)
    return float(np.median(f0[:n][loud])) if loud.any() else float("nan")


@dataclass(frozen=True)
class ReconstructionScores:
    """Mean scores over utterances (each in the unit of its function above)."""

    n: int
    stoi: float
    log_mel_distance: float
    mel_cepstral_distortion: float


def score_reconstructions(
    pairs: list[tuple[np.ndarray, np.ndarray]], sample_rate: int = 16000
) -> ReconstructionScores:
    """Average :func:`stoi`, :func:`log_mel_distance` and :func:`mel_cepstral_distortion` over pairs."""
    if not pairs:
        raise ConfigError("no utterances to score")
    s = [stoi(a, b, sample_rate) for a, b in pairs]
    d = [log_mel_distance(a, b, sample_rate) for a, b in pairs]
    m = [mel_cepstral_distortion(a, b, sample_rate) for a, b in pairs]
    return ReconstructionScores(len(pairs), float(np.mean(s)), float(np.mean(d)), float(np.mean(m)))


def _pair(reference: np.ndarray, degraded: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(len(reference), len(degraded))
    return (
        torch.as_tensor(np.asarray(reference[:n], np.float32)),
        torch.as_tensor(np.asarray(degraded[:n], np.float32)),
    )


def _mel_cepstrum(
    audio: torch.Tensor, sample_rate: int, n_coefficients: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mel-cepstrum 1..n ``[n, frames]`` and each frame's mean log-mel level ``[frames]``.

    The cepstral convention MCD assumes: ``log S(m) = c_0 + 2 sum_d c_d cos(pi d (m + 1/2) / M)``
    over the ``M`` mel bands (natural log of amplitude), so ``c_d = (1/M) sum_m log S(m) cos(...)``.
    (An orthonormal DCT would scale every c_d by sqrt(M/2), about 6x for 80 bands.)
    """
    log_mel = log_mel_spectrogram(audio, sample_rate)  # [M, frames]
    m = log_mel.shape[0]
    k = torch.arange(m, dtype=torch.float32)
    basis = torch.cos(torch.pi / m * (k[None, :] + 0.5) * k[:, None]) / m  # [M, M]
    return (basis @ log_mel)[1 : n_coefficients + 1], log_mel.mean(dim=0)


@dataclass(frozen=True)
class HeldOutReport:
    """Reconstruction scores of a model on the held-out utterances of a corpus."""

    decoder: str
    scores: ReconstructionScores
    code_entropy_bits: float  # empirical unigram entropy of the codes, bits per token
    entropy_bitrate: float  # bits/s at that entropy
    raw_bitrate: float  # bits/s at ceil(log2 K) bits per token
    codes_used: int
    decode_x_real_time: float  # seconds of audio decoded per wall-clock second


def evaluate_held_out(
    checkpoint: str,
    data: str,
    decoder: str | None = None,
    max_utterances: int = 16,
    seed: int = 0,
) -> HeldOutReport:
    """Encode and decode (same speaker) the corpus's held-out utterances; score the results.

    The split is the one training used (``recipe.data``), so these utterances were never seen.
    """
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    corpus = open_corpus(data, sample_rate=ckpt.recipe.model.sample_rate)
    utterances = split_for(corpus, ckpt.recipe).valid[:max_utterances]
    sr = ckpt.recipe.model.sample_rate
    pairs, counts, wall, seconds = [], torch.zeros(ckpt.recipe.model.quantizer.codebook_size), 0.0, 0.0
    for utt in utterances:
        audio = torch.from_numpy(load_audio(utt.path, sr))[None]
        codes = model.encode(audio)
        counts += torch.bincount(codes.flatten(), minlength=counts.numel()).float()
        speaker = torch.tensor([ckpt.speaker_id(utt.speaker)])
        start = time.perf_counter()
        out = model.decode(codes, speaker, generator=torch.Generator().manual_seed(seed), decoder=decoder)
        wall += time.perf_counter() - start
        seconds += audio.shape[1] / sr
        pairs.append((audio[0].numpy(), out[0, : audio.shape[1]].numpy()))
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * torch.log2(p[p > 0])).sum())
    m = ckpt.recipe.model
    return HeldOutReport(
        decoder=decoder or m.decoders[0],
        scores=score_reconstructions(pairs, sr),
        code_entropy_bits=entropy,
        entropy_bitrate=entropy * m.token_rate,
        raw_bitrate=m.bitrate,
        codes_used=int((counts > 0).sum()),
        decode_x_real_time=seconds / max(wall, 1e-9),
    )


@dataclass(frozen=True)
class ConversionPitch:
    """How far conversion moves the pitch: semitones from the source voice toward the target's.

    ``moved`` is the median F0 change source -> converted; ``wanted`` is the median gap
    between source and target speakers' real utterances. ``moved / wanted`` near 1 means the
    converted voice sits at the target's pitch; near 0 means the source voice stayed.
    """

    n: int
    moved_semitones: float
    wanted_semitones: float


def conversion_pitch(
    checkpoint: str, data: str, decoder: str | None = None, max_utterances: int = 16, seed: int = 0
) -> ConversionPitch:
    """Convert each held-out utterance to the speaker whose real pitch is farthest from its own."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    sr = ckpt.recipe.model.sample_rate
    corpus = open_corpus(data, sample_rate=sr)
    split = split_for(corpus, ckpt.recipe)
    pitch: dict[str, list[float]] = {}
    for utt in split.train:
        if len(pitch.setdefault(utt.speaker, [])) < 4:
            pitch[utt.speaker].append(median_f0(load_audio(utt.path, sr), sr))
    speaker_f0 = {name: float(np.nanmedian(v)) for name, v in pitch.items()}
    moved, wanted = [], []
    for utt in split.valid[:max_utterances]:
        target = max(speaker_f0, key=lambda name: abs(np.log2(speaker_f0[name] / speaker_f0[utt.speaker])))
        audio = torch.from_numpy(load_audio(utt.path, sr))[None]
        converted = model.decode(
            model.encode(audio),
            torch.tensor([ckpt.speaker_id(target)]),
            generator=torch.Generator().manual_seed(seed),
            decoder=decoder,
        )
        f_src, f_out = median_f0(audio[0].numpy(), sr), median_f0(converted[0].numpy(), sr)
        moved.append(12 * np.log2(f_out / f_src))
        wanted.append(12 * np.log2(speaker_f0[target] / speaker_f0[utt.speaker]))
    # sign-align: how far along the wanted direction the pitch moved
    sign = np.sign(wanted)
    return ConversionPitch(
        len(moved), float(np.nanmean(np.array(moved) * sign)), float(np.nanmean(np.abs(wanted)))
    )
