"""The field's learned quality measures, from optional packages: DNSMOS and speaker similarity.

* :func:`dnsmos`: Microsoft's DNSMOS P.835 (Reddy et al., ICASSP 2022), a no-reference estimate of
  how a listener would rate a recording: ``ovrl`` (overall), ``sig`` (the speech), ``bak`` (the
  background) and ``p808`` (the P.808 overall model), each on a 1..5 MOS scale. Through the
  ``speechmos`` package, whose wheel ships the ONNX models, run with ``onnxruntime``
  (``pip install 'vqspeech[dnsmos]'``). The models need 16 kHz; other rates are resampled.
* :func:`speaker_similarity`: cosine of two utterance embeddings from an *independent* speaker
  encoder, Resemblyzer's GE2E d-vector (Wan et al. 2018; weights in its wheel;
  ``pip install 'vqspeech[spkr]'``). Around 0.9+ for the same voice, lower across voices; a
  codec that keeps its input's voice scores high.

Both return None where their package is not installed, so callers (``vqspeech eval``,
``vqspeech score``) report "n/a" and go on. A package that is installed but fails to import
is a :class:`~vqspeech.errors.ConfigError` naming the reason: a silent None would hide it.
The models load once per process (:func:`functools.cache`), on the CPU; the last few results
are remembered, so scoring one original against several decodings computes its side once.

We call the packages; we keep no copies of their models or code.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np

from vqspeech.audio import resample
from vqspeech.errors import ConfigError, DataError

#: The rate both models work at (Hz).
MODEL_RATE = 16000
#: Below this many seconds of speech after Resemblyzer's silence trimming, embed the whole
#: recording instead (its VAD finds no speech in some synthetic or very short signals).
MIN_SPEECH_SECONDS = 0.5

DNSMOS_EXTRA = "pip install 'vqspeech[dnsmos]'"
SPKR_EXTRA = "pip install 'vqspeech[spkr]'"


@dataclass(frozen=True)
class DnsmosScores:
    """DNSMOS P.835 of one recording (1..5 MOS each; see the module docstring)."""

    ovrl: float
    sig: float
    bak: float
    p808: float


def mean_dnsmos(scores: Sequence[DnsmosScores | None]) -> DnsmosScores | None:
    """Field-wise mean of the recordings DNSMOS scored (None entries left out); None if none."""
    scored = [s for s in scores if s is not None]
    if not scored:
        return None
    return DnsmosScores(
        *(float(np.mean([getattr(s, f) for s in scored])) for f in ("ovrl", "sig", "bak", "p808"))
    )


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# --------------------------------------------------------------------------------------------
# Loading the optional packages


@contextlib.contextmanager
def _quiet_imports() -> Iterator[None]:
    # Resemblyzer and webrtcvad import deprecated names (scipy.ndimage.morphology,
    # pkg_resources); their warnings say nothing to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _missing(exc: ImportError, packages: Sequence[str]) -> bool:
    """True when ``exc`` is one of ``packages`` not being installed (not a broken install)."""
    return (exc.name or "").split(".")[0] in packages


@cache
def _dnsmos_runner() -> Callable[[np.ndarray], dict[str, Any]] | None:
    """speechmos's DNSMOS (its ``run``, which builds the ONNX sessions once); None if not installed."""
    try:
        with _quiet_imports():
            from speechmos import dnsmos as _speechmos
    except ImportError as exc:
        if _missing(exc, ("speechmos", "onnxruntime")):
            return None
        raise ConfigError(
            f"DNSMOS: speechmos does not import ({exc}); reinstall with {DNSMOS_EXTRA}"
        ) from None

    def run(audio: np.ndarray) -> dict[str, Any]:
        return dict(_speechmos.run(audio, MODEL_RATE))

    return run


@cache
def _voice_encoder() -> tuple[Any, Callable[..., np.ndarray]] | None:
    """Resemblyzer's ``VoiceEncoder`` on the CPU and its ``preprocess_wav``; None if not installed."""
    try:
        with _quiet_imports():
            from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as exc:
        if _missing(exc, ("resemblyzer", "webrtcvad")):
            return None
        # webrtcvad 2.0.10 (2017) imports pkg_resources, which setuptools 81 removed; the
        # spkr extra pins setuptools below 81 for it.
        raise ConfigError(
            f"speaker similarity: resemblyzer does not import ({exc}); reinstall with {SPKR_EXTRA}"
        ) from None
    try:
        with _quiet_imports():
            encoder = VoiceEncoder("cpu", verbose=False)
    except Exception as exc:  # a damaged install: its weights file does not load
        raise ConfigError(
            f"speaker similarity: Resemblyzer's weights do not load ({type(exc).__name__}: {exc}); "
            f"reinstall with {SPKR_EXTRA}"
        ) from None
    return encoder, preprocess_wav


def dnsmos_available() -> bool:
    """True when :func:`dnsmos` can score (the ``dnsmos`` extra is installed)."""
    return _dnsmos_runner() is not None


def speaker_similarity_available() -> bool:
    """True when :func:`speaker_similarity` can score (the ``spkr`` extra is installed)."""
    return _voice_encoder() is not None


# --------------------------------------------------------------------------------------------
# Remembering the last few results (the original's side of every pair it is scored in)

_T = TypeVar("_T")
_RECENT: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
_RECENT_SIZE = 8


def _remembered(kind: str, audio: np.ndarray, sample_rate: int, compute: Callable[[], _T]) -> _T:
    key = (kind, hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest(), sample_rate)
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]  # type: ignore[no-any-return]
    value = compute()
    _RECENT[key] = value
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return value


def _at_model_rate(audio: np.ndarray, sample_rate: int, what: str) -> np.ndarray:
    wave = np.asarray(audio, np.float32).reshape(-1)
    if wave.size == 0:
        raise DataError(f"{what}: the audio is empty")
    if not np.isfinite(wave).all():
        raise DataError(f"{what}: the audio holds NaN or infinite samples")
    return resample(wave, sample_rate, MODEL_RATE)


# --------------------------------------------------------------------------------------------
# The measures


def dnsmos(audio: np.ndarray, sample_rate: int = 16000) -> DnsmosScores | None:
    """DNSMOS P.835 of mono float audio ``[T]`` at ``sample_rate`` Hz; None without the extra.

    Samples are clipped to [-1, 1] (what a 16-bit file of it would hold; speechmos refuses
    others). Recordings shorter than the model's 9.01 s window are repeated to fill it (as
    speechmos does); longer ones are scored in 9.01 s windows a second apart, averaged.
    """
    runner = _dnsmos_runner()
    if runner is None:
        return None
    wave = np.clip(_at_model_rate(audio, sample_rate, "DNSMOS"), -1.0, 1.0)

    def compute() -> DnsmosScores:
        out = runner(wave)
        return DnsmosScores(
            float(out["ovrl_mos"]), float(out["sig_mos"]), float(out["bak_mos"]), float(out["p808_mos"])
        )

    return _remembered("dnsmos", wave, MODEL_RATE, compute)


def speaker_embedding(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray | None:
    """Resemblyzer's unit-norm d-vector float32 ``[256]`` of audio ``[T]``; None without the extra.

    Resemblyzer's own preprocessing (loudness normalisation, long silences trimmed by its
    WebRTC VAD); where that leaves under :data:`MIN_SPEECH_SECONDS`, the whole recording,
    loudness-normalised, is embedded instead.
    """
    loaded = _voice_encoder()
    if loaded is None:
        return None
    encoder, preprocess_wav = loaded
    wave = _at_model_rate(audio, sample_rate, "speaker similarity")

    def compute() -> np.ndarray:
        with _quiet_imports():
            speech = preprocess_wav(wave, source_sr=MODEL_RATE)
            if speech.size < MIN_SPEECH_SECONDS * MODEL_RATE:
                peak = float(np.abs(wave).max())
                speech = wave / peak * 0.5 if peak > 0 else wave
            return np.asarray(encoder.embed_utterance(speech.astype(np.float32)), np.float32)

    return _remembered("speaker", wave, MODEL_RATE, compute)


def speaker_similarity(reference: np.ndarray, degraded: np.ndarray, sample_rate: int = 16000) -> float | None:
    """Cosine in [-1, 1] of the two recordings' Resemblyzer embeddings; None without the extra."""
    a = speaker_embedding(reference, sample_rate)
    if a is None:
        return None
    b = speaker_embedding(degraded, sample_rate)
    assert b is not None
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
