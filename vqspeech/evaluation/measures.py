"""Signal measures: a reference and a degraded waveform scored; code usage and entropy.

Reconstructions compare a reference and a degraded waveform of the same length at the same rate
(float ``[T]`` numpy arrays); see :mod:`vqspeech.evaluation` for what each measure means.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vqspeech.audio import resample
from vqspeech.errors import ConfigError, DataError
from vqspeech.evaluation.quality import dnsmos, mean_or_none, speaker_similarity
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
    per_frame = torch.sqrt(2.0 * ((ca - cb)[:, _speech_frames(loudness)] ** 2).sum(dim=0))
    return float(per_frame.mean()) * 10.0 / math.log(10.0)


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility in [0, 1] (``pystoi``; ``pip install vqspeech[eval]``)."""
    _stoi = _pystoi()
    n = min(len(reference), len(degraded))
    return float(
        _stoi(np.asarray(reference[:n], np.float64), np.asarray(degraded[:n], np.float64), sample_rate)
    )


def _pystoi() -> Callable[..., float]:
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        raise ConfigError("STOI needs the pystoi package: pip install 'vqspeech[eval]'") from None
    return _stoi


def pesq_available() -> bool:
    """True when the optional ``pesq`` package imports (``pip install 'vqspeech[pesq]'``)."""
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float | None:
    """Wide-band PESQ MOS-LQO in [1.04, 4.64], higher is better; None without the ``pesq`` package.

    PESQ-WB is defined at 16 kHz, so other rates are resampled first. None too where PESQ
    finds no speech to score (silence, too short): one odd utterance should not end a run.
    """
    try:
        from pesq import PesqError
        from pesq import pesq as _pesq
    except ImportError:
        return None
    n = min(len(reference), len(degraded))
    ref = resample(np.asarray(reference[:n], np.float32), sample_rate, 16000)
    deg = resample(np.asarray(degraded[:n], np.float32), sample_rate, 16000)
    try:
        return float(_pesq(16000, ref.astype(np.float64), deg.astype(np.float64), "wb"))
    except PesqError:
        return None


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
    """Mean scores over ``n`` utterances (each in the unit of its function above).

    ``pesq`` is the mean over the utterances PESQ could score; None without the ``pesq`` package.
    ``dnsmos_ovrl`` / ``dnsmos_ovrl_reference`` (DNSMOS OVRL of the degraded audio / of the
    references) and ``speaker_similarity``: means likewise, None without the ``dnsmos`` /
    ``spkr`` extras (:mod:`vqspeech.evaluation.quality`).
    """

    n: int
    stoi: float
    log_mel_distance: float
    mel_cepstral_distortion: float
    pesq: float | None = None
    dnsmos_ovrl: float | None = None
    dnsmos_ovrl_reference: float | None = None
    speaker_similarity: float | None = None


@dataclass(frozen=True)
class PairScores:
    """The reconstruction measures of one (reference, degraded) pair.

    The last three need optional extras and are None without them: DNSMOS OVRL of the degraded
    audio and of the reference, and the speaker similarity of the two (see
    :mod:`vqspeech.evaluation.quality`).
    """

    stoi: float
    log_mel_distance: float
    mel_cepstral_distortion: float
    pesq: float | None
    dnsmos_ovrl: float | None = None
    dnsmos_ovrl_reference: float | None = None
    speaker_similarity: float | None = None


def score_pair(
    reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000, *, quality: bool = True
) -> PairScores:
    """:func:`stoi`, :func:`log_mel_distance`, :func:`mel_cepstral_distortion`, :func:`pesq_wb`, and
    with ``quality`` (default) DNSMOS OVRL of both sides and their speaker similarity where the
    extras are installed."""
    n = min(len(reference), len(degraded))
    ref, deg = reference[:n], degraded[:n]
    scores = PairScores(
        stoi(ref, deg, sample_rate),
        log_mel_distance(ref, deg, sample_rate),
        mel_cepstral_distortion(ref, deg, sample_rate),
        pesq_wb(ref, deg, sample_rate),
    )
    if not quality:
        return scores
    mos_deg, mos_ref = dnsmos(deg, sample_rate), dnsmos(ref, sample_rate)
    return dataclasses.replace(
        scores,
        dnsmos_ovrl=None if mos_deg is None else mos_deg.ovrl,
        dnsmos_ovrl_reference=None if mos_ref is None else mos_ref.ovrl,
        speaker_similarity=speaker_similarity(ref, deg, sample_rate),
    )


def _mean_scores(scores: Sequence[PairScores]) -> ReconstructionScores:
    return ReconstructionScores(
        n=len(scores),
        stoi=float(np.mean([s.stoi for s in scores])),
        log_mel_distance=float(np.mean([s.log_mel_distance for s in scores])),
        mel_cepstral_distortion=float(np.mean([s.mel_cepstral_distortion for s in scores])),
        pesq=mean_or_none([s.pesq for s in scores]),
        dnsmos_ovrl=mean_or_none([s.dnsmos_ovrl for s in scores]),
        dnsmos_ovrl_reference=mean_or_none([s.dnsmos_ovrl_reference for s in scores]),
        speaker_similarity=mean_or_none([s.speaker_similarity for s in scores]),
    )


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


def _speech_frames(loudness: torch.Tensor) -> torch.Tensor:
    """Frames within 40 dB of the loudest (``loudness`` in natural-log units) ``[frames]`` bool."""
    return loudness > loudness.max() - 40.0 / _DB


# --------------------------------------------------------------------------------------------
# Codes


@dataclass(frozen=True)
class CodeStats:
    """How a set of codes uses the codebook.

    ``code_counts[k]`` is how often code k occurs (``K`` ints summing to ``n_tokens``);
    ``codes_used + dead_codes == K``. ``entropy_bits`` is the empirical unigram entropy in bits
    per token and ``perplexity == 2 ** entropy_bits`` (from 1, one code, up to K, all equally
    often). ``entropy_bitrate`` is the entropy in bits/s (what an ideal entropy coder of
    independent tokens would need); ``raw_bitrate`` is ``token_rate * ceil(log2 K)`` bits/s.
    """

    n_tokens: int
    codebook_size: int
    code_counts: list[int]
    codes_used: int
    dead_codes: int
    entropy_bits: float
    perplexity: float
    entropy_bitrate: float
    raw_bitrate: float


def code_stats(codes: np.ndarray | Sequence[np.ndarray], codebook_size: int, token_rate: float) -> CodeStats:
    """Codebook usage of ``codes`` (int arrays of any shape, or a list of them) with ``K`` codes.

    ``token_rate`` is tokens per second (``sample_rate / hop_length``).
    """
    parts = [codes] if isinstance(codes, np.ndarray) else list(codes)
    counts = np.zeros(codebook_size, dtype=np.int64)
    for part in parts:
        flat = np.asarray(part, dtype=np.int64).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= codebook_size):
            raise DataError(f"codes must lie in [0, {codebook_size - 1}], found {flat.min()}..{flat.max()}")
        counts += np.bincount(flat, minlength=codebook_size)
    total = int(counts.sum())
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    used = int((counts > 0).sum())
    bits = max(1, math.ceil(math.log2(codebook_size)))
    return CodeStats(
        n_tokens=total,
        codebook_size=codebook_size,
        code_counts=[int(c) for c in counts],
        codes_used=used,
        dead_codes=codebook_size - used,
        entropy_bits=entropy,
        perplexity=float(2.0**entropy),
        entropy_bitrate=entropy * token_rate,
        raw_bitrate=bits * token_rate,
    )


def code_histogram(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Codes (int, any shape) -> how often each code occurs, normalised to sum 1: float64 ``[K]``."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel(), minlength=codebook_size)
    return counts / max(int(counts.sum()), 1)
