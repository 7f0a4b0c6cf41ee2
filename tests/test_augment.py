"""Channel and room augmentation (issue 17): each stage does what it says; batches stay a pure
function of (seed, step); the default leaves training exactly as before; recipes round-trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from vqspeech.checkpoint import load_checkpoint, save_checkpoint, save_payload
from vqspeech.config import Recipe, demo_recipe, load_recipe, recipe_from_dict
from vqspeech.data import augment as A
from vqspeech.data.augment_config import AugmentConfig
from vqspeech.data.batches import StepBatches
from vqspeech.data.corpus import Corpus
from vqspeech.data.dataset import RandomCrops
from vqspeech.errors import ConfigError
from vqspeech.model import VQVAE
from vqspeech.recipe_io import to_dict
from vqspeech.train import encoder_hears

SR = 16000


def white(seconds: float = 1.0, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(np.float32)


def speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A pitched, amplitude-modulated tone with pauses: a stand-in for speech."""
    t = np.arange(round(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0.0, None)
    return (0.3 * wave * envelope + 0.001 * white(seconds, seed, 1.0)).astype(np.float32)


def band_energy(audio: np.ndarray, low: float, high: float) -> float:
    """Energy of ``audio`` in ``low .. high`` Hz (Hann-windowed periodogram of the whole signal)."""
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(audio.shape[0]))) ** 2
    f = np.fft.rfftfreq(audio.shape[0], 1 / SR)
    return float(spectrum[(f >= low) & (f <= high)].sum())


def drop_db(before: np.ndarray, after: np.ndarray, low: float, high: float) -> float:
    return 10 * math.log10(band_energy(before, low, high) / band_energy(after, low, high))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * math.log10(rms(clean) ** 2 / rms(noisy.astype(np.float64) - clean) ** 2)


def schroeder_rt60(rir: np.ndarray) -> float:
    """RT60 from Schroeder's backward-integrated energy decay curve, fitted from -5 to -25 dB (T20)."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    decay = 10 * np.log10(energy / energy[0])
    fit = np.flatnonzero((decay <= -5) & (decay >= -25))
    slope = np.polyfit(fit / SR, decay[fit], 1)[0]  # dB per second
    return -60.0 / slope


# ---------------------------------------------------------------------------------------
# Each stage does what it says


@pytest.mark.parametrize("low, high", [(300.0, 3400.0), (150.0, 5000.0), (0.0, 2000.0), (800.0, 8000.0)])
def test_band_limit_removes_everything_outside_the_band(low: float, high: float) -> None:
    x = white(1.0)
    y = A.telephone(x) if (low, high) == A.TELEPHONE_BAND else A.band_limit(x, low, high, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    edge = 1 + A.TRANSITION  # beyond the raised-cosine transition
    if low > 0:
        assert drop_db(x, y, 0, low / edge) > 30
    if high < SR / 2:
        assert drop_db(x, y, high * edge, SR / 2) > 30
    assert abs(drop_db(x, y, low * 1.05 + 20, high * 0.95)) < 0.1  # the band itself is untouched


def test_8khz_resampling_removes_the_upper_band_and_keeps_alignment() -> None:
    x = white(1.0, seed=1)
    y = A.resample_through(x, 8000, SR)
    assert y.shape == x.shape
    assert drop_db(x, y, 4150, SR / 2) > 30
    assert abs(drop_db(x, y, 100, 3500)) < 0.2
    lowpassed = A.band_limit(x, 0, 3500, SR)  # aligned: what survives matches sample for sample
    assert np.corrcoef(y[1000:-1000], lowpassed[1000:-1000])[0, 1] > 0.98


def test_equalizer_applies_its_stated_response() -> None:
    x = white(2.0, seed=2)
    bands = (A.EqBand(500.0, 9.0, 1.0), A.EqBand(3000.0, -9.0, 0.5))
    y = A.equalize(x, 2.0, bands, SR)
    for centre in (250.0, 500.0, 1000.0, 3000.0, 6000.0):
        lo, hi = centre / 2 ** (1 / 12), centre * 2 ** (1 / 12)  # a sixth of an octave
        want = float(A.eq_response_db(np.array([centre]), 2.0, bands)[0])
        assert abs(-drop_db(x, y, lo, hi) - want) < 0.6, centre


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -3.01), ("brown", -6.02)])
def test_coloured_noise_has_its_spectral_slope(colour: str, slope: float) -> None:
    noise = A.coloured_noise(4 * SR, colour, np.random.default_rng(3))
    assert abs(rms(noise) - 1.0) < 1e-5
    octaves = [125.0 * 2**k for k in range(6)]  # 125 Hz .. 4 kHz
    levels = [10 * math.log10(band_energy(noise, f, 2 * f)) for f in octaves]
    per_octave = np.polyfit(np.arange(len(octaves)), levels, 1)[0]
    # energy per octave band: power density slope + 3 dB (each octave is twice as wide)
    assert abs(per_octave - (slope + 3.01)) < 0.5


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 20.0, 40.0])
@pytest.mark.parametrize("colour", ["white", "pink", "brown", "babble"])
def test_noise_is_mixed_at_the_requested_snr(snr: float, colour: str) -> None:
    x = speechlike(1.0)
    rng = np.random.default_rng(4)
    if colour == "babble":
        noise = A.babble([speechlike(1.3, s) * (s + 1) for s in range(4)], x.shape[0])
    else:
        noise = A.coloured_noise(x.shape[0], colour, rng)
    y = A.mix_at_snr(x, noise, snr)
    assert abs(snr_db(x, y) - snr) < 0.1


def test_babble_sums_equal_talkers_and_ignores_silent_ones() -> None:
    quiet, loud = speechlike(1.0, 1) * 0.01, speechlike(1.0, 2)
    mixed = A.babble([quiet, loud, np.zeros(SR, np.float32)], SR)
    assert abs(rms(mixed) - 1.0) < 1e-5
    # equal weights: the quiet talker is as present as the loud one
    expected = quiet / rms(quiet) + loud / rms(loud)
    np.testing.assert_allclose(mixed, expected / rms(expected), atol=1e-5)


@pytest.mark.parametrize("rt60", [0.25, 0.6, 1.0])
def test_reverb_tail_has_the_requested_rt60(rt60: float) -> None:
    impulse = np.zeros(round(1.5 * SR), np.float32)
    impulse[0] = 1.0
    for seed in range(3):
        rir = A.exponential_rir(rt60, np.random.default_rng(seed), drr_db=0.0, sample_rate=SR)
        response = A.reverberate(impulse, rir)
        assert abs(schroeder_rt60(response) - rt60) < 0.2 * rt60
        assert abs(float(np.sum(response.astype(np.float64) ** 2)) - 1.0) < 1e-4  # unit energy
        assert response[0] == response.max()  # the direct sound first, at lag 0: aligned


def test_reverb_direct_to_reverberant_ratio() -> None:
    rir = A.exponential_rir(0.5, np.random.default_rng(0), drr_db=6.0, sample_rate=SR).astype(np.float64)
    assert abs(10 * math.log10(rir[0] ** 2 / np.sum(rir[1:] ** 2)) - 6.0) < 1e-3


def test_gain_scales_rms_exactly_and_clipping_bounds_the_peak() -> None:
    x = speechlike(1.0)
    for db in (-18.0, -3.5, 0.0, 6.0):
        assert rms(A.gain(x, db)) / rms(x) == pytest.approx(10 ** (db / 20), rel=1e-6)
    loud = A.gain(x, 12.0)
    for level in (1.0, 0.3):
        clipped = A.clip(loud, level)
        assert np.abs(clipped).max() <= level and np.abs(clipped).max() == pytest.approx(level)
        inside = np.abs(loud) < level
        assert np.array_equal(clipped[inside], loud[inside])  # below the level nothing changes


def test_8bit_quantisation_has_at_most_256_levels() -> None:
    x = np.clip(speechlike(1.0) * 3, -1, 1).astype(np.float32)
    mu = A.mu_law_quantize(x, 8)
    lin = A.linear_quantize(x, 8)
    assert 200 < len(np.unique(mu)) <= 256 and 150 < len(np.unique(lin)) <= 256
    in_range = x < 127 / 128  # +1.0 itself is beyond 8-bit PCM's largest level
    assert np.abs(lin - x)[in_range].max() <= 1 / 256 + 1e-7  # half a step of 1/128
    small = np.abs(x) < 0.05  # mu-law: fine steps near zero, finer than linear's
    assert np.abs(mu - x)[small].max() < np.abs(lin - x)[small].max()
    assert len(np.unique(A.mu_law_quantize(x, 4))) <= 16


# ---------------------------------------------------------------------------------------
# The composed chain


def test_augment_is_a_pure_function_of_its_rng() -> None:
    x = speechlike(1.0)
    config = AugmentConfig(enabled=True)
    outs = [A.augment(x, np.random.default_rng(seed), config, SR) for seed in (5, 5, 6)]
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert all(o.shape == x.shape and o.dtype == np.float32 and np.abs(o).max() <= 1 for o in outs)


def test_every_stage_runs_at_probability_one_and_none_at_zero() -> None:
    x = speechlike(1.0)
    always = AugmentConfig(
        enabled=True, reverb_prob=1, noise_prob=1, babble_share=1, eq_prob=1, band_prob=1,
        band_low_hz=(100, 200), telephone_prob=1, resample8k_prob=1, gain_prob=1, clip_prob=1,
        quantize_prob=1,
    )  # fmt: skip
    plan = A.draw_plan(np.random.default_rng(0), always, SR, babble_available=True)
    names = [s.name for s in plan]
    assert names == [
        "reverb", "babble", "eq", "band", "telephone", "resample", "gain", "overdrive", "quantize"
    ]  # fmt: skip
    assert [s.name for s in A.draw_plan(np.random.default_rng(0), always, SR)][1] == "noise"
    talkers = [speechlike(1.0, s) for s in range(3)]
    y = A.apply_plan(x, plan, np.random.default_rng(1), SR, lambda n, rng: talkers[:n])
    assert y.shape == x.shape and np.abs(y).max() <= 1 and len(np.unique(y)) <= 256
    never = dataclasses.replace(
        always, reverb_prob=0, noise_prob=0, eq_prob=0, band_prob=0, telephone_prob=0, resample8k_prob=0,
        gain_prob=0, clip_prob=0, quantize_prob=0,
    )  # fmt: skip
    assert A.draw_plan(np.random.default_rng(0), never, SR, babble_available=True) == []
    assert np.array_equal(A.augment(x, np.random.default_rng(0), never, SR), x)


def test_bad_augment_config_is_a_clear_error() -> None:
    for override, says in [
        ("data.augment.target=noisy", "data.augment.target must be one of"),
        ("data.augment.noise_prob=1.5", "data.augment.noise_prob must be in [0, 1]"),
        ("data.augment.noise_snr_db=[30, 10]", "data.augment.noise_snr_db must be [low, high]"),
        ("data.augment.reverb_rt60=[0.5]", "data.augment.reverb_rt60 must be [low, high]"),
        ("data.augment.noise_colours=[blue]", "data.augment.noise_colours must list some of"),
        ("data.augment.loudness=3", "unknown key data.augment.loudness"),
    ]:
        with pytest.raises(ConfigError, match=None) as err:
            load_recipe("demo", [override])
        assert says in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------
# Training batches


def with_augment(recipe: Recipe, **changes: object) -> Recipe:
    augment = dataclasses.replace(recipe.data.augment, enabled=True, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, augment=augment))


def small(recipe: Recipe) -> Recipe:
    return dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, batch_size=4))


def test_default_batches_are_bit_identical_to_the_unaugmented_builder(demo_corpus: Corpus) -> None:
    recipe = small(demo_recipe())
    assert not recipe.data.augment.enabled
    batches = StepBatches(demo_corpus, recipe)
    # the builder as it was before augmentation existed: crops drawn with rng (seed, step, rank)
    crops = RandomCrops(batches.split.train, demo_corpus.speakers, batches.segment_length)
    for step in (0, 7):
        rng = np.random.default_rng([recipe.train.seed, step, 0])
        drawn = [crops.sample(rng) for _ in range(recipe.train.batch_size)]
        audio, speakers = batches.batch(step)
        assert torch.equal(audio, torch.from_numpy(np.stack([a for a, _ in drawn])))
        assert torch.equal(speakers, torch.tensor([s for _, s in drawn]))
    # enabled with every probability 0: the augmentation draws do not move the crops
    idle = with_augment(
        recipe, reverb_prob=0, noise_prob=0, eq_prob=0, band_prob=0, telephone_prob=0,
        resample8k_prob=0, gain_prob=0, clip_prob=0, quantize_prob=0,
    )  # fmt: skip
    idle_batch = StepBatches(demo_corpus, idle).batch(7)
    assert all(torch.equal(a, b) for a, b in zip(idle_batch, batches.batch(7), strict=True))


def test_augmented_batches_are_keyed_by_seed_and_step(demo_corpus: Corpus) -> None:
    plain = small(demo_recipe())
    recipe = with_augment(plain, target="clean", noise_prob=1.0)
    batches = StepBatches(demo_corpus, recipe)
    assert batches.encoder_input
    clean, speakers, degraded = batches.batch(3)
    assert torch.equal(clean, StepBatches(demo_corpus, plain).batch(3)[0])  # the target: the clean crops
    assert degraded.shape == clean.shape and not torch.equal(degraded, clean)
    again = StepBatches(demo_corpus, recipe).batch(3)  # a fresh instance, as after a resume
    assert all(torch.equal(a, b) for a, b in zip(again, (clean, speakers, degraded), strict=True))
    steps = list(batches.iterate(2, 5))
    assert all(torch.equal(a, b) for a, b in zip(steps[1], (clean, speakers, degraded), strict=True))
    assert not torch.equal(batches.batch(4)[2], degraded)
    workers = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, num_workers=1))
    with_worker = list(StepBatches(demo_corpus, workers).iterate(2, 5))
    pairs = zip(with_worker, steps, strict=True)
    assert all(torch.equal(x, y) for a, b in pairs for x, y in zip(a, b, strict=True))
    other_seed = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=1))
    assert not torch.equal(StepBatches(demo_corpus, other_seed).batch(3)[2], degraded)
    # target degraded: the model reconstructs what it encodes, one audio tensor
    target_degraded = StepBatches(demo_corpus, with_augment(plain, noise_prob=1.0))
    audio, _ = target_degraded.batch(3)
    assert not target_degraded.encoder_input and torch.equal(audio, degraded)


def test_reference_crops_pass_the_same_channel(demo_corpus: Corpus) -> None:
    plain = small(load_recipe("demo", ["model.speaker_encoder.enabled=true"]))
    recipe = with_augment(
        plain, telephone_prob=1.0, noise_prob=0, reverb_prob=0, eq_prob=0, band_prob=0,
        resample8k_prob=0, gain_prob=0, clip_prob=0, quantize_prob=0,
    )  # fmt: skip
    clean_reference = StepBatches(demo_corpus, plain).batch(2)[2]
    _, _, reference = StepBatches(demo_corpus, recipe).batch(2)
    assert reference.shape == clean_reference.shape
    for r, c in zip(reference.numpy(), clean_reference.numpy(), strict=True):
        np.testing.assert_allclose(r, np.clip(A.telephone(c), -1, 1), atol=1e-6)
    off = with_augment(plain, reference=False, telephone_prob=1.0)
    assert torch.equal(StepBatches(demo_corpus, off).batch(2)[2], clean_reference)


def test_encoder_hears_swaps_only_the_encoder_input() -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(2).model).eval()
    clean, noisy = torch.randn(2, 1024) * 0.1, torch.randn(2, 1024) * 0.3
    speaker = torch.tensor([0, 1])
    with torch.no_grad(), encoder_hears(model, noisy):
        swapped = model(clean, speaker)
    with torch.no_grad():
        assert torch.equal(swapped.codes, model(noisy, speaker).codes)
        assert not torch.equal(swapped.reconstruction_loss, model(noisy, speaker).reconstruction_loss)
        assert torch.equal(model(clean, speaker).codes, model.encode(clean))  # the hook is gone


# ---------------------------------------------------------------------------------------
# Recipes and checkpoints


def test_augment_recipe_round_trips_through_a_checkpoint(tmp_path) -> None:
    recipe = tiny_recipe(
        2,
        "data.augment.enabled=true",
        "data.augment.target=clean",
        "data.augment.noise_snr_db=[0, 15]",
        "data.augment.noise_colours=[pink]",
    )
    path = save_checkpoint(tmp_path / "a.pt", VQVAE(recipe.model), recipe, [])
    loaded = load_checkpoint(path).recipe
    assert loaded == recipe and loaded.data.augment.noise_snr_db == (0.0, 15.0)
    assert recipe_from_dict(to_dict(recipe)) == recipe


def test_a_recipe_saved_before_augmentation_loads_with_it_off(tmp_path) -> None:
    recipe = tiny_recipe(2)
    saved = to_dict(recipe)
    del saved["data"]["augment"]
    model = VQVAE(recipe.model)
    payload = {"kind": "vqvae", "recipe": saved, "speakers": [],
               "model": {k: v.detach() for k, v in model.state_dict().items()}, "training": {}}  # fmt: skip
    loaded = load_checkpoint(save_payload(tmp_path / "old.pt", payload))
    assert loaded.recipe == recipe and not loaded.recipe.data.augment.enabled
