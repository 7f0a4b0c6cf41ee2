"""The phone probe: near 1 on codes that carry phones, at chance on codes that do not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_checkpoint
from typer.testing import CliRunner

from vqspeech.content_probe import code_features, corpus_phone_probe, frame_labels, phone_probe
from vqspeech.data.phones import SILENCE, utterance_phones
from vqspeech.errors import DataError
from vqspeech.inference import Codec
from vqspeech_cli.main import app

PHONES = [f"p{i}" for i in range(12)]


def synthetic(
    n_utts: int, seed: int, informative: bool, k: int = 4
) -> tuple[list[np.ndarray], list[list[str]]]:
    """Utterances of phone runs; codes = phone id * k + noise in [0, k) (or random codes)."""
    rng = np.random.default_rng(seed)
    codes, labels = [], []
    for _ in range(n_utts):
        ids = np.repeat(rng.integers(len(PHONES), size=30), rng.integers(2, 8, size=30))
        ids[rng.random(ids.size) < 0.3] = 0  # p0 is the most common phone, as silence is
        noise = rng.integers(k, size=ids.size)
        codes.append(ids * k + noise if informative else rng.integers(len(PHONES) * k, size=ids.size))
        labels.append([PHONES[i] for i in ids])
    return codes, labels


def test_probe_reads_phones_from_codes_that_carry_them() -> None:
    train = synthetic(30, seed=0, informative=True)
    test = synthetic(10, seed=1, informative=True)
    scores = phone_probe(*train, *test, codebook_size=48)
    assert scores.accuracy > 0.98
    assert 0.3 < scores.chance < 0.5 and scores.n_phones == 12
    assert scores.n_frames == sum(len(c) for c in test[0])


def test_probe_is_at_chance_on_random_codes() -> None:
    train = synthetic(30, seed=0, informative=False)
    test = synthetic(10, seed=1, informative=False)
    scores = phone_probe(*train, *test, codebook_size=48, max_train_frames=3000)
    assert scores.n_train_frames == 3000
    assert scores.accuracy <= scores.chance + 0.03
    assert scores.accuracy >= scores.chance - 0.1  # it mostly answers the majority phone


def test_frame_labels_take_the_phone_at_each_token_centre() -> None:
    spans = [(0.0, 0.010, SILENCE), (0.010, 0.0135, "a"), (0.0135, 0.02, "b")]
    # tokens of 64 samples at 16 kHz: centres at 2, 6, 10, 14, 18, 22 ms
    assert frame_labels(spans, 6, 64, 16000) == [SILENCE, SILENCE, "a", "b", "b", SILENCE]
    assert frame_labels([], 2, 64, 16000) == [SILENCE, SILENCE]


def test_code_features_one_hot_with_context() -> None:
    x = code_features(np.array([2, 0, 1]), 3, context=1)
    assert x.shape == (3, 9)
    assert x[1].tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 0]  # before: 2, self: 0, after: 1
    assert x[0, :3].sum() == 0 and x[2, 6:].sum() == 0  # nothing past the ends
    with pytest.raises(DataError, match="codes must lie"):
        code_features(np.array([3]), 3)


def test_probe_input_errors() -> None:
    codes, labels = synthetic(2, seed=0, informative=True)
    with pytest.raises(DataError, match="tokens but"):
        phone_probe(codes, [labels[0][:-1], labels[1]], codes, labels, codebook_size=48)
    with pytest.raises(DataError, match="no held-out tokens"):
        phone_probe(codes, labels, [], [], codebook_size=48)


def test_corpus_phone_probe_on_a_synthesised_corpus(tmp_path: Path, demo_corpus_dir: Path) -> None:
    codec = Codec.load(make_checkpoint(tmp_path / "m.pt"), "cpu")
    scores = corpus_phone_probe(codec, demo_corpus_dir)
    assert scores.train_speakers == ("s01", "s03") and scores.test_speakers == ("s02",)
    held = [utterance_phones(demo_corpus_dir, "s02", f"s02_{i:03d}") for i in range(1, 5)]
    assert all(spans is not None for spans in held)
    assert 0.0 <= scores.accuracy <= 1.0 and 0.0 < scores.chance < 1.0
    assert scores.n_phones >= 20  # English has ~40 phones; 8 sentences hold most of them
    # one label per token of the held-out speaker's 4 utterances (~2-3 s each, 250 tokens/s)
    assert 4 * 250 < scores.n_frames < 4 * 250 * 5
    other = corpus_phone_probe(codec, demo_corpus_dir, test_speakers=["s01"])
    speech = corpus_phone_probe(codec, demo_corpus_dir, test_speakers=["s01"], skip_silence=True)
    assert other.train_speakers == ("s02", "s03") and other.test_speakers == ("s01",)
    assert 0.5 * other.n_frames < speech.n_frames < other.n_frames  # silences left out
    with pytest.raises(DataError, match="no phone labels"):
        corpus_phone_probe(codec, demo_corpus_dir, test_speakers=["s09"])


def test_cli_probe(tmp_path: Path, demo_corpus_dir: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    runner = CliRunner()
    result = runner.invoke(app, ["probe", "-m", str(checkpoint), "--data", str(demo_corpus_dir), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["test_speakers"] == ["s02"] and 0 <= scores["accuracy"] <= 1
    bad = runner.invoke(app, ["probe", "-m", str(checkpoint), "--data", str(tmp_path / "none")])
    assert bad.exit_code == 1 and "does not exist" in bad.output and "Traceback" not in bad.output
