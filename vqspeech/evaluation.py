"""Objective measures of a VQ-VAE: reconstructions, codes, voice conversion, speaker leakage.

:func:`evaluate_model` runs them all on the held-out utterances of a corpus (the split training
used, so none of them was seen) and returns an :class:`EvalReport`; ``vqspeech eval`` prints it.
The pieces are usable alone.

Reconstructions compare a reference and a degraded waveform of the same length at the same rate
(float ``[T]`` numpy arrays):

* ``log_mel_distance``: mean absolute difference of 80-band log-mel spectrograms in dB
  (``20 log10`` of mel magnitudes; 1024-point FFT, 256 hop, at 16 kHz). 0 is identical.
* ``mel_cepstral_distortion``: MCD in dB over mel-cepstra 1..13 (c0, the loudness, is left
  out), frame by frame without time warping (reconstructions are aligned with their source),
  over the frames where the reference is within 40 dB of its loudest: silent frames would
  otherwise dominate it with noise-floor differences nobody hears.
* ``stoi``: short-time objective intelligibility (Taal et al. 2011) via ``pystoi``, in [0, 1].
  For scale: noise shaped by the speech's loudness envelope scores ~0.6 on our corpus.
* ``pesq_wb``: wide-band PESQ (ITU-T P.862.2) MOS-LQO in [1.04, 4.64] via the optional ``pesq``
  package (``pip install 'vqspeech[pesq]'``); None where it is not installed.

Codes (:func:`code_stats`): how many of the K codes the held-out speech uses, the empirical
unigram entropy in bits per token and bits/s, its perplexity ``2 ** entropy`` (K when every
code is equally likely), against the raw bitrate ``token_rate * ceil(log2 K)``.

Conversion and leakage (issue 6) use linear classifiers (:func:`fit_linear_classifier`,
multinomial logistic regression on standardised features) trained on *real* utterances of the
corpus's training split, never on model output:

* a speaker classifier on :func:`speaker_features` (mean mel-cepstrum of the speech frames and
  median log-F0) decides whether converted audio sounds like its target or still like its source;
* the leakage probe classifies speakers from per-utterance code histograms: accuracy near
  chance means the codes carry little speaker identity, which is the paper's claim (section 4.3).
  A whole utterance's histogram names a synthetic voice almost always, so the probe also gives
  :func:`token_speaker_information`, the bits of speaker identity in one code, which does not
  saturate and compares models (a speaker encoder must not make the codes carry more).

Unseen speakers (issue 7, :class:`UnseenSpeakerScores`): for a model with a speaker encoder and a
corpus with speakers it never trained on (``data.valid_speakers``, or speakers it does not know),
reconstructions voiced by each utterance's own speaker vector against the nearest table speaker,
and zero-shot conversions of training speakers toward an unseen voice given one recording of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqspeech.audio import load_audio, resample, save_audio
from vqspeech.codec import Codec
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Utterance, open_corpus
from vqspeech.errors import ConfigError, DataError
from vqspeech.features import log_mel_spectrogram
from vqspeech.files import write_text_atomic

_DB = 20.0 / math.log(10.0)  # natural log of magnitude -> dB

#: Quality aims of issue 6: the numbers a model should reach on its held-out speech.
STOI_AIM = 0.75
TARGET_RATE_AIM = 0.80

#: Mel-cepstra c1..c20 describe a voice's spectral envelope in :func:`speaker_features`.
SPEAKER_CEPSTRA = 20


# --------------------------------------------------------------------------------------------
# Reconstruction measures


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
    """

    n: int
    stoi: float
    log_mel_distance: float
    mel_cepstral_distortion: float
    pesq: float | None = None


@dataclass(frozen=True)
class PairScores:
    """The reconstruction measures of one (reference, degraded) pair."""

    stoi: float
    log_mel_distance: float
    mel_cepstral_distortion: float
    pesq: float | None


def score_pair(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> PairScores:
    """:func:`stoi`, :func:`log_mel_distance`, :func:`mel_cepstral_distortion` and :func:`pesq_wb`."""
    return PairScores(
        stoi(reference, degraded, sample_rate),
        log_mel_distance(reference, degraded, sample_rate),
        mel_cepstral_distortion(reference, degraded, sample_rate),
        pesq_wb(reference, degraded, sample_rate),
    )


def _mean_scores(scores: Sequence[PairScores]) -> ReconstructionScores:
    pesq = [s.pesq for s in scores if s.pesq is not None]
    return ReconstructionScores(
        n=len(scores),
        stoi=float(np.mean([s.stoi for s in scores])),
        log_mel_distance=float(np.mean([s.log_mel_distance for s in scores])),
        mel_cepstral_distortion=float(np.mean([s.mel_cepstral_distortion for s in scores])),
        pesq=float(np.mean(pesq)) if pesq else None,
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


# --------------------------------------------------------------------------------------------
# Linear classifiers: speaker identity from voices and from code histograms


def speaker_features(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """One utterance's voice as float64 ``[SPEAKER_CEPSTRA + 1]``.

    The mean of mel-cepstra c1..c20 over the speech frames (within 40 dB of the loudest): the
    long-term spectral envelope, which carries vocal-tract length and timbre, while what is
    said averages out; and ``log2`` of the median F0 (NaN where no pitch is found).

    Means only, on purpose: adding each coefficient's spread over time made reconstructions of
    a speaker's own voice (whose dynamics the decoder smooths) look like other speakers, with
    no gain on real speech (measured on the 8-speaker demo corpus: real held-out utterances
    100% either way; same-speaker reconstructions 100% with means, 62-81% with spreads).
    c0 (loudness) is left out: it says how loud the recording was, not who spoke.
    """
    wave = torch.as_tensor(np.asarray(audio, np.float32))
    cepstra, loudness = _mel_cepstrum(wave, sample_rate, SPEAKER_CEPSTRA)
    speech = _speech_frames(loudness)
    envelope = cepstra[:, speech].mean(dim=1).double().numpy()
    return np.append(envelope, np.log2(median_f0(audio, sample_rate)))


@dataclass(frozen=True, eq=False)
class LinearClassifier:
    """Multinomial logistic regression on standardised features (see :func:`fit_linear_classifier`).

    ``mean``/``scale`` ``[F]`` standardise features; ``weight`` ``[C, F]`` and ``bias`` ``[C]``
    give the logits of the classes ``labels`` (``C`` names, sorted).
    """

    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Features ``[N, F]`` -> logits ``[N, C]``; a NaN feature counts as the training mean."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        return np.nan_to_num(x, nan=0.0) @ self.weight.T + self.bias

    def predict(self, features: np.ndarray) -> list[str]:
        """Features ``[N, F]`` -> the most likely label of each row."""
        return [self.labels[i] for i in self.logits(features).argmax(axis=1)]

    def accuracy(self, features: np.ndarray, labels: Sequence[str]) -> float:
        """Fraction of rows of ``features`` ``[N, F]`` predicted as their ``labels`` (N names)."""
        if len(labels) == 0:
            return float("nan")
        return float(np.mean([p == y for p, y in zip(self.predict(features), labels, strict=True)]))


def fit_linear_classifier(
    features: np.ndarray, labels: Sequence[str], l2: float = 1e-3, max_iter: int = 300
) -> LinearClassifier:
    """Fit multinomial logistic regression to ``features`` ``[N, F]`` and their ``labels`` (N names).

    Each feature is standardised with the training mean and standard deviation (constant ones
    are left unscaled; NaNs count as the mean). The loss is the mean cross-entropy plus
    ``l2 * |W|^2``: strictly convex, so L-BFGS from zero weights reaches the one optimum and the
    result needs no seed. Runs on the CPU in float64; well under a second for hundreds of
    utterances and a few hundred features.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise DataError(f"features must be [N, F] with one label per row; got {x.shape} for {len(labels)}")
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise DataError(f"a classifier needs at least 2 classes; got {len(classes)}")
    with np.errstate(invalid="ignore"):
        mean = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0) if x.size else np.zeros(x.shape[1])
        scale = np.nan_to_num(np.nanstd(x, axis=0), nan=0.0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    xs = torch.from_numpy(np.nan_to_num((x - mean) / scale, nan=0.0))
    y = torch.tensor([classes.index(label) for label in labels])
    weight = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(xs @ weight.T + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearClassifier(classes, mean, scale, weight.detach().numpy(), bias.detach().numpy())


@dataclass(frozen=True)
class LeakageScores:
    """How well a linear classifier tells speakers apart from their code histograms alone.

    ``accuracy`` on held-out utterances (``n_test``), after training on ``n_train`` training
    utterances of ``n_speakers`` speakers; ``chance`` is the accuracy of always answering the
    most common held-out speaker (``1 / n_speakers`` when they are balanced). Accuracy near
    chance: the codes carry little speaker identity (the paper's claim); near 1: they carry it.

    ``token_bits``: the speaker information in one code, in bits, on held-out tokens (see
    :func:`token_speaker_information`), out of ``speaker_bits``, the entropy of who is speaking
    (``log2 n_speakers`` when balanced). NaN when not measured.
    """

    accuracy: float
    chance: float
    n_train: int
    n_test: int
    n_speakers: int
    token_bits: float = float("nan")
    speaker_bits: float = float("nan")


def token_speaker_information(
    train_codes: Sequence[np.ndarray],
    train_speakers: Sequence[str],
    test_codes: Sequence[np.ndarray],
    test_speakers: Sequence[str],
    codebook_size: int,
    alpha: float = 1.0,
) -> tuple[float, float]:
    """How much one code says about who spoke, in bits, measured on held-out tokens.

    Codes are int arrays of any shape, one per utterance, with its speaker's name. On the
    training tokens, count ``n(speaker, code)``; ``p(s | c)`` is that count plus ``alpha`` (add-
    alpha smoothing, so an unseen pair is not impossible) normalised over speakers, ``p(s)`` the
    speakers' share of the training tokens. The figure is the mean over held-out tokens of
    ``log2 p(s | c) - log2 p(s)``: an estimate of the mutual information ``I(S; C)`` that the
    finite sample does not bias upward (plug-in estimates with 512 codes are, by tenths of a
    bit); 0 when a code says nothing of the speaker (it can dip below 0 by chance), at most the
    speaker entropy. Returns ``(bits, speaker entropy in bits)``; every test speaker must have
    training codes. Unlike the histogram probe it does not saturate, so models can be compared.
    """
    names = sorted(set(train_speakers))
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(names), codebook_size), dtype=np.float64)
    for codes, speaker in zip(train_codes, train_speakers, strict=True):
        counts[index[speaker]] += np.bincount(np.asarray(codes, np.int64).ravel(), minlength=codebook_size)
    prior = counts.sum(axis=1) / counts.sum()
    posterior = (counts + alpha) / (counts + alpha).sum(axis=0, keepdims=True)  # [S, K]
    gain = np.log2(posterior) - np.log2(prior)[:, None]
    total, n = 0.0, 0
    for codes, speaker in zip(test_codes, test_speakers, strict=True):
        if speaker not in index:
            raise DataError(f"speaker {speaker!r} has held-out codes but no training codes")
        flat = np.asarray(codes, np.int64).ravel()
        total += float(gain[index[speaker], flat].sum())
        n += flat.size
    entropy = float(-(prior[prior > 0] * np.log2(prior[prior > 0])).sum())
    return (total / n if n else float("nan")), entropy


def leakage_probe(
    train_histograms: np.ndarray,
    train_speakers: Sequence[str],
    test_histograms: np.ndarray,
    test_speakers: Sequence[str],
    l2: float = 1e-3,
    codes: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
) -> LeakageScores:
    """Train a linear speaker classifier on code histograms ``[N, K]`` (see :func:`code_histogram`)
    of training utterances and score it on held-out ones ``[M, K]``; see :class:`LeakageScores`.

    ``codes``: the same utterances' codes ``(train, test)``, for the per-token information."""
    if len(test_speakers) == 0:
        raise DataError("the leakage probe needs held-out utterances of the training speakers")
    classifier = fit_linear_classifier(train_histograms, train_speakers, l2=l2)
    _, counts = np.unique(np.asarray(test_speakers), return_counts=True)
    bits = entropy = float("nan")
    if codes is not None:
        size = np.asarray(train_histograms).shape[1]
        bits, entropy = token_speaker_information(codes[0], train_speakers, codes[1], test_speakers, size)
    return LeakageScores(
        accuracy=classifier.accuracy(test_histograms, test_speakers),
        chance=float(counts.max() / counts.sum()),
        n_train=len(train_speakers),
        n_test=len(test_speakers),
        n_speakers=len(classifier.labels),
        token_bits=bits,
        speaker_bits=entropy,
    )


# --------------------------------------------------------------------------------------------
# Whole-model evaluation


@dataclass(frozen=True)
class ConversionScores:
    """Converted speech judged by a speaker classifier trained on real speech (see the module docstring).

    ``n`` conversions of held-out utterances to other training speakers. ``target_rate``: the
    fraction the classifier assigns to the target speaker (issue 6 aims at >= 0.8);
    ``source_rate``: to the source speaker, whose voice is then still heard.
    ``reconstruction_rate``: the fraction of same-speaker reconstructions assigned to their own
    speaker, a control: when it is low, the classifier does not recognise decoded speech and
    ``target_rate`` understates the conversion. ``classifier_accuracy`` on ``n_real`` real
    held-out utterances of ``n_speakers`` speakers says whether the classifier can be trusted.

    Pitch: ``moved_semitones`` is the mean median-F0 change source -> converted, signed so that
    positive is toward the target; ``wanted_semitones`` the mean distance between source and
    target speakers' median F0 on real training speech. ``moved / wanted`` near 1: the converted
    voice sits at the target's pitch; near 0: the source's pitch stayed. NaN where not measured
    (``n == 0``, or no pitch found).
    """

    n: int
    target_rate: float
    source_rate: float
    reconstruction_rate: float
    classifier_accuracy: float
    n_real: int
    n_speakers: int
    moved_semitones: float
    wanted_semitones: float


@dataclass(frozen=True)
class UnseenSpeakerScores:
    """Speakers the model never trained on, voiced through its speaker encoder (issue 7).

    Each unseen speaker's utterances are halved: the first half (up to ``utterances_per_speaker``)
    *enrols* it in the speaker classifier (trained on real speech of the training speakers and of
    these), the second half is tested. ``classifier_accuracy``: on the ``n_real`` real test
    utterances of the unseen speakers.

    Reconstructions of ``n`` test utterances, decoded with their own quantised speaker vector
    (what ``encode`` stores in a token file) or with the training speaker whose table vector is
    nearest to it (cosine; the best a lookup table can do for a new voice): ``vector_rate`` and
    ``table_rate`` are the fractions the classifier hears as the true speaker;
    ``vector_similarity`` and ``table_similarity`` the mean cosine between the speaker-encoder
    vectors of the decoded and the real utterance (1 is the same voice to the encoder).

    ``vector_pitch_error`` / ``table_pitch_error``: the mean absolute difference in semitones
    between the median F0 of the reconstruction and of the real utterance (NaN where no pitch
    is found): a voice can have the right timbre and still sound like someone else at the wrong
    pitch.

    Zero-shot conversions: ``n_conversions`` held-out utterances of training speakers decoded with
    the vector of one test recording of an unseen target; ``target_rate`` / ``source_rate``: the
    fractions heard as the target / still as the source.
    """

    speakers: list[str]
    n: int
    vector_rate: float
    table_rate: float
    vector_similarity: float
    table_similarity: float
    n_conversions: int
    target_rate: float
    source_rate: float
    classifier_accuracy: float
    n_real: int
    vector_pitch_error: float = float("nan")
    table_pitch_error: float = float("nan")


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate_model` measured. :meth:`to_dict` gives it as JSON-safe data.

    ``reconstruction`` and ``conversion`` cover the ``n_utterances`` held-out utterances
    (``seconds`` of audio) that were decoded; ``codes`` and ``leakage`` every held-out utterance
    read (up to ``utterances_per_speaker`` per speaker). ``samples`` has one dict per decoded
    utterance: ``utterance``, ``speaker``, ``seconds``, ``orig``, ``recon`` (WAV paths relative
    to ``audio_dir``, None without it), ``conversions`` (``{target: path}``), its scores
    (``stoi``, ``log_mel_distance``, ``mel_cepstral_distortion``, ``pesq``) and who the speaker
    classifier hears (``recon_heard_as``, ``conversions_heard_as``: ``{target: speaker}``).
    ``decode_x_real_time``: seconds of audio reconstructed per wall-clock second (batch 1).
    ``unseen``: speakers the model never trained on (:class:`UnseenSpeakerScores`), None unless
    the model has a speaker encoder and the corpus has such speakers.
    """

    checkpoint: str
    data: str
    decoder: str
    sample_rate: int
    n_utterances: int
    seconds: float
    reconstruction: ReconstructionScores
    codes: CodeStats
    conversion: ConversionScores
    leakage: LeakageScores
    samples: list[dict[str, Any]]
    decode_x_real_time: float
    audio_dir: str | None
    wall_seconds: float
    unseen: UnseenSpeakerScores | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-safe data (NaN and infinities become None) plus the issue's aims."""
        data = _json_safe(dataclasses.asdict(self))
        data["aims"] = {"reconstruction.stoi": STOI_AIM, "conversion.target_rate": TARGET_RATE_AIM}
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON to ``path`` atomically (temp file, then rename)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        return write_text_atomic(path, text, "evaluation")


def evaluate_model(
    checkpoint: str | Path,
    data: str | Path,
    *,
    decoder: str | None = None,
    max_utterances: int = 16,
    conversions_per_utterance: int = 2,
    seed: int = 0,
    audio_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    utterances_per_speaker: int = 20,
    device: str = "cpu",
) -> EvalReport:
    """Score a checkpoint on a corpus: reconstructions, codes, conversions, speaker leakage.

    The corpus is split the way training split it (``recipe.data``), so held-out utterances were
    never trained on. Only speakers the model knows and that have training utterances count.

    1. Up to ``utterances_per_speaker`` (default 20) real utterances per speaker from the training
       split train the speaker classifier (on :func:`speaker_features`) and the leakage probe (on
       code histograms); as many from the held-out split test them and give the code statistics.
    2. ``max_utterances`` (default 16) held-out utterances, taken round-robin over speakers, are
       encoded and decoded as their own speaker (reconstruction scores, timed) and as
       ``conversions_per_utterance`` (default 2) other speakers: the ones after the source in name
       order, cyclically, each further utterance of a source continuing where the last stopped,
       so that every (source, target) pair comes up about equally often.

    ``seed`` seeds the decoder's sampling noise (WaveNet) or Griffin-Lim phases. ``audio_dir``:
    write ``<utterance>.orig.wav``, ``<utterance>.recon.wav`` and ``<utterance>.to_<speaker>.wav``
    there (atomically). ``progress`` gets one line per stage and per decoded utterance.

    Raises:
        ConfigError: a bad count, an unknown decoder, pystoi missing.
        CheckpointError / DataError / AudioError: an unusable checkpoint or corpus; a corpus with
            fewer than 2 of the model's speakers or no held-out utterance of them.
    """
    started = time.perf_counter()
    say = progress or (lambda _line: None)
    if max_utterances < 1:
        raise ConfigError(f"max_utterances must be at least 1, got {max_utterances}")
    if conversions_per_utterance < 0:
        raise ConfigError(f"conversions_per_utterance must be 0 or more, got {conversions_per_utterance}")
    if utterances_per_speaker < 1:
        raise ConfigError(f"utterances_per_speaker must be at least 1, got {utterances_per_speaker}")
    _pystoi()  # fail now rather than after reading the corpus
    say(f"loading {checkpoint}")
    codec = Codec.load(checkpoint, device)
    family = codec.check_decoder(decoder)
    sr, size = codec.sample_rate, codec.codebook_size
    corpus = open_corpus(data, sample_rate=sr)
    split = split_for(corpus, codec.checkpoint.recipe)
    known = set(codec.speaker_names)
    train = _per_speaker([u for u in split.train if u.speaker in known], utterances_per_speaker)
    speakers = sorted({u.speaker for u in train})
    if len(speakers) < 2:
        raise DataError(
            f"{data}: {len(speakers)} of its speakers have training utterances and are known to the "
            f"model; evaluation needs 2 or more: give the corpus the model was trained on "
            f"(the model knows: {', '.join(codec.speaker_names[:20])})"
        )
    held = _per_speaker([u for u in split.valid if u.speaker in speakers], utterances_per_speaker)
    if not held:
        raise DataError(
            f"{data}: no held-out utterances of the model's speakers; each speaker needs 2 or more "
            f"utterances (data.valid_utterances_per_speaker of them are held out)"
        )

    say(f"reading {len(train)} training and {len(held)} held-out utterances of {len(speakers)} speakers")
    train_voice, train_hist, train_codes = _read_real(codec, train)
    held_voice, held_hist, held_codes = _read_real(codec, held)
    classifier = fit_linear_classifier(train_voice, [u.speaker for u in train])
    log2_f0 = {
        s: _nanmedian([v[-1] for v, u in zip(train_voice, train, strict=True) if u.speaker == s])
        for s in speakers
    }
    leakage = leakage_probe(
        train_hist,
        [u.speaker for u in train],
        held_hist,
        [u.speaker for u in held],
        codes=([train_codes[u.id] for u in train], [held_codes[u.id] for u in held]),
    )
    codes = code_stats(list(held_codes.values()), size, sr / codec.hop_length)
    held_index = {u.id: i for i, u in enumerate(held)}

    chosen = _round_robin(held, max_utterances)
    out_dir = Path(audio_dir) if audio_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    turns: dict[str, int] = {}
    scores: list[PairScores] = []
    samples: list[dict[str, Any]] = []
    heard_recon: list[bool] = []
    to_target: list[bool] = []
    to_source: list[bool] = []
    moved: list[float] = []
    wanted: list[float] = []
    decode_wall = seconds = 0.0
    # One short untimed decode first: one-time set-up (allocator, kernels) would otherwise count
    # against the first utterance's speed.
    _decode(codec, held_codes[chosen[0].id][:, :16], [chosen[0].speaker], family, seed)
    for i, utt in enumerate(chosen, 1):
        turn = turns.get(utt.speaker, 0)
        turns[utt.speaker] = turn + 1
        targets = _conversion_targets(utt.speaker, speakers, turn, conversions_per_utterance)
        say(
            f"[{i}/{len(chosen)}] {utt.id}: reconstruct"
            + (f", convert to {', '.join(targets)}" if targets else "")
        )
        audio = load_audio(utt.path, sr)
        tick = time.perf_counter()
        recon = _decode(codec, held_codes[utt.id], [utt.speaker], family, seed)[0, : len(audio)]
        decode_wall += time.perf_counter() - tick
        seconds += len(audio) / sr
        converted: list[np.ndarray] = (
            list(_decode(codec, held_codes[utt.id], targets, family, seed)[:, : len(audio)])
            if targets
            else []
        )
        pair = score_pair(audio, recon, sr)
        scores.append(pair)
        voices = np.stack([speaker_features(x, sr) for x in [recon, *converted]])
        heard = classifier.predict(voices)
        heard_recon.append(heard[0] == utt.speaker)
        source_f0 = held_voice[held_index[utt.id]][-1]
        for target, voice, who in zip(targets, voices[1:], heard[1:], strict=True):
            to_target.append(who == target)
            to_source.append(who == utt.speaker)
            moved.append(12.0 * (voice[-1] - source_f0))
            wanted.append(12.0 * (log2_f0[target] - log2_f0[utt.speaker]))
        paths = _write_sample(out_dir, utt, audio, recon, dict(zip(targets, converted, strict=True)), sr)
        samples.append(
            {
                "utterance": utt.id,
                "speaker": utt.speaker,
                "seconds": len(audio) / sr,
                **paths,
                **dataclasses.asdict(pair),
                "recon_heard_as": heard[0],
                "conversions_heard_as": dict(zip(targets, heard[1:], strict=True)),
            }
        )

    unseen_scores = None
    if codec.has_speaker_encoder:
        unseen = _per_speaker(
            sorted(
                (u for u in (*split.train, *split.valid) if u.speaker not in speakers), key=lambda u: u.id
            ),
            2 * utterances_per_speaker,
        )
        unseen_scores = _unseen_speakers(
            codec, family, seed, unseen, train, train_voice, held, max_utterances, say
        )

    sign = np.sign(wanted)
    conversion = ConversionScores(
        n=len(to_target),
        target_rate=_mean(to_target),
        source_rate=_mean(to_source),
        reconstruction_rate=_mean(heard_recon),
        classifier_accuracy=classifier.accuracy(held_voice, [u.speaker for u in held]),
        n_real=len(held),
        n_speakers=len(speakers),
        moved_semitones=_nanmean(np.asarray(moved) * sign),
        wanted_semitones=_nanmean(np.abs(wanted)),
    )
    return EvalReport(
        checkpoint=str(checkpoint),
        data=str(data),
        decoder=family,
        sample_rate=sr,
        n_utterances=len(chosen),
        seconds=seconds,
        reconstruction=_mean_scores(scores),
        codes=codes,
        conversion=conversion,
        leakage=leakage,
        samples=samples,
        decode_x_real_time=seconds / max(decode_wall, 1e-9),
        audio_dir=str(out_dir) if out_dir is not None else None,
        wall_seconds=time.perf_counter() - started,
        unseen=unseen_scores,
    )


def _unseen_speakers(
    codec: Codec,
    family: str,
    seed: int,
    unseen: Sequence[Utterance],
    train: Sequence[Utterance],
    train_voice: np.ndarray,
    held: Sequence[Utterance],
    max_utterances: int,
    say: Callable[[str], None],
) -> UnseenSpeakerScores | None:
    """The unseen-speaker measures of :class:`UnseenSpeakerScores`; None without 2-utterance speakers."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in unseen:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    by_speaker = {s: utts for s, utts in sorted(by_speaker.items()) if len(utts) >= 2}
    if not by_speaker:
        return None
    enrol = [u for utts in by_speaker.values() for u in utts[: len(utts) // 2]]
    test = [u for utts in by_speaker.values() for u in utts[len(utts) // 2 :]]
    say(f"unseen speakers {', '.join(by_speaker)}: {len(enrol)} utterances enrol them, {len(test)} test")
    sr = codec.sample_rate
    audio = {u.id: load_audio(u.path, sr) for u in (*enrol, *test)}
    enrol_voice = np.stack([speaker_features(audio[u.id], sr) for u in enrol])
    test_voice = np.stack([speaker_features(audio[u.id], sr) for u in test])
    classifier = fit_linear_classifier(
        np.concatenate([train_voice, enrol_voice]), [u.speaker for u in (*train, *enrol)]
    )
    trained = sorted({u.speaker for u in train})
    ids = torch.tensor([codec.speaker_id(s) for s in trained], device=codec.device)
    table = F.normalize(codec.model.speaker_vector(ids).float(), dim=1)  # [S, D]

    def heard_vector(wave: np.ndarray) -> torch.Tensor:
        return codec.model.encode_speaker(
            torch.from_numpy(np.ascontiguousarray(wave))[None].to(codec.device)
        )[0]

    vector_heard, table_heard, vector_sim, table_sim = [], [], [], []
    vector_pitch, table_pitch = [], []
    test_row = {u.id: i for i, u in enumerate(test)}
    for i, utt in enumerate(_round_robin(test, max_utterances), 1):
        wave = audio[utt.id]
        codes = codec.encode_audio(wave)
        vector = codec.speaker_vector([wave])
        values = torch.from_numpy(vector.values).to(codec.device)
        nearest = trained[int((table @ F.normalize(values, dim=0)).argmax())]
        say(f"[unseen {i}] {utt.id}: reconstruct with its speaker vector and as {nearest}")
        by_vector = _decode_vectors(codec, codes, values[None], family, seed)[0, : len(wave)]
        by_table = _decode(codec, codes, [nearest], family, seed)[0, : len(wave)]
        features = np.stack([speaker_features(x, sr) for x in (by_vector, by_table)])
        heard = classifier.predict(features)
        vector_heard.append(heard[0] == utt.speaker)
        table_heard.append(heard[1] == utt.speaker)
        real_log2_f0 = test_voice[test_row[utt.id], -1]  # the last feature is log2 median F0
        vector_pitch.append(12.0 * abs(features[0, -1] - real_log2_f0))
        table_pitch.append(12.0 * abs(features[1, -1] - real_log2_f0))
        real = heard_vector(wave)
        vector_sim.append(float(F.cosine_similarity(heard_vector(by_vector), real, dim=0)))
        table_sim.append(float(F.cosine_similarity(heard_vector(by_table), real, dim=0)))

    # Zero-shot conversion: held-out speech of training speakers toward each unseen voice in turn,
    # the target's voice given by one of its test recordings (a different one each time).
    to_target, to_source = [], []
    targets = list(by_speaker)
    references = {s: [u for u in test if u.speaker == s] for s in targets}
    for i, utt in enumerate(_round_robin(held, max_utterances)):
        target = targets[i % len(targets)]
        refs = references[target]
        reference = refs[(i // len(targets)) % len(refs)]
        say(f"[zero-shot {i + 1}] {utt.id} -> {target} (voice of {reference.id})")
        wave = load_audio(utt.path, sr)
        values = torch.from_numpy(codec.speaker_vector([audio[reference.id]]).values).to(codec.device)
        converted = _decode_vectors(codec, codec.encode_audio(wave), values[None], family, seed)[
            0, : len(wave)
        ]
        who = classifier.predict(speaker_features(converted, sr)[None])[0]
        to_target.append(who == target)
        to_source.append(who == utt.speaker)
    return UnseenSpeakerScores(
        speakers=targets,
        n=len(vector_heard),
        vector_rate=_mean(vector_heard),
        table_rate=_mean(table_heard),
        vector_similarity=_nanmean(vector_sim),
        table_similarity=_nanmean(table_sim),
        n_conversions=len(to_target),
        target_rate=_mean(to_target),
        source_rate=_mean(to_source),
        classifier_accuracy=classifier.accuracy(test_voice, [u.speaker for u in test]),
        n_real=len(test),
        vector_pitch_error=_nanmean(vector_pitch),
        table_pitch_error=_nanmean(table_pitch),
    )


def _per_speaker(utterances: Sequence[Utterance], cap: int) -> list[Utterance]:
    """The first ``cap`` utterances of each speaker, in the given order."""
    taken: dict[str, int] = {}
    out = []
    for utt in utterances:
        if taken.get(utt.speaker, 0) < cap:
            taken[utt.speaker] = taken.get(utt.speaker, 0) + 1
            out.append(utt)
    return out


def _round_robin(utterances: Sequence[Utterance], limit: int) -> list[Utterance]:
    """Up to ``limit`` utterances: every speaker's first, then every speaker's second, ..."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    rounds = max(len(q) for q in queues)
    order = [q[r] for r in range(rounds) for q in queues if r < len(q)]
    return order[:limit]


def _conversion_targets(source: str, speakers: Sequence[str], turn: int, n: int) -> list[str]:
    """The ``turn``-th utterance of ``source``'s ``n`` targets: the speakers after it, cyclically."""
    i = list(speakers).index(source)
    others = [*speakers[i + 1 :], *speakers[:i]]
    return [others[(turn * n + k) % len(others)] for k in range(min(n, len(others)))]


def _read_real(
    codec: Codec, utterances: Sequence[Utterance]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Speaker features ``[N, SPEAKER_CEPSTRA + 1]``, code histograms ``[N, K]`` and codes
    (``{id: [1, F]}``) of real utterances."""
    voices, histograms, codes = [], [], {}
    for utt in utterances:
        audio = load_audio(utt.path, codec.sample_rate)
        codes[utt.id] = codec.encode_audio(audio)
        voices.append(speaker_features(audio, codec.sample_rate))
        histograms.append(code_histogram(codes[utt.id], codec.codebook_size))
    return np.stack(voices), np.stack(histograms), codes


def _decode(codec: Codec, codes: np.ndarray, speakers: Sequence[str], family: str, seed: int) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker in one batch -> float32 ``[len(speakers), F * hop]``."""
    ids = torch.tensor([codec.speaker_id(s) for s in speakers], device=codec.device)
    batch = torch.from_numpy(codes).to(codec.device).expand(len(speakers), -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, ids, generator=generator, decoder=family)
    return out.float().cpu().numpy()


def _decode_vectors(
    codec: Codec, codes: np.ndarray, vectors: torch.Tensor, family: str, seed: int
) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker vector ``[N, D]`` -> float32 ``[N, F * hop]``."""
    batch = torch.from_numpy(codes).to(codec.device).expand(vectors.shape[0], -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, vectors, generator=generator, decoder=family)
    return out.float().cpu().numpy()


def _write_sample(
    out_dir: Path | None,
    utt: Utterance,
    audio: np.ndarray,
    recon: np.ndarray,
    converted: dict[str, np.ndarray],
    sample_rate: int,
) -> dict[str, Any]:
    """Write one utterance's WAVs under ``out_dir`` (if given); their paths relative to it."""
    names = {"orig": f"{utt.id}.orig.wav", "recon": f"{utt.id}.recon.wav"}
    conversions = {target: f"{utt.id}.to_{target}.wav" for target in converted}
    if out_dir is None:
        return {"orig": None, "recon": None, "conversions": dict.fromkeys(converted)}
    for name, wave in [(names["orig"], audio), (names["recon"], recon)] + [
        (conversions[t], w) for t, w in converted.items()
    ]:
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)  # folder corpora's ids hold sub-folders
        save_audio(path, wave, sample_rate)
    return {**names, "conversions": conversions}


def _mean(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def _nanmean(values: np.ndarray | Sequence[float]) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def _nanmedian(values: Sequence[float]) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else float("nan")


def _json_safe(value: Any) -> Any:
    """Plain JSON data: dicts with str keys, lists, str, int, float (finite), bool, None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value
