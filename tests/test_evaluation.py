"""Evaluation (issue 6): code statistics, the linear probes, and a whole evaluate_model run.

The speaker classifier is checked on the eSpeak demo corpus's real voices; the leakage probe on
synthetic code histograms whose speaker dependence is known; evaluate_model on a tiny
random-weight checkpoint (its numbers mean nothing, its report's shape and invariants do).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_checkpoint, tiny_recipe

from vqspeech.audio import load_audio
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Corpus
from vqspeech.errors import ConfigError, DataError
from vqspeech.evaluation import (
    EvalReport,
    code_histogram,
    code_stats,
    evaluate_model,
    fit_linear_classifier,
    leakage_probe,
    pesq_available,
    pesq_wb,
    speaker_features,
    token_speaker_information,
)
from vqspeech.evaluation.run import _conversion_targets


def test_code_stats_invariants() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 20, size=(1, n)) for n in (50, 7, 300)]  # codes 20..31 never occur
    stats = code_stats(parts, codebook_size=32, token_rate=250.0)
    assert stats.n_tokens == sum(p.size for p in parts) == sum(stats.code_counts)
    assert len(stats.code_counts) == 32
    assert stats.codes_used + stats.dead_codes == 32 and stats.codes_used <= 20
    assert stats.perplexity == pytest.approx(2**stats.entropy_bits)
    assert stats.entropy_bitrate == pytest.approx(stats.entropy_bits * 250.0)
    assert stats.raw_bitrate == 5 * 250.0  # ceil(log2 32) bits per token


def test_code_stats_extremes() -> None:
    uniform = code_stats(np.arange(64) % 16, codebook_size=16, token_rate=100.0)
    assert uniform.perplexity == pytest.approx(16) and uniform.entropy_bits == pytest.approx(4)
    assert uniform.dead_codes == 0
    single = code_stats(np.full(10, 3), codebook_size=512, token_rate=250.0)
    assert single.perplexity == 1.0 and single.codes_used == 1 and single.dead_codes == 511
    assert single.raw_bitrate == 2250.0  # the paper's: 9 bits x 250 tokens/s
    with pytest.raises(DataError, match="codes must lie in"):
        code_stats(np.array([0, 16]), codebook_size=16, token_rate=100.0)


def test_code_histogram_is_normalised() -> None:
    h = code_histogram(np.array([[0, 0, 3, 1]]), 4)
    assert h.tolist() == [0.5, 0.25, 0.0, 0.25]


def _histograms(
    rng: np.random.Generator, speakers: list[str], per_speaker: int, dependent: bool, k: int = 32
) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """Per-utterance histograms of 200 codes each drawn from a per-speaker (or shared) distribution."""
    shared = rng.dirichlet(np.ones(k))
    dists = {s: rng.dirichlet(np.ones(k)) if dependent else shared for s in speakers}
    rows = [
        code_histogram(rng.choice(k, size=200, p=dists[s]), k) for s in speakers for _ in range(per_speaker)
    ]
    labels = [s for s in speakers for _ in range(per_speaker)]
    return np.stack(rows), labels, dists


@pytest.mark.parametrize("dependent", [True, False])
def test_leakage_probe_finds_speaker_identity_only_where_there_is_some(dependent: bool) -> None:
    rng = np.random.default_rng(1)
    speakers = ["a", "b", "c", "d"]
    train, train_labels, _ = _histograms(rng, speakers, 12, dependent)
    rng_test = np.random.default_rng(2)
    if dependent:  # the same speakers' distributions, new utterances
        _, _, dists = _histograms(np.random.default_rng(1), speakers, 12, dependent)
        rows = [
            code_histogram(rng_test.choice(32, size=200, p=dists[s]), 32) for s in speakers for _ in range(25)
        ]
        test, test_labels = np.stack(rows), [s for s in speakers for _ in range(25)]
    else:
        test, test_labels, _ = _histograms(rng_test, speakers, 25, dependent)
    scores = leakage_probe(train, train_labels, test, test_labels)
    assert scores.chance == pytest.approx(0.25)
    assert (scores.n_train, scores.n_test, scores.n_speakers) == (48, 100, 4)
    if dependent:
        assert scores.accuracy >= 0.95
    else:
        assert abs(scores.accuracy - scores.chance) < 0.15


def test_token_information_spans_nothing_to_everything_and_is_not_biased_upward() -> None:
    rng = np.random.default_rng(3)
    speakers = ["a", "b", "c", "d"]

    def utterances(mix: float, n: int, tokens: int) -> tuple[list[np.ndarray], list[str]]:
        """Each speaker owns codes 8s..8s+7 and uses them with probability ``mix``, else any of 32."""
        codes, labels = [], []
        for s, name in enumerate(speakers):
            for _ in range(n):
                own = rng.random(tokens) < mix
                codes.append(np.where(own, 8 * s + rng.integers(0, 8, tokens), rng.integers(0, 32, tokens)))
                labels.append(name)
        return codes, labels

    figures = []
    for mix in (0.0, 0.5, 1.0):
        train_codes, train_labels = utterances(mix, 10, 400)
        test_codes, test_labels = utterances(mix, 5, 400)
        bits, entropy = token_speaker_information(train_codes, train_labels, test_codes, test_labels, 32)
        assert entropy == pytest.approx(2.0)  # four speakers, balanced
        figures.append(bits)
    nothing, some, everything = figures
    assert abs(nothing) < 0.02 and 1.9 < everything <= 2.0 and 0.3 < some < 1.7
    # 512 codes, a few tokens each: the plug-in estimate of I(S; C) would be far above 0 here
    train_codes = [rng.integers(0, 512, 300) for _ in speakers]
    test_codes = [rng.integers(0, 512, 300) for _ in speakers]
    bits, _ = token_speaker_information(train_codes, speakers, test_codes, speakers, 512)
    assert bits < 0.02
    with pytest.raises(DataError, match="no training codes"):
        token_speaker_information(train_codes, speakers, test_codes[:1], ["e"], 512)


def test_classifier_needs_two_classes_and_tolerates_missing_features() -> None:
    with pytest.raises(DataError, match="at least 2 classes"):
        fit_linear_classifier(np.zeros((3, 2)), ["a", "a", "a"])
    x = np.array([[0.0, np.nan], [1.0, 5.0], [10.0, np.nan], [11.0, 6.0]])
    classifier = fit_linear_classifier(x, ["lo", "lo", "hi", "hi"])
    assert classifier.predict(np.array([[0.5, np.nan], [10.5, np.nan]])) == ["lo", "hi"]


def test_speaker_classifier_tells_real_voices_apart(demo_corpus: Corpus) -> None:
    split = split_for(demo_corpus, tiny_recipe())
    features = {u.id: speaker_features(load_audio(u.path)) for u in (*split.train, *split.valid)}
    assert all(v.shape == (21,) for v in features.values())
    classifier = fit_linear_classifier(
        np.stack([features[u.id] for u in split.train]), [u.speaker for u in split.train]
    )
    accuracy = classifier.accuracy(
        np.stack([features[u.id] for u in split.valid]), [u.speaker for u in split.valid]
    )
    assert len({u.speaker for u in split.valid}) == 3
    assert accuracy >= 0.8  # chance is 1/3; two of the three voices are female


def test_conversion_targets_rotate_through_the_other_speakers() -> None:
    speakers = ["a", "b", "c", "d"]
    assert _conversion_targets("b", speakers, 0, 2) == ["c", "d"]  # the speakers after the source
    assert _conversion_targets("b", speakers, 1, 2) == ["a", "c"]  # its next utterance goes on
    assert _conversion_targets("d", speakers, 0, 9) == ["a", "b", "c"]  # at most every other one
    pairs = [(s, t) for s in speakers for turn in range(3) for t in _conversion_targets(s, speakers, turn, 1)]
    assert len(set(pairs)) == 12  # 3 utterances x 1 conversion: every (source, target) pair once


def test_pesq_is_optional() -> None:
    t = np.arange(32000) / 16000
    speech_like = (np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    score = pesq_wb(speech_like, speech_like)
    if pesq_available():
        assert score is not None and score > 4.0  # identical signals: the top of the scale (4.64)
    else:
        assert score is None


@pytest.fixture(scope="module")
def evaluated(demo_corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalReport, Path]:
    """One evaluation of a tiny checkpoint on the demo corpus, WAVs written (shared: it decodes)."""
    root = tmp_path_factory.mktemp("eval")
    ckpt = make_checkpoint(root / "m.pt", speakers=("s01", "s02", "s03"))
    lines: list[str] = []
    report = evaluate_model(
        ckpt,
        demo_corpus_dir,
        max_utterances=2,
        conversions_per_utterance=1,
        audio_dir=root / "audio",
        progress=lines.append,
    )
    assert lines and any("[2/2]" in line for line in lines)
    return report, root / "audio"


def test_evaluate_model_report_round_trips_through_json(evaluated: tuple[EvalReport, Path]) -> None:
    report, _ = evaluated
    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert set(data) >= {"reconstruction", "codes", "conversion", "leakage", "samples", "decode_x_real_time"}
    assert data["codes"]["codebook_size"] == 32 and len(data["codes"]["code_counts"]) == 32


def test_evaluate_model_invariants(evaluated: tuple[EvalReport, Path]) -> None:
    report, _ = evaluated
    assert report.decoder == "wavenet" and report.n_utterances == len(report.samples) == 2
    assert [s["speaker"] for s in report.samples] == ["s01", "s02"]  # round-robin over speakers
    rec, codes, conv, leak = report.reconstruction, report.codes, report.conversion, report.leakage
    assert rec.n == 2 and 0.0 <= rec.stoi <= 1.0 and rec.log_mel_distance >= 0
    assert rec.pesq is None or 1.0 <= rec.pesq <= 4.7
    assert (rec.pesq is None) == (not pesq_available())
    assert codes.codes_used + codes.dead_codes == 32 and sum(codes.code_counts) == codes.n_tokens
    assert codes.perplexity == pytest.approx(2**codes.entropy_bits)
    assert conv.n == 2 and conv.n_speakers == 3 and conv.n_real == leak.n_test == 6
    for rate in (conv.target_rate, conv.source_rate, conv.reconstruction_rate, conv.classifier_accuracy):
        assert 0.0 <= rate <= 1.0
    assert conv.target_rate + conv.source_rate <= 1.0
    assert 0.0 <= leak.accuracy <= 1.0 and leak.chance == pytest.approx(1 / 3)
    assert report.decode_x_real_time > 0 and not math.isnan(report.seconds)
    assert report.unseen is None  # no speaker encoder: no unseen-speaker section


def test_evaluate_model_scores_unseen_speakers_with_a_speaker_encoder(
    demo_corpus_dir: Path, tmp_path: Path
) -> None:
    """s03 is unknown to this model: its voice can only come from the speaker encoder (issue 7)."""
    encoder = ["model.speaker_encoder.enabled=true", "model.speaker_encoder.channels=8"]
    ckpt = make_checkpoint(tmp_path / "se.pt", speakers=("s01", "s02"), extra=encoder)
    report = evaluate_model(ckpt, demo_corpus_dir, max_utterances=2, conversions_per_utterance=0)
    unseen = report.unseen
    assert unseen is not None and unseen.speakers == ["s03"]
    assert unseen.n == unseen.n_real == 2 and unseen.n_conversions == 2  # 4 utterances: 2 enrol, 2 test
    for rate in (unseen.vector_rate, unseen.table_rate, unseen.target_rate, unseen.classifier_accuracy):
        assert 0.0 <= rate <= 1.0
    assert -1.0 <= unseen.table_similarity <= 1.0 and -1.0 <= unseen.vector_similarity <= 1.0
    for error in (unseen.vector_pitch_error, unseen.table_pitch_error):  # semitones; NaN: no pitch found
        assert math.isnan(error) or 0.0 <= error < 12 * math.log2(400 / 60)
    data = report.to_dict()
    assert data["unseen"]["speakers"] == ["s03"] and json.loads(json.dumps(data, allow_nan=False)) == data


def test_evaluate_model_writes_the_wavs_it_names(evaluated: tuple[EvalReport, Path]) -> None:
    report, audio_dir = evaluated
    for sample in report.samples:
        targets = list(sample["conversions"])
        assert len(targets) == 1 and sample["speaker"] not in targets
        assert set(sample["conversions_heard_as"]) == set(targets)
        assert sample["recon_heard_as"] in {"s01", "s02", "s03"}
        paths = [sample["orig"], sample["recon"], *sample["conversions"].values()]
        assert paths[0] == f"{sample['utterance']}.orig.wav"
        assert paths[2] == f"{sample['utterance']}.to_{targets[0]}.wav"
        lengths = {sf.info(str(audio_dir / p)).frames for p in paths}
        assert lengths == {round(sample["seconds"] * 16000)}  # every version as long as the original
    assert not list(audio_dir.glob("**/*.tmp"))


def test_evaluate_model_refuses_a_corpus_of_other_speakers(demo_corpus_dir: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt", speakers=("alice", "bob"))
    with pytest.raises(DataError, match="known to the model"):
        evaluate_model(ckpt, demo_corpus_dir)
    with pytest.raises(ConfigError, match="max_utterances"):
        evaluate_model(ckpt, demo_corpus_dir, max_utterances=0)
