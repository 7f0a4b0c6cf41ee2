"""Corpus-scale encoding (issue 19): torchrun shards, resume, the manifest, exact padded batches.

The torchrun test launches ``python -m torch.distributed.run --nproc_per_node 2`` on the real
command (gloo on CPU); everything else runs in-process. A tiny random-weight checkpoint and
tone clips in tmp_path keep it to seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, tone, write_tone
from typer.testing import CliRunner

from vqspeech.batch_encode import encode_batches, encode_padded, plan_batches
from vqspeech.codec import Codec
from vqspeech.errors import DataError
from vqspeech.manifest import ManifestEntry, parse_entry, rank_manifest_path, read_manifest, write_manifest
from vqspeech.shard import audio_durations, shard_by_duration
from vqspeech_cli.main import app

runner = CliRunner()
REPO = Path(__file__).absolute().parents[1]

#: (speaker folder, seconds) of the test corpus: lengths from under a receptive field to 1.5 s.
CLIPS = [("s01", 0.4), ("s01", 1.3), ("s02", 0.2), ("s02", 0.9), ("s03", 0.6), ("s03", 1.5), ("s01", 0.03)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="module")
def codec(ckpt: Path) -> Codec:
    return Codec.load(ckpt, "cpu")


def make_corpus(root: Path) -> list[Path]:
    return [
        write_tone(root / spk / f"{spk}_{i:03d}.wav", seconds, f0=100.0 + 30 * i, seed=i)
        for i, (spk, seconds) in enumerate(CLIPS)
    ]


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def token_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.vqt"))}


# --------------------------------------------------------------------------------------------
# sharding


def test_shards_cover_every_input_once_balanced_by_duration_and_deterministic() -> None:
    rng = random.Random(0)
    keys = [f"spk{i % 7}/utt{i:04d}.wav" for i in range(300)]
    durations = [rng.choice([0.5, 1.0, 2.0]) * rng.lognormvariate(1.0, 1.0) for _ in keys]
    for world in (1, 2, 3, 8):
        shards = shard_by_duration(keys, durations, world)
        assert sorted(i for shard in shards for i in shard) == list(range(len(keys)))
        loads = [sum(durations[i] for i in shard) for shard in shards]
        best = max(sum(durations) / world, max(durations))  # no split can do better than this
        assert max(loads) <= 4 / 3 * best  # the longest-first rule's guarantee
        # the same pairs in another order give every key the same rank
        order = list(range(len(keys)))
        rng.shuffle(order)
        again = shard_by_duration([keys[i] for i in order], [durations[i] for i in order], world)
        rank_of = {keys[i]: r for r, shard in enumerate(shards) for i in shard}
        assert all(rank_of[keys[order[i]]] == r for r, shard in enumerate(again) for i in shard)


def test_shards_balance_seconds_not_counts() -> None:
    # one long file and many short ones: by count rank 0 would get 60 + 2.5 s, by duration each ~35 s
    keys = ["long.wav"] + [f"short{i:02d}.wav" for i in range(10)]
    durations = [60.0] + [1.0] * 10
    shards = shard_by_duration(keys, durations, 2)
    assert [len(s) for s in shards] == [1, 10]
    equal = shard_by_duration(["b", "a", "c", "d"], [1.0] * 4, 2)
    assert equal == [[1, 2], [0, 3]]  # ties go by key: a (index 1), b (0) to ranks 0, 1, then c, d


def test_durations_come_from_the_headers(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    got = audio_durations([*paths, tmp_path / "bad.wav", tmp_path / "missing.wav"])
    assert got == pytest.approx([s for _, s in CLIPS] + [0.0, 0.0], abs=1e-4)


# --------------------------------------------------------------------------------------------
# padded batches


def test_padded_batch_codes_equal_per_file_codes(codec: Codec) -> None:
    seconds = [0.3, 1.1, 0.05, 0.77, 2.0, 0.0041, 0.5]
    audios = [tone(s, f0=90.0 + 40 * i, seed=i) for i, s in enumerate(seconds)]
    per_file = [codec.encode_audio(a) for a in audios]
    batched = encode_padded(codec, audios)
    for one, many in zip(per_file, batched, strict=True):
        assert one.shape == many.shape
        np.testing.assert_array_equal(one, many)
    # mixed: batches of 3, and files over 20 frames alone through the chunked path
    for one, many in zip(per_file, encode_batches(codec, audios, 3, max_frames=20), strict=True):
        np.testing.assert_array_equal(one, many)
    # what the masking is for: zero padding in the batch alone changes some files' last codes
    hop = codec.hop_length
    width = max(-(-a.shape[0] // hop) * hop for a in audios)
    padded = torch.zeros(len(audios), width)
    for row, audio in zip(padded, audios, strict=True):
        row[: audio.shape[0]] = torch.from_numpy(audio)
    with torch.no_grad():
        naive = codec.model.quantizer.quantize(codec.model.encoder(padded)).numpy()
    assert any(not np.array_equal(naive[i, : c.shape[1]], c[0]) for i, c in enumerate(per_file))


def test_plan_batches_groups_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(100, 50_000, size=41)]
    batches = plan_batches(lengths, 8, max_samples=200_000, max_length=40_000)
    assert sorted(i for b in batches for i in b) == list(range(41))
    for batch in batches:
        assert len(batch) <= 8
        longest = max(lengths[i] for i in batch)
        assert (longest > 40_000 and len(batch) == 1) or len(batch) * longest <= 200_000
    normal = [b for b in batches if max(lengths[i] for i in b) <= 40_000]
    assert all(
        max(lengths[i] for i in a) <= min(lengths[i] for i in b) for a, b in itertools.pairwise(normal)
    )


def test_batched_cli_writes_the_same_files_as_per_file(tmp_path: Path, ckpt: Path) -> None:
    make_corpus(tmp_path / "corpus")
    assert run("encode", tmp_path / "corpus", "-m", ckpt, "-o", tmp_path / "one", "-q")[0] == 0
    code, err = run(
        "encode", tmp_path / "corpus", "-m", ckpt, "-o", tmp_path / "many", "--batch-size", "3", "-q"
    )
    assert code == 0, err
    assert token_files(tmp_path / "one") == token_files(tmp_path / "many")
    assert len(token_files(tmp_path / "one")) == len(CLIPS)


# --------------------------------------------------------------------------------------------
# manifest, resume, decode from a manifest


def test_manifest_lines_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    entries = [
        ManifestEntry("b.wav", "out/b.vqt", 1.25, 313, True, "ok"),
        ManifestEntry("a.wav", "out/a.vqt", 0.0, 0, False, "error", "not audio"),
    ]
    path = write_manifest(tmp_path / "m.jsonl", entries)
    assert read_manifest(path) == sorted(entries, key=lambda e: e.input)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["input", "output", "duration", "frames", "speaker_vector", "status", "error"]
    assert rank_manifest_path(path, 3) == tmp_path / "m.rank3.jsonl"
    (tmp_path / "bad.jsonl").write_text(
        path.read_text() + '{"input": "x", "output": null, "status": "done"}\n'
    )
    with pytest.raises(DataError, match="line 3: status 'done'"):
        read_manifest(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="not JSON"):
        parse_entry("{oops")


def test_resume_skips_valid_outputs_and_redoes_partial_ones(tmp_path: Path, ckpt: Path) -> None:
    make_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "s02" / "broken.wav").write_bytes(b"not audio")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run("encode", tmp_path / "corpus", "-m", ckpt, "-o", ref, "-q")[0] == 1  # broken.wav fails
    expected = token_files(ref)
    shutil.copytree(ref, out)
    truncated, flipped, gone = (
        out / "s01" / "s01_001.vqt",
        out / "s03" / "s03_005.vqt",
        out / "s02" / "s02_003.vqt",
    )
    truncated.write_bytes(truncated.read_bytes()[:-7])  # a killed writer's leftover (non-atomic copy)
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x01  # one bit of the codes: only the CRC can tell
    flipped.write_bytes(bytes(data))
    gone.unlink()
    manifest = tmp_path / "manifest.jsonl"
    code, err = run("encode", tmp_path / "corpus", "-m", ckpt, "-o", out, "--resume", "--manifest", manifest)
    assert code == 1 and "broken.wav" in err
    assert token_files(out) == expected
    entries = {Path(e.input).name: e for e in read_manifest(manifest)}
    assert len(entries) == len(CLIPS) + 1
    redone = {"s01_001.wav", "s03_005.wav", "s02_003.wav"}
    assert {n for n, e in entries.items() if e.status == "ok"} == redone
    assert entries["broken.wav"].status == "error" and "not a readable audio file" in (
        entries["broken.wav"].error or ""
    )
    assert all(e.status == "skipped" for n, e in entries.items() if n not in redone | {"broken.wav"})
    for name, seconds in ((f"{spk}_{i:03d}.wav", s) for i, (spk, s) in enumerate(CLIPS)):
        assert entries[name].duration == pytest.approx(seconds, abs=1e-4)
        assert entries[name].frames == -(-round(seconds * 16000) // 64)
        assert entries[name].speaker_vector is False
    # without --resume an existing output is still refused, as before
    code, err = run("encode", tmp_path / "corpus" / "s01", "-m", ckpt, "-o", out / "s01", "-q")
    assert code == 1 and "already exists" in err
    code, err = run("encode", tmp_path / "corpus", "-m", ckpt, "-o", out, "--resume", "--overwrite")
    assert code == 2 and "not both" in err


def test_decode_takes_a_manifest(tmp_path: Path, ckpt: Path) -> None:
    write_tone(tmp_path / "corpus" / "s01" / "s01_a.wav", 0.1)
    write_tone(tmp_path / "corpus" / "s02" / "s02_b.wav", 0.15, f0=120.0)
    (tmp_path / "corpus" / "s02" / "s02_c.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    code, _ = run(
        "encode", tmp_path / "corpus", "-m", ckpt, "-o", out, "--manifest", out / "manifest.jsonl", "-q"
    )
    assert code == 1
    code, err = run("decode", out / "manifest.jsonl", "-m", ckpt, "-o", tmp_path / "dec", "-q")
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path / "dec")) for p in (tmp_path / "dec").rglob("*.wav")) == [
        "s01/s01_a.wav",
        "s02/s02_b.wav",
    ]


def test_corpus_options_refuse_a_single_stream(tmp_path: Path, ckpt: Path) -> None:
    clip = write_tone(tmp_path / "a.wav", 0.1)
    code, err = run("encode", clip, "-m", ckpt, "-o", "-", "--resume")
    assert code == 2 and "one file per input" in err


# --------------------------------------------------------------------------------------------
# torchrun: 2 processes, gloo


def test_torchrun_two_ranks_resume_a_killed_run_with_the_single_process_outputs(
    tmp_path: Path, ckpt: Path
) -> None:
    corpus = tmp_path / "corpus"
    make_corpus(corpus)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run("encode", corpus, "-m", ckpt, "-o", ref, "-q")[0] == 0
    expected = token_files(ref)
    # a killed run's leftovers: some outputs done, one truncated, a writer's temp file, the rest missing
    for name in ("s01/s01_000.vqt", "s02/s02_002.vqt", "s01/s01_001.vqt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ref / name, out / name)
    partial = out / "s01" / "s01_001.vqt"
    partial.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])
    (out / "s03").mkdir()
    (out / "s03" / ".s03_005.vqt.x1y2.tmp").write_bytes(b"half")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [
        *launch,
        "-m",
        "vqspeech_cli.main",
        "encode",
        str(corpus),
        "-m",
        str(ckpt),
        "-o",
        str(out),
        "--resume",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0/2" in proc.stderr and "rank 1/2" in proc.stderr and "Traceback" not in proc.stderr
    assert token_files(out) == expected  # byte for byte the single-process outputs
    entries = read_manifest(out / "manifest.jsonl")
    inputs = [e.input for e in entries]
    assert (
        sorted(inputs)
        == inputs
        == sorted(str(corpus / f"{s}/{s}_{i:03d}.wav") for i, (s, _) in enumerate(CLIPS))
    )
    assert {Path(e.input).name for e in entries if e.status == "skipped"} == {"s01_000.wav", "s02_002.wav"}
    assert all(e.status in ("ok", "skipped") and e.error is None for e in entries)
    assert not list(out.glob("manifest.rank*.jsonl"))


def test_decode_under_torchrun_decodes_each_rank_its_share(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, seconds in enumerate((0.05, 0.2, 0.1, 0.15)):
        write_tone(tmp_path / "corpus" / "s01" / f"s01_{i}.wav", seconds, f0=100.0 + 20 * i)
    assert run("encode", tmp_path / "corpus", "-m", ckpt, "-o", tmp_path / "tok", "-q")[0] == 0
    decoded = []
    for rank in (0, 1):  # no process group is needed: each rank reads RANK / WORLD_SIZE and decodes its share
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        out = tmp_path / f"dec{rank}"
        code, err = run("decode", tmp_path / "tok", "-m", ckpt, "-o", out, "-q", "--device", "cpu")
        assert code == 0, err
        decoded.append({p.name for p in out.rglob("*.wav")})
    assert decoded[0].isdisjoint(decoded[1])
    assert decoded[0] | decoded[1] == {f"s01_{i}.wav" for i in range(4)}
    assert decoded[0] == {"s01_1.wav", "s01_0.wav"}  # longest first: 0.2 + 0.05 s against 0.15 + 0.1 s
