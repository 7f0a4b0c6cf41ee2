"""vqspeech.data: VCTK 0.80/0.92 with quirks, folders, manifests, cache, splits, datasets."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import VCTK_EXPECTED, VCTK_F0, make_folder_corpus, tone

from vqspeech.config import demo_recipe
from vqspeech.data.batches import StepBatches, validation_batches
from vqspeech.data.cache import trim_silence
from vqspeech.data.corpus import Corpus, open_corpus
from vqspeech.data.dataset import RandomCrops, UtteranceDataset, pad_collate, segment_length
from vqspeech.data.speakers import Speaker, SpeakerTable
from vqspeech.data.vctk import parse_speaker_info
from vqspeech.errors import DataError


def counts(corpus: Corpus) -> dict[str, int]:
    out: dict[str, int] = {}
    for utt in corpus.utterances:
        out[utt.speaker] = out.get(utt.speaker, 0) + 1
    return out


def f0_of(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    return float(np.argmax(spectrum) * sample_rate / audio.shape[0])


# ---------------------------------------------------------------------------------------
# VCTK


def test_vctk_092_layout_quirks_and_metadata(vctk_factory: Callable[..., Path], tmp_path: Path) -> None:
    root = vctk_factory("0.92")
    corpus = open_corpus(root, cache_dir=tmp_path / "cache")
    assert corpus.kind == "vctk-0.92" and corpus.sample_rate == 16000
    assert counts(corpus) == VCTK_EXPECTED["0.92/mic1"]
    assert corpus.speakers.names == sorted(VCTK_EXPECTED["0.92/mic1"])
    p225 = corpus.speakers.get("p225")
    assert (p225.age, p225.gender, p225.accent, p225.region) == (23, "F", "English", "Southern England")
    assert corpus.speakers.get("p280").comment == "mic2 files unavailable"
    assert corpus.speakers.get("p362").region is None
    assert corpus.speakers.get("s5").accent == "British"
    by_id = {u.id: u for u in corpus.utterances}
    assert by_id["p225_002"].text == "Sentence number 2 said by p225."
    assert all(u.text is None for u in corpus.utterances if u.speaker == "p315")
    # Cached audio is 16 kHz mono and still the speaker's tone.
    utt = by_id["p226_001"]
    audio, rate = sf.read(utt.path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1 and audio.shape[0] == utt.num_samples
    assert abs(f0_of(audio, 16000) - VCTK_F0["p226"]) < 5
    assert abs(utt.num_samples - 0.45 * 16000) <= 1  # 0.92 is not trimmed again
    json.dumps(corpus.speaker_table())  # plain JSON for checkpoints


def test_vctk_092_mic2_leaves_out_p280_with_a_warning(
    vctk_factory: Callable[..., Path], tmp_path: Path
) -> None:
    corpus = open_corpus(vctk_factory("0.92"), mic="mic2", cache_dir=tmp_path / "cache")
    assert counts(corpus) == VCTK_EXPECTED["0.92/mic2"]
    assert any("p280" in w and "mic2" in w for w in corpus.warnings)
    with pytest.raises(DataError, match="mic1 or mic2"):
        open_corpus(corpus.root, mic="mic3", cache_dir=tmp_path / "cache3")


def test_vctk_080_detection_ids_and_silence_trimming(vctk_factory: Callable[..., Path]) -> None:
    root = vctk_factory("0.80", lead_silence=0.5)
    corpus = open_corpus(root)  # default cache: inside the corpus folder
    assert corpus.kind == "vctk-0.80"
    assert counts(corpus) == VCTK_EXPECTED["0.80"]
    assert corpus.cache_dir.is_relative_to(root / ".vqspeech-cache")
    assert corpus.speakers.get("p226").gender == "M"  # "226" in 0.80's speaker-info -> p226
    for utt in corpus.utterances:
        tone_samples = int((0.4 + 0.05 * int(utt.id.split("_")[1])) * 16000)
        # Most of the 2 x 0.5 s of silence is gone; the tone is not cut (frames are 128 ms).
        assert tone_samples <= utt.num_samples <= tone_samples + 2 * 2048, utt.id


def test_trim_silence_matches_librosa() -> None:
    import librosa

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [0.001 * rng.standard_normal(7000), tone(150, 0.6, 16000), 0.001 * rng.standard_normal(9000)]
    )
    x = x.astype(np.float32)
    for top_db in (20.0, 35.0, 60.0):
        expected, _ = librosa.effects.trim(x, top_db=top_db)
        np.testing.assert_array_equal(trim_silence(x, top_db), expected)
    assert trim_silence(np.zeros(5000, np.float32), 30).shape == (5000,)  # all silent: unchanged


def test_nested_vctk_folder_is_found(vctk_factory: Callable[..., Path], tmp_path: Path) -> None:
    outer = tmp_path / "download"
    vctk_factory("0.80", name="download/VCTK-Corpus")
    corpus = open_corpus(outer, cache_dir=tmp_path / "c")
    assert corpus.kind == "vctk-0.80" and corpus.root == outer / "VCTK-Corpus"


def test_speaker_info_parsing_is_tolerant() -> None:
    text = (
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n\n"
        "p225  23  F    English    Southern  England\n"
        "248  23  F    Indian\n"
        "p280  25  F    Unknown    France  (mic2 files unavailable)\n"
        "s5  ??  X\n"
        "p999\n"
    )
    info = parse_speaker_info(text)
    assert list(info) == ["p225", "p248", "p280", "s5", "p999"]
    assert info["p248"] == Speaker("p248", 23, "F", "Indian", None, None)
    assert info["p280"].region == "France" and info["p280"].comment == "mic2 files unavailable"
    assert info["s5"] == Speaker("s5") and info["p999"] == Speaker("p999")


# ---------------------------------------------------------------------------------------
# The cache


def _mtimes(corpus: Corpus) -> dict[str, int]:
    return {u.id: u.path.stat().st_mtime_ns for u in corpus.utterances}


def test_cache_is_built_once_and_rebuilt_when_a_source_changes(
    vctk_factory: Callable[..., Path], tmp_path: Path
) -> None:
    root = vctk_factory("0.92")
    cache = tmp_path / "cache"
    built: list[tuple[str, int, int]] = []
    first = open_corpus(root, cache_dir=cache, progress=lambda *a: built.append(a))
    assert built[-1] == ("cache", 16, 16)
    stamps = _mtimes(first)

    built.clear()
    second = open_corpus(root, cache_dir=cache, progress=lambda *a: built.append(a))
    assert built == [] and _mtimes(second) == stamps and second.utterances == first.utterances

    source = root / "wav48_silence_trimmed" / "p226" / "p226_002_mic1.flac"
    sf.write(source, tone(300.0, 0.9, 48000), 48000)
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    (cache / "p225" / "p225_001.wav").unlink()  # a deleted cache file is rebuilt too
    third = open_corpus(root, cache_dir=cache, progress=lambda *a: built.append(a))
    assert built[-1] == ("cache", 2, 2)
    changed = {k for k, v in _mtimes(third).items() if stamps.get(k) != v}
    assert changed == {"p226_002", "p225_001"}
    utt = next(u for u in third.utterances if u.id == "p226_002")
    assert utt.num_samples == int(0.9 * 16000)

    source.unlink()  # a removed source drops out, and so does its cached file
    fourth = open_corpus(root, cache_dir=cache)
    assert "p226_002" not in {u.id for u in fourth.utterances} and not utt.path.exists()


def test_unreadable_sources_are_skipped_with_a_warning(
    vctk_factory: Callable[..., Path], tmp_path: Path
) -> None:
    root = vctk_factory("0.92")
    (root / "wav48_silence_trimmed" / "p225" / "p225_003_mic1.flac").write_bytes(b"")
    corpus = open_corpus(root, cache_dir=tmp_path / "c")
    assert counts(corpus)["p225"] == 2
    assert any("p225_003_mic1.flac" in w and "empty" in w for w in corpus.warnings)


# ---------------------------------------------------------------------------------------
# Folders and manifests


def test_folder_corpus(tmp_path: Path) -> None:
    root = make_folder_corpus(tmp_path / "voices")
    corpus = open_corpus(root)
    assert corpus.kind == "folder"
    assert [u.id for u in corpus.utterances] == ["alice/a1", "alice/a2", "alice/day2/a3", "bob/b1", "bob/b2"]
    assert corpus.speakers.names == ["alice", "bob"] and corpus.speakers.id("bob") == 1
    assert any("loose" in w or "directly in" in w for w in corpus.warnings)
    a3 = corpus.utterances[2]
    assert a3.num_samples == int(0.7 * 16000) and a3.text is None
    assert abs(f0_of(sf.read(a3.path, dtype="float32")[0], 16000) - 190) < 5
    # The cache lives in a hidden folder of the corpus, which a reopen does not mistake for a speaker.
    assert open_corpus(root).speakers.names == ["alice", "bob"]


def test_manifest_corpus(tmp_path: Path) -> None:
    root = make_folder_corpus(tmp_path / "voices")
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "train.tsv"
    manifest.write_text(
        "path\tspeaker\n"
        "../voices/alice/a1.wav\tAlice\tHello there.\n"
        "# a comment\n"
        "\n"
        f"{root / 'bob' / 'b2.ogg'}\tBob\n"
        "../voices/alice/day2/a3.flac\tAlice\n"
    )
    corpus = open_corpus(manifest)
    assert corpus.kind == "manifest"
    assert counts(corpus) == {"Alice": 2, "Bob": 1}
    assert {u.text for u in corpus.utterances} == {"Hello there.", None}
    assert corpus.cache_dir.is_relative_to(lists / ".vqspeech-cache")

    manifest.write_text("../voices/alice/a1.wav Alice\n")
    with pytest.raises(DataError, match=r"train.tsv:1: expected 'path<TAB>speaker'"):
        open_corpus(manifest)
    manifest.write_text("path\tspeaker\n../voices/alice/nope.wav\tAlice\n")
    with pytest.raises(DataError, match=r"train.tsv:2: audio file .*nope.wav does not exist"):
        open_corpus(manifest)


def test_open_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio found"):
        open_corpus(tmp_path / "empty")
    sf.write(tmp_path / "one.wav", tone(100, 0.1, 16000), 16000)
    with pytest.raises(DataError, match="one audio file, not a corpus"):
        open_corpus(tmp_path / "one.wav")


# ---------------------------------------------------------------------------------------
# Speakers and splits


def test_speaker_table_round_trips_through_json() -> None:
    table = SpeakerTable.from_speakers(
        [Speaker("p226", 22, "M"), Speaker("p225", 23, "F", "English", "Surrey")]
    )
    assert table.names == ["p225", "p226"] and table.id("p226") == 1 and "p225" in table
    data = json.loads(json.dumps(table.to_list()))
    assert data[0] == {"id": 0, "name": "p225", "age": 23, "gender": "F", "accent": "English",
                       "region": "Surrey", "comment": None}  # fmt: skip
    assert SpeakerTable.from_list(data) == table
    assert SpeakerTable.from_list([{"name": "a"}, {"name": "b"}]).names == ["a", "b"]
    with pytest.raises(DataError, match="unknown speaker 'zz'"):
        table.id("zz")
    with pytest.raises(DataError):
        SpeakerTable.from_list([{"id": 1, "name": "a"}])
    with pytest.raises(DataError):
        SpeakerTable([Speaker("a"), Speaker("a")])


def test_split_is_deterministic_and_independent_of_order(
    vctk_factory: Callable[..., Path], tmp_path: Path
) -> None:
    corpus = open_corpus(vctk_factory("0.92"), cache_dir=tmp_path / "c")
    split = corpus.split(valid_utterances_per_speaker=2)
    shuffled = list(corpus.utterances)
    random.Random(3).shuffle(shuffled)
    assert dataclasses.replace(corpus, utterances=tuple(shuffled)).split(2) == split
    assert not {u.id for u in split.train} & {u.id for u in split.valid}
    assert len(split.train) + len(split.valid) == len(corpus)
    valid_counts: dict[str, int] = {}
    for u in split.valid:
        valid_counts[u.speaker] = valid_counts.get(u.speaker, 0) + 1
    # Two held out per speaker, but every speaker keeps one for training (p362 and s5 have 2).
    assert valid_counts == {"p225": 2, "p226": 2, "p280": 2, "p315": 2, "p362": 1, "s5": 1}
    assert corpus.split(2, seed=1) != split  # another seed, another choice

    held = corpus.split(1, valid_speakers=["p226"])
    assert {u.id for u in held.valid if u.speaker == "p226"} == {"p226_001", "p226_002", "p226_003"}
    assert all(u.speaker != "p226" for u in held.train)
    assert corpus.split(0).valid == ()
    with pytest.raises(DataError, match="unknown speaker 'p999'"):
        corpus.split(1, valid_speakers=["p999"])


# ---------------------------------------------------------------------------------------
# Datasets


def test_segment_length_rounds_to_whole_hops() -> None:
    assert segment_length(0.5, 16000, 64) == 8000
    assert segment_length(1.0, 16000, 64) == 16000
    assert segment_length(0.3, 16000, 100) == 4800
    assert segment_length(0.001, 16000, 64) == 64
    with pytest.raises(DataError):
        segment_length(0.0, 16000, 64)


@pytest.mark.parametrize("preload", [True, False])
def test_random_crops_are_reproducible_and_padded(
    vctk_factory: Callable[..., Path], tmp_path: Path, preload: bool
) -> None:
    corpus = open_corpus(vctk_factory("0.92"), cache_dir=tmp_path / "c")
    length = segment_length(0.6, 16000, 64)  # longer than every utterance (0.45-0.55 s)
    crops = RandomCrops(corpus.utterances, corpus.speakers, length, seed=7, preload=preload)

    def take(dataset: RandomCrops, n: int = 20) -> list[tuple[torch.Tensor, torch.Tensor]]:
        stream = iter(dataset)
        return [next(stream) for _ in range(n)]

    a, b = take(crops), take(crops)
    for (xa, sa), (xb, sb) in zip(a, b, strict=True):
        assert xa.shape == (length,) and xa.dtype == torch.float32 and sa.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(sa, sb)
    other = take(RandomCrops(corpus.utterances, corpus.speakers, length, seed=8))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(other, a, strict=True))
    # Short utterances are zero-padded at the end; the speaker id matches the tone's pitch.
    for x, speaker in a:
        name = corpus.speakers[int(speaker)].name
        assert float(x[-100:].abs().max()) == 0.0
        assert abs(f0_of(x.numpy()[:6000], 16000) - VCTK_F0[name]) < 5


def test_crops_fall_inside_long_utterances(tmp_path: Path) -> None:
    root = tmp_path / "long"
    (root / "spk").mkdir(parents=True)
    ramp = np.linspace(-0.9, 0.9, 32000, dtype=np.float32)
    sf.write(root / "spk" / "ramp.wav", ramp, 16000, subtype="FLOAT")
    corpus = open_corpus(root)
    crops = iter(RandomCrops(corpus.utterances, corpus.speakers, 640, seed=0))
    starts = set()
    for _ in range(50):
        x, _ = next(crops)
        diffs = np.diff(x.numpy())
        assert diffs.min() > 0  # a contiguous, unpadded piece of the ramp
        starts.add(round(float(x[0]), 3))
    assert len(starts) > 40


def test_step_batches_are_a_function_of_the_step(demo_corpus: Corpus) -> None:
    recipe = demo_recipe()
    batches = StepBatches(demo_corpus, recipe)
    audio, speakers = batches.batch(5)
    crop = (
        int(recipe.data.segment_seconds * recipe.model.sample_rate)
        // recipe.model.hop_length
        * recipe.model.hop_length
    )
    assert audio.shape == (recipe.train.batch_size, crop) and speakers.shape == (recipe.train.batch_size,)
    assert audio.dtype == torch.float32 and speakers.dtype == torch.int64
    steps = list(batches.iterate(3, 7))
    assert len(steps) == 4 and torch.equal(steps[2][0], audio) and torch.equal(steps[2][1], speakers)
    assert not torch.equal(batches.batch(6)[0], audio)
    valid_ids = {u.id for u in batches.split.valid}
    assert valid_ids and not valid_ids & {u.id for u in batches.split.train}

    workers = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, num_workers=1))
    with_worker = list(StepBatches(demo_corpus, workers).iterate(3, 7))
    assert all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(with_worker, steps, strict=True)
    )
    rank1 = StepBatches(demo_corpus, recipe, rank=1, world_size=2).batch(5)
    assert not torch.equal(rank1[0], audio)


def test_validation_batches_cover_held_out_utterances(demo_corpus: Corpus) -> None:
    recipe = demo_recipe()
    batches = validation_batches(demo_corpus, recipe)
    split = StepBatches(demo_corpus, recipe).split
    crop = batches[0][0].shape[1]
    assert crop == int(recipe.data.segment_seconds * recipe.model.sample_rate)
    expected = sum(max(1, u.num_samples // crop) for u in split.valid)
    assert sum(a.shape[0] for a, _ in batches) == expected
    assert all(a.shape[1] == crop and a.shape[0] <= recipe.train.batch_size for a, _ in batches)
    assert {int(s) for _, sp in batches for s in sp} == {
        demo_corpus.speakers.id(u.speaker) for u in split.valid
    }
    assert sum(a.shape[0] for a, _ in validation_batches(demo_corpus, recipe, max_segments=5)) == 5


def test_utterance_dataset_and_padding(demo_corpus: Corpus) -> None:
    data = UtteranceDataset(demo_corpus.utterances[:3], demo_corpus.speakers, hop_length=64)
    assert len(data) == 3
    for i, utt in enumerate(data.utterances):
        audio, speaker = data[i]
        assert audio.shape[0] % 64 == 0 and 0 <= audio.shape[0] - utt.num_samples < 64
        assert int(speaker) == demo_corpus.speakers.id(utt.speaker)
    short = UtteranceDataset(demo_corpus.utterances[:2], demo_corpus.speakers, hop_length=64, max_length=1000)
    assert short[0][0].shape == (1024,)
    audio, speakers, lengths = pad_collate([data[0], short[1]])
    assert audio.shape == (2, int(lengths.max())) and lengths[1] == 1024 and speakers.shape == (2,)
