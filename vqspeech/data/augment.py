"""Channel and room augmentation of training audio (issue 17): pure, seeded numpy functions.

Every function takes mono float32 audio ``[T]`` (16 kHz unless ``sample_rate`` says otherwise)
and returns float32 ``[T]``, the same length and aligned with its input (the filters are
zero-phase, the room response starts with its direct sound at lag 0), so a degraded crop
lines up with its clean original sample for sample. Randomness only ever comes from a
``numpy.random.Generator`` passed in; nothing reads global state.

* :func:`band_limit`, :func:`telephone`, :func:`resample_through` - what a line or a codec
  keeps of the spectrum;
* :func:`equalize` with :func:`eq_response_db` - spectral tilt and peaks/dips (a microphone,
  a room's colouring);
* :func:`coloured_noise`, :func:`babble`, :func:`mix_at_snr` - additive noise at an exact SNR;
* :func:`exponential_rir`, :func:`reverberate` - synthetic reverberation;
* :func:`gain`, :func:`clip` - level and overdrive;
* :func:`mu_law_quantize`, :func:`linear_quantize` - 8-bit (or any) recorders and lines.

:func:`augment` composes them as configured by :class:`~vqspeech.data.augment_config.AugmentConfig`:
:func:`draw_plan` draws which stages run and their parameters, :func:`apply_plan` runs them,
so one plan (one channel) can be applied to two crops (the main crop and the speaker
encoder's reference, see :class:`~vqspeech.data.batches.StepBatches`).

This module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from vqspeech.data.augment_config import NOISE_COLOURS, AugmentConfig
from vqspeech.errors import DataError

#: The telephone band (ITU-T G.712), Hz.
TELEPHONE_BAND = (300.0, 3400.0)
#: Width of :func:`band_limit`'s raised-cosine transition, as a fraction of the cutoff.
TRANSITION = 0.1
#: Samples of zeros appended before an FFT filter, so its response does not wrap around.
_FFT_PAD = 4096

#: ``(count, rng) -> count`` crops of other utterances, for babble (see :func:`babble`).
BabbleSource = Callable[[int, np.random.Generator], Sequence[np.ndarray]]


def _as_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise DataError(f"augmentation takes mono audio [T], got shape {audio.shape}")
    return audio


def _apply_response(
    audio: np.ndarray, gains: Callable[[np.ndarray], np.ndarray], sample_rate: int
) -> np.ndarray:
    """Filter ``audio`` with the zero-phase filter whose amplitude response is ``gains(freqs_hz)``."""
    audio = _as_audio(audio)
    n = audio.shape[0]
    if n == 0:
        return audio.copy()
    # imported here, as scipy.signal below: scipy.fft costs every CLI command ~0.1 s of start-up
    from scipy import fft as sp_fft

    size = sp_fft.next_fast_len(n + _FFT_PAD, real=True)
    spectrum = sp_fft.rfft(audio.astype(np.float64), size)
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    out = sp_fft.irfft(spectrum * gains(freqs), size)[:n]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Band limits


def band_limit(audio: np.ndarray, low_hz: float, high_hz: float, sample_rate: int = 16000) -> np.ndarray:
    """Keep ``low_hz`` .. ``high_hz`` of ``audio``'s spectrum: zero-phase, raised-cosine edges.

    The response is 1 inside the band, 0 below ``low_hz / (1 + TRANSITION)`` and above
    ``high_hz * (1 + TRANSITION)``, with half-cosine transitions between (10 % of each cutoff:
    a line filter's steepness, e.g. G.712's 3.4 -> 4 kHz). ``low_hz <= 0`` keeps everything
    below the band (no high-pass); ``high_hz >= sample_rate / 2`` keeps everything above it.
    """
    if not 0 <= low_hz < high_hz:
        raise DataError(f"band_limit needs 0 <= low_hz < high_hz, got {low_hz} .. {high_hz}")

    def gains(f: np.ndarray) -> np.ndarray:
        g = np.ones_like(f)
        if low_hz > 0:
            edge = low_hz / (1 + TRANSITION)
            ramp = np.clip((f - edge) / (low_hz - edge), 0.0, 1.0)
            g *= 0.5 - 0.5 * np.cos(np.pi * ramp)
        if high_hz < sample_rate / 2:
            edge = high_hz * (1 + TRANSITION)
            ramp = np.clip((edge - f) / (edge - high_hz), 0.0, 1.0)
            g *= 0.5 - 0.5 * np.cos(np.pi * ramp)
        return g

    return _apply_response(audio, gains, sample_rate)


def telephone(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """The telephone band, 300-3400 Hz (:data:`TELEPHONE_BAND`), by :func:`band_limit`."""
    return band_limit(audio, *TELEPHONE_BAND, sample_rate=sample_rate)


def resample_through(audio: np.ndarray, rate: int = 8000, sample_rate: int = 16000) -> np.ndarray:
    """Resample down to ``rate`` and back (soxr HQ, linear phase): what an 8 kHz link keeps.

    The output has the input's length; soxr compensates its filter delay, so it is aligned.
    Unchanged when ``rate >= sample_rate``.
    """
    audio = _as_audio(audio)
    if rate >= sample_rate or audio.shape[0] == 0:
        return audio.copy()
    down = soxr.resample(audio, sample_rate, rate, quality="HQ")
    up = np.asarray(soxr.resample(down, rate, sample_rate, quality="HQ"), dtype=np.float32)
    out = np.zeros_like(audio)
    m = min(out.shape[0], up.shape[0])
    out[:m] = up[:m]
    return out


# ---------------------------------------------------------------------------------------
# Equalisation


@dataclass(frozen=True)
class EqBand:
    """A peak (``gain_db > 0``) or dip on a log-frequency axis: Gaussian, ``width_octaves`` at half height."""

    centre_hz: float
    gain_db: float
    width_octaves: float


def eq_response_db(
    freqs_hz: np.ndarray, tilt_db_per_octave: float = 0.0, bands: Sequence[EqBand] = ()
) -> np.ndarray:
    """The gain in dB at ``freqs_hz`` of a tilt about 1 kHz plus ``bands``.

    The tilt is ``tilt_db_per_octave * log2(f / 1000)``, held constant below 50 Hz (so DC
    is not boosted without bound).
    """
    octaves = np.log2(np.maximum(freqs_hz, 50.0) / 1000.0)
    db = tilt_db_per_octave * octaves
    for band in bands:
        sigma = band.width_octaves / (2 * math.sqrt(2 * math.log(2)))
        distance = np.log2(np.maximum(freqs_hz, 1.0) / band.centre_hz)
        db = db + band.gain_db * np.exp(-0.5 * (distance / sigma) ** 2)
    return db


def equalize(
    audio: np.ndarray, tilt_db_per_octave: float = 0.0, bands: Sequence[EqBand] = (), sample_rate: int = 16000
) -> np.ndarray:
    """Zero-phase EQ: every frequency's amplitude scaled by :func:`eq_response_db`'s gain."""
    return _apply_response(
        audio, lambda f: 10.0 ** (eq_response_db(f, tilt_db_per_octave, bands) / 20.0), sample_rate
    )


# ---------------------------------------------------------------------------------------
# Additive noise


def coloured_noise(length: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise ``[length]`` with unit RMS and power spectral density ``~ 1 / f ** beta``.

    ``colour``: ``white`` (beta 0), ``pink`` (1: equal power per octave), ``brown`` (2).
    """
    if colour not in NOISE_COLOURS:
        raise DataError(f"unknown noise colour {colour!r}; use one of {', '.join(NOISE_COLOURS)}")
    white = rng.standard_normal(length)
    if colour != "white" and length > 1:
        beta = NOISE_COLOURS.index(colour)
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(length)
        shape = np.zeros_like(f)
        shape[1:] = f[1:] ** (-beta / 2)  # amplitude ~ f^(-beta/2); no DC
        white = np.fft.irfft(spectrum * shape, length)
    rms = float(np.sqrt(np.mean(white**2))) if length else 0.0
    return (white / rms if rms > 0 else white).astype(np.float32)


def babble(talkers: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Several other utterances at once: each cut or zero-padded to ``length``, set to unit RMS
    (silent ones are left out), summed, and the sum set to unit RMS. Zeros if all are silent."""
    out = np.zeros(length, dtype=np.float64)
    for talker in talkers:
        x = np.zeros(length)
        piece = np.asarray(talker, dtype=np.float64)[:length]
        x[: piece.shape[0]] = piece
        rms = float(np.sqrt(np.mean(x**2))) if length else 0.0
        if rms > 0:
            out += x / rms
    rms = float(np.sqrt(np.mean(out**2))) if length else 0.0
    return (out / rms if rms > 0 else out).astype(np.float32)


def mix_at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio + c * noise`` with ``c`` such that ``10 log10(mean(audio²) / mean((c noise)²)) = snr_db``.

    Powers are means over the whole crop (silences included). Silent audio or silent noise
    leaves ``audio`` unchanged (the SNR would be undefined).
    """
    audio = _as_audio(audio)
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape != audio.shape:
        raise DataError(f"noise shape {noise.shape} differs from audio shape {audio.shape}")
    signal_power = float(np.mean(audio.astype(np.float64) ** 2)) if audio.size else 0.0
    noise_power = float(np.mean(noise**2)) if noise.size else 0.0
    if signal_power == 0 or noise_power == 0:
        return audio.copy()
    scale = math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Reverberation


def exponential_rir(
    rt60: float, rng: np.random.Generator, drr_db: float = 0.0, sample_rate: int = 16000
) -> np.ndarray:
    """A synthetic room impulse response: a unit direct sound at lag 0, then a Gaussian-noise
    tail whose amplitude decays by 60 dB in ``rt60`` seconds (Polack's statistical model; no
    image sources, so no distinct early reflections), ``drr_db`` below the direct sound in
    energy. Lasts ``rt60`` seconds (to -60 dB); scaled to unit energy, so reverberation keeps a
    signal's level on average.
    """
    if rt60 <= 0:
        raise DataError(f"rt60 must be positive, got {rt60}")
    length = max(2, math.ceil(rt60 * sample_rate))
    n = np.arange(1, length)
    # amplitude 10^(-3 t / rt60): 60 dB of decay at t = rt60
    tail = rng.standard_normal(length - 1) * np.exp(-3.0 * math.log(10.0) * n / (rt60 * sample_rate))
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    rir = np.concatenate([[1.0], tail])
    return (rir / math.sqrt(float(np.sum(rir**2)))).astype(np.float32)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``audio`` convolved with ``rir``, cut to ``audio``'s length (the direct sound stays at lag 0)."""
    audio = _as_audio(audio)
    if audio.shape[0] == 0:
        return audio.copy()
    # imported here: scipy.signal takes ~1 s to import, and every CLI command (decode too)
    # imports this module through the demo and evaluation code
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio.astype(np.float64), np.asarray(rir, dtype=np.float64))[: audio.shape[0]]
    return wet.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Level, clipping, quantisation


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """``audio`` scaled by ``db`` decibels (amplitude ``10 ** (db / 20)``); no clipping."""
    return (_as_audio(audio) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def clip(audio: np.ndarray, level: float = 1.0) -> np.ndarray:
    """Hard clipping to ``[-level, level]``."""
    if level <= 0:
        raise DataError(f"clip level must be positive, got {level}")
    return np.clip(_as_audio(audio), -level, level).astype(np.float32)


def mu_law_quantize(audio: np.ndarray, bits: int = 8) -> np.ndarray:
    """Mu-law companding to ``2 ** bits`` levels (``mu = 2 ** bits - 1``; 8 bits: G.711's curve,
    the classes of :func:`vqspeech.features.mu_law_encode`) and back. Input is clipped to [-1, 1]."""
    mu = 2**bits - 1
    x = np.clip(_as_audio(audio).astype(np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    classes = np.clip(np.floor((y + 1) / 2 * mu + 0.5), 0, mu)
    y = classes / mu * 2 - 1
    return (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu).astype(np.float32)


def linear_quantize(audio: np.ndarray, bits: int = 8) -> np.ndarray:
    """Linear PCM at ``bits`` bits: ``round(x * 2^(bits-1))`` kept in ``[-2^(bits-1), 2^(bits-1) - 1]``,
    scaled back (so at most ``2 ** bits`` levels, zero among them)."""
    scale = float(2 ** (bits - 1))
    levels = np.clip(np.round(_as_audio(audio).astype(np.float64) * scale), -scale, scale - 1)
    return (levels / scale).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The composed chain


@dataclass(frozen=True)
class Stage:
    """One drawn step of the chain: ``name`` and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _uniform(rng: np.random.Generator, span: Sequence[float]) -> float:
    return float(rng.uniform(span[0], span[1]))


def draw_plan(
    rng: np.random.Generator, config: AugmentConfig, sample_rate: int = 16000, babble_available: bool = False
) -> list[Stage]:
    """Which stages run, in chain order (see :class:`AugmentConfig`), with their parameters.

    Every stage draws the same number of values whether it runs or not, so changing one
    stage's probability does not change what the others draw. Babble is only chosen when
    ``babble_available``.
    """
    c = config
    plan: list[Stage] = []

    def chance(p: float) -> bool:
        return bool(rng.random() < p)

    run = chance(c.reverb_prob)
    params: dict[str, Any] = {
        "rt60": _uniform(rng, c.reverb_rt60),
        "drr_db": _uniform(rng, c.reverb_drr_db),
        "seed": int(rng.integers(2**63)),  # the room: the same for every crop given this plan
    }
    if run:
        plan.append(Stage("reverb", params))

    run = chance(c.noise_prob)
    use_babble = chance(c.babble_share) and babble_available
    params = {
        "snr_db": _uniform(rng, c.noise_snr_db),
        "colour": c.noise_colours[int(rng.integers(len(c.noise_colours)))],
        "talkers": int(rng.integers(c.babble_talkers[0], c.babble_talkers[1] + 1)),
    }
    if run:
        plan.append(Stage("babble" if use_babble else "noise", params))

    run = chance(c.eq_prob)
    tilt = _uniform(rng, c.eq_tilt_db_per_octave)
    n_bands = int(rng.integers(0, c.eq_max_bands + 1))
    bands = []
    for _ in range(c.eq_max_bands):  # always draw every band (see above)
        band = EqBand(
            centre_hz=float(np.exp(rng.uniform(math.log(100.0), math.log(7000.0)))),
            gain_db=_uniform(rng, c.eq_gain_db),
            width_octaves=_uniform(rng, c.eq_width_octaves),
        )
        bands.append(band)
    if run:
        plan.append(Stage("eq", {"tilt_db_per_octave": tilt, "bands": tuple(bands[:n_bands])}))

    run = chance(c.band_prob)
    low, high = _uniform(rng, c.band_low_hz), _uniform(rng, c.band_high_hz)
    if low < 20.0:
        low = 0.0
    high = min(high, sample_rate / 2)
    if high >= 0.95 * sample_rate / 2:
        high = sample_rate / 2
    if run and low < high and (low > 0 or high < sample_rate / 2):
        plan.append(Stage("band", {"low_hz": low, "high_hz": high}))
    if chance(c.telephone_prob):
        plan.append(Stage("telephone"))
    if chance(c.resample8k_prob) and sample_rate > 8000:
        plan.append(Stage("resample", {"rate": 8000}))

    run = chance(c.gain_prob)
    params = {"db": _uniform(rng, c.gain_db)}
    if run:
        plan.append(Stage("gain", params))
    run = chance(c.clip_prob)
    params = {"ratio": _uniform(rng, c.clip_ratio)}
    if run:
        plan.append(Stage("overdrive", params))

    run = chance(c.quantize_prob)
    params = {"bits": c.quantize_bits, "mu_law": chance(c.mu_law_share)}
    if run:
        plan.append(Stage("quantize", params))
    return plan


def apply_plan(
    audio: np.ndarray,
    plan: Sequence[Stage],
    rng: np.random.Generator,
    sample_rate: int = 16000,
    babble_source: BabbleSource | None = None,
) -> np.ndarray:
    """Run ``plan``'s stages on ``audio`` float32 ``[T]``; the result is clipped to [-1, 1].

    ``rng`` draws the noise samples and babble crops (the room comes from the plan's seed).
    """
    x = _as_audio(audio).copy()
    n = x.shape[0]
    for stage in plan:
        p = stage.params
        if stage.name == "reverb":
            rir = exponential_rir(p["rt60"], np.random.default_rng(p["seed"]), p["drr_db"], sample_rate)
            x = reverberate(x, rir)
        elif stage.name == "noise":
            x = mix_at_snr(x, coloured_noise(n, p["colour"], rng), p["snr_db"])
        elif stage.name == "babble":
            if babble_source is None:
                raise DataError("this augmentation plan has babble but no babble source was given")
            x = mix_at_snr(x, babble(babble_source(p["talkers"], rng), n), p["snr_db"])
        elif stage.name == "eq":
            x = equalize(x, p["tilt_db_per_octave"], p["bands"], sample_rate)
        elif stage.name == "band":
            x = band_limit(x, p["low_hz"], p["high_hz"], sample_rate)
        elif stage.name == "telephone":
            x = telephone(x, sample_rate)
        elif stage.name == "resample":
            x = resample_through(x, p["rate"], sample_rate)
        elif stage.name == "gain":
            x = gain(x, p["db"])
        elif stage.name == "overdrive":
            peak = float(np.abs(x).max()) if n else 0.0
            if peak > 0:
                x = clip(x, p["ratio"] * peak)
        elif stage.name == "quantize":
            x = mu_law_quantize(x, p["bits"]) if p["mu_law"] else linear_quantize(x, p["bits"])
        else:
            raise DataError(f"unknown augmentation stage {stage.name!r}")
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def augment(
    audio: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
    sample_rate: int = 16000,
    babble_source: BabbleSource | None = None,
) -> np.ndarray:
    """``audio`` float32 ``[T]`` through a random subset of the chain :class:`AugmentConfig` describes.

    A pure function of its arguments and ``rng``'s state: :func:`draw_plan` then
    :func:`apply_plan` with the same ``rng``. Babble needs ``babble_source``; without one,
    noise stages use coloured noise. ``config.enabled`` is not consulted here (the caller
    decides whether to augment at all).
    """
    plan = draw_plan(rng, config, sample_rate, babble_available=babble_source is not None)
    return apply_plan(audio, plan, rng, sample_rate, babble_source)
