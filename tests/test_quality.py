"""DNSMOS and speaker similarity (vqspeech.evaluation.quality): None without their extras, a one-line
error for a broken install, real numbers with them (skipped where they are not installed)."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import tone

from vqspeech.errors import ConfigError
from vqspeech.evaluation import quality
from vqspeech.evaluation.measures import _mean_scores, score_pair
from vqspeech.evaluation.quality import DnsmosScores, mean_dnsmos, mean_or_none

HAS_DNSMOS = (
    importlib.util.find_spec("speechmos") is not None and importlib.util.find_spec("onnxruntime") is not None
)
HAS_SPKR = importlib.util.find_spec("resemblyzer") is not None


@pytest.fixture(autouse=True)
def fresh_models() -> Iterator[None]:
    """Each test loads (or fails to load) the models itself: no cached loader or result leaks."""
    quality._dnsmos_runner.cache_clear()
    quality._voice_encoder.cache_clear()
    quality._RECENT.clear()
    yield
    quality._dnsmos_runner.cache_clear()
    quality._voice_encoder.cache_clear()
    quality._RECENT.clear()


def test_without_the_extras_every_measure_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("speechmos", "resemblyzer"):
        monkeypatch.setitem(sys.modules, name, None)  # import of it fails as if not installed
    x = tone(0.5, seed=1)
    assert quality.dnsmos(x) is None and not quality.dnsmos_available()
    assert quality.speaker_similarity(x, x) is None and not quality.speaker_similarity_available()
    pair = score_pair(x, tone(0.5, seed=2))
    assert pair.dnsmos_ovrl is None and pair.dnsmos_ovrl_reference is None and pair.speaker_similarity is None
    assert 0.0 <= pair.stoi <= 1.0  # the other measures still score
    mean = _mean_scores([pair, pair])
    assert mean.dnsmos_ovrl is None and mean.speaker_similarity is None


def test_an_installed_package_that_does_not_import_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def failing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("resemblyzer", "speechmos"):
            raise ModuleNotFoundError("No module named 'pkg_resources'", name="pkg_resources")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing)
    with pytest.raises(
        ConfigError, match=r"resemblyzer does not import .*pkg_resources.*vqspeech\[spkr\]"
    ) as err:
        quality.speaker_similarity(tone(0.2), tone(0.2))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"speechmos does not import .*vqspeech\[dnsmos\]"):
        quality.dnsmos(tone(0.2))


def test_means_leave_out_what_was_not_scored() -> None:
    a, b = DnsmosScores(2.0, 3.0, 4.0, 3.5), DnsmosScores(3.0, 4.0, 2.0, 2.5)
    assert mean_dnsmos([a, None, b]) == DnsmosScores(2.5, 3.5, 3.0, 3.0)
    assert mean_dnsmos([None, None]) is None and mean_dnsmos([]) is None
    assert mean_or_none([1.0, None, 2.0]) == 1.5 and mean_or_none([None]) is None


def test_empty_or_non_finite_audio_is_refused_before_any_model_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "_dnsmos_runner", lambda: lambda audio: pytest.fail("model ran"))
    with pytest.raises(Exception, match="empty"):
        quality.dnsmos(np.zeros(0, np.float32))
    with pytest.raises(Exception, match="NaN"):
        quality.dnsmos(np.full(100, np.nan, np.float32))


@pytest.mark.skipif(
    not HAS_DNSMOS, reason="the dnsmos extra is not installed (pip install 'vqspeech[dnsmos]')"
)
def test_dnsmos_gives_mos_scores_and_ranks_noise_below_a_clean_tone() -> None:
    clean = tone(2.0, f0=140.0, seed=0)
    scores = quality.dnsmos(clean)
    assert scores is not None
    for value in (scores.ovrl, scores.sig, scores.bak, scores.p808):
        assert 1.0 <= value <= 5.0
    noisy = clean + 0.3 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    worse = quality.dnsmos(noisy)
    assert worse is not None and worse.bak < scores.bak  # the background got worse
    assert quality.dnsmos(clean) == scores  # deterministic (and remembered)
    at_8k = quality.dnsmos(clean[::2].copy(), 8000)  # other rates are resampled to 16 kHz
    assert at_8k is not None and 1.0 <= at_8k.ovrl <= 5.0


@pytest.mark.skipif(not HAS_SPKR, reason="the spkr extra is not installed (pip install 'vqspeech[spkr]')")
def test_speaker_similarity_of_a_recording_with_itself_is_one() -> None:
    x = tone(2.0, f0=120.0, seed=0)
    assert quality.speaker_similarity(x, x) == pytest.approx(1.0, abs=1e-5)
    other = quality.speaker_similarity(x, tone(2.0, f0=300.0, seed=1))
    assert other is not None and -1.0 <= other < 0.999
    embedding = quality.speaker_embedding(x)
    assert embedding is not None and embedding.shape == (256,)
    assert float(np.linalg.norm(embedding)) == pytest.approx(1.0, abs=1e-4)
