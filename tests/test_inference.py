"""The file-level inference API (vqspeech.inference): exact chunked encoding, exact decoding, batches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import make_checkpoint, tone, write_tone

from vqspeech.batch import Task, encode_files
from vqspeech.codec import Codec, infer_speaker
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError, OutputError
from vqspeech.inference import (
    check_tokens,
    decode_speaker,
    decode_tokens,
    encode_file,
    write_token_output,
)
from vqspeech.tokens import loads, read_jsonl_record


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> Codec:
    return Codec.load(make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt"), "cpu")


def test_encoding_is_deterministic_and_independent_of_the_chunk_size(codec: Codec) -> None:
    rng = np.random.default_rng(0)
    audio = tone(0.9, f0=140) + 0.05 * rng.standard_normal(14400).astype(np.float32)
    audio = audio[:14377]  # not a whole number of hops
    whole = codec.encode_audio(audio, chunk_frames=None)
    assert whole.shape == (1, -(-14377 // 64)) and whole.dtype == np.int64
    assert len(np.unique(whole)) > 5
    assert codec.model.context_frames < whole.shape[1] // 3  # so that the chunks really cut the file
    for chunk_frames in (1, 2, 7, 16, 64, 100, 10_000):
        np.testing.assert_array_equal(codec.encode_audio(audio, chunk_frames=chunk_frames), whole)
    np.testing.assert_array_equal(codec.encode_audio(audio.copy()), whole)


def test_decoding_is_exact_length_seeded_and_independent_of_the_chunk_size(
    tmp_path: Path, codec: Codec
) -> None:
    tokens = encode_file(codec, write_tone(tmp_path / "s02_a.wav", 0.1503))
    assert tokens.header.speaker == "s02" and tokens.header.num_samples == 2405
    check_tokens(codec, tokens)
    runs = {
        chunk: np.concatenate(list(decode_tokens(codec, tokens, "s01", seed=3, chunk_frames=chunk)))
        for chunk in (1, 5, 250)
    }
    assert all(a.shape == (2405,) and a.dtype == np.float32 for a in runs.values())
    np.testing.assert_array_equal(runs[1], runs[250])
    np.testing.assert_array_equal(runs[5], runs[250])
    other_seed = np.concatenate(list(decode_tokens(codec, tokens, "s01", seed=4)))
    assert not np.array_equal(other_seed, runs[250])
    greedy = [
        np.concatenate(list(decode_tokens(codec, tokens, "s03", temperature=0.0, seed=s))) for s in (0, 1)
    ]
    np.testing.assert_array_equal(greedy[0], greedy[1])  # greedy ignores the noise


def test_speakers_and_model_checks(tmp_path: Path, codec: Codec) -> None:
    assert infer_speaker("x/s01/s02_003.wav", codec.speaker_names) == "s01"
    assert infer_speaker("x/misc/s02_003.wav", codec.speaker_names) == "s02"
    assert infer_speaker("s03/day2/take.wav", codec.speaker_names) == "s03"
    assert infer_speaker("x/zed_003.wav", codec.speaker_names) is None
    tokens = encode_file(codec, write_tone(tmp_path / "anon.wav", 0.05))
    assert tokens.header.speaker is None
    with pytest.raises(CheckpointError, match="pass --speaker"):
        decode_speaker(codec, tokens)
    assert decode_speaker(codec, tokens, "s02") == "s02"
    with pytest.raises(CheckpointError, match="s01, s02, s03"):
        decode_speaker(codec, tokens, "s04")
    other = Codec.load(make_checkpoint(tmp_path / "other.pt", seed=5), "cpu")
    assert other.fingerprint != codec.fingerprint
    with pytest.raises(ModelMismatchError, match="--force"):
        check_tokens(other, tokens)
    check_tokens(other, tokens, force=True)
    wide = Codec.load(make_checkpoint(tmp_path / "k64.pt", extra=["model.quantizer.codebook_size=64"]), "cpu")
    with pytest.raises(ModelMismatchError, match="1 x 32 codes"):
        check_tokens(wide, tokens, force=True)  # --force does not make other shapes decodable
    with pytest.raises(ConfigError):
        Codec.load(tmp_path / "other.pt", "tpu")


def test_outputs_are_atomic_and_streams_get_the_file_bytes(tmp_path: Path, codec: Codec) -> None:
    tokens = encode_file(codec, write_tone(tmp_path / "a.wav", 0.05))
    write_token_output(tokens, tmp_path / "deep" / "er" / "a.vqt")  # folders are created
    stream = io.BytesIO()
    write_token_output(tokens, stream)
    assert stream.getvalue() == (tmp_path / "deep" / "er" / "a.vqt").read_bytes()
    assert loads(stream.getvalue()) == tokens
    with pytest.raises(OutputError, match="already exists"):
        write_token_output(tokens, tmp_path / "deep" / "er" / "a.vqt", "npy")
    with pytest.raises(OutputError, match="is a folder"):
        write_token_output(tokens, tmp_path / "deep", overwrite=True)
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["a.vqt"]  # no temp files left


def test_encode_files_keeps_going_and_keeps_order(tmp_path: Path, codec: Codec) -> None:
    paths = [write_tone(tmp_path / f"f{i}.flac", 0.05 + 0.01 * i, sample_rate=8000) for i in range(5)]
    (tmp_path / "f2.flac").write_bytes(b"broken")
    tasks = [Task(p, None, label=p.name) for p in paths]
    stream = io.BytesIO()
    seen: list[str] = []
    outcomes = encode_files(codec, tasks, fmt="jsonl", stream=stream, workers=3,
                            on_outcome=lambda o: seen.append(o.task.name))  # fmt: skip
    assert seen == [p.name for p in paths]  # reported in input order, whatever the threads did
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert "not a readable audio file" in (outcomes[2].error or "")
    records = [read_jsonl_record(line) for line in stream.getvalue().decode().splitlines()]
    assert [name for name, _ in records] == ["f0.flac", "f1.flac", "f3.flac", "f4.flac"]
    assert records[0][1].header.num_samples == 800  # 0.05 s at 8 kHz, resampled to 16 kHz
    assert outcomes[0].seconds == pytest.approx(0.05)


def test_decoded_files_are_written_progressively_at_the_asked_rate(tmp_path: Path, codec: Codec) -> None:
    from vqspeech.inference import DecodeOptions, decode_file

    tokens = encode_file(codec, write_tone(tmp_path / "s01_x.wav", 0.25))
    write_token_output(tokens, tmp_path / "x.vqt")
    progress: list[tuple[float, float]] = []
    options = DecodeOptions(sample_rate=22050, chunk_frames=10)
    seconds = decode_file(codec, tmp_path / "x.vqt", tmp_path / "x.ogg", options,
                          on_progress=lambda done, total: progress.append((done, total)))  # fmt: skip
    assert seconds == 0.25
    assert len(progress) >= 6 and progress[-1] == (0.25, 0.25)  # one report per chunk written
    info = sf.info(tmp_path / "x.ogg")
    assert info.samplerate == 22050 and info.format == "OGG" and abs(info.frames - 5512) <= 1
