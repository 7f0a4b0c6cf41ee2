"""Issue 18: nothing lost, nothing unbounded, errors that say what happened.

Hostile files are made in tmp_path; memory bounds are checked with tracemalloc or in a
subprocess under ``resource`` limits, never with timings.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import flip_weight_bytes, make_checkpoint, write_tone
from test_loop import Regression
from typer.testing import CliRunner

from vqspeech.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, load_audio
from vqspeech.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DIGEST_KEY,
    load_checkpoint,
    load_payload,
    save_payload,
)
from vqspeech.config import TrainConfig
from vqspeech.data.cache import Source, build_cache
from vqspeech.entropy import encode_codes
from vqspeech.errors import AudioError, CheckpointError, ConfigError, TokenFormatError
from vqspeech.loop import corpus_report, fit, resume_note
from vqspeech.prior import sample_speech
from vqspeech.runfolder import LAST, LOCK, RunFolderBusy, claim_run
from vqspeech.tokens import MAGIC, TokenHeader, load_container
from vqspeech_cli.main import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


# --------------------------------------------------------------------------------------------
# 1. non-finite weights never replace a good checkpoint, and are refused on load


class DivergesAt(Regression):
    """Finite until batch ``at``, whose infinite target makes the weights NaN."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super()._batch(step)
        return x, y * (float("inf") if step >= self.at else 1.0)


@pytest.mark.parametrize("log_every", [1, 100])  # caught by the loss, or only by the weights
def test_divergence_keeps_the_last_good_checkpoint(tmp_path: Path, log_every: int) -> None:
    config = TrainConfig(lr=0.05, warmup_steps=1, eval_every=1000, checkpoint_every=5, log_every=log_every)
    with pytest.raises(ConfigError, match=r"lower train\.lr.*keeps the weights of step 5"):
        fit(DivergesAt(7), tmp_path, config, total_steps=20)
    payload = load_payload(tmp_path / LAST, ("toy",))
    assert payload["training"]["step"] == 5
    assert all(torch.isfinite(t).all() for t in payload["model"].values())


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["model"]))
    payload["model"][name].view(-1)[0] = float("nan")
    payload.pop(DIGEST_KEY)
    save_payload(path, payload)  # a consistent file whose weights are NaN (as loop.py once wrote)
    with pytest.raises(CheckpointError, match=r"non-finite weights.*diverged"):
        load_checkpoint(path)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and "non-finite weights" in result.output


# --------------------------------------------------------------------------------------------
# 2. one training per run folder; the lock dies with its process


def test_a_second_run_in_the_same_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    busy = rf"in use by another training \(pid {os.getpid()} on host"
    with (
        claim_run(tmp_path, resume=False),
        pytest.raises(RunFolderBusy, match=busy),
        claim_run(tmp_path, False),
    ):
        pass
    with claim_run(tmp_path, resume=False):  # released on exit
        pass


def test_the_run_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import time
        from vqspeech.runfolder import claim_run
        with claim_run({str(tmp_path)!r}, resume=False):
            print("locked", flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=rf"pid {proc.pid}"), claim_run(tmp_path, resume=False):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with claim_run(tmp_path, resume=False):  # the OS dropped the dead process's lock
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


# --------------------------------------------------------------------------------------------
# 3. checkpoints carry a digest of their contents


def test_flipped_bytes_in_the_weights_are_refused(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    load_checkpoint(path)
    flip_weight_bytes(path)
    with pytest.raises(CheckpointError, match="damaged: its contents do not match the digest"):
        load_checkpoint(path)


def test_checkpoints_without_a_digest_still_load(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload.pop(DIGEST_KEY)
    torch.save(payload, tmp_path / "old.pt")  # as written before the digest existed
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.fingerprint == load_checkpoint(path).fingerprint


# --------------------------------------------------------------------------------------------
# 4. stale temp files of an interrupted checkpoint write are cleaned on start


def test_stale_temp_files_are_cleaned_when_a_run_starts(tmp_path: Path) -> None:
    stale = [tmp_path / ".last.pt.k2j3h4.tmp", tmp_path / "samples" / "step0000010" / ".original.wav.x1.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "notes.tmp", tmp_path / "metrics.csv"]
    for path in keep:
        path.write_text("mine")
    with claim_run(tmp_path, resume=False):
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in keep)


# --------------------------------------------------------------------------------------------
# 5. input sample rates are bounded; resampling memory follows the output


def _wav_with_rate(path: Path, samples: int, rate: int) -> Path:
    sf.write(path, np.zeros(samples, np.int16), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)  # fmt chunk: sample rate, then byte rate
    data[28:32] = struct.pack("<I", rate * 2)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1, MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 2**31 - 1])
def test_sample_rates_outside_the_bound_are_refused(tmp_path: Path, rate: int) -> None:
    path = _wav_with_rate(tmp_path / "x.wav", 10_000, rate)  # 20 KB; at 1 Hz: 160 M samples out
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=rf"sample rate {rate} Hz is outside"):
            load_audio(path)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


def test_rates_inside_the_bound_load(tmp_path: Path) -> None:
    assert load_audio(_wav_with_rate(tmp_path / "a.wav", 8000, MIN_SAMPLE_RATE)).shape[0] == 32000


def test_resampling_memory_follows_the_output_not_the_input(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "long.wav", seconds=30.0, sample_rate=48000, channels=2)
    tracemalloc.start()
    try:
        audio = load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert audio.shape[0] == 480_000
    # reading it whole took 3 x 2 x 4 x 480k bytes for the stereo input and its mono copy alone
    assert peak < 2 * audio.nbytes + (4 << 20), peak


# --------------------------------------------------------------------------------------------
# 6. entropy-coded token files: n_frames bounded by the payload


def _coded_file(n_frames: int, payload: bytes, codebook_size: int = 512) -> bytes:
    header = {
        "sample_rate": 16000, "hop_length": 64, "codebook_size": codebook_size, "n_codebooks": 1,
        "n_frames": n_frames, "num_samples": n_frames * 64, "speaker": None, "model_fingerprint": "0" * 16,
        "vqspeech_version": "0.1.0", "coding": "arithmetic", "prior_fingerprint": "1" * 16,
        "prior_speaker": -1, "codes_crc32": 0,
    }  # fmt: skip
    head = json.dumps(header).encode()
    body = MAGIC + struct.pack("<BI", 1, len(head)) + head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_coded_file_claiming_more_frames_than_its_payload_holds_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "huge.vqt"
    path.write_bytes(_coded_file(2**40, b"\x01\x02\x03"))
    tracemalloc.start()
    try:
        with pytest.raises(TokenFormatError, match="cannot fit in 3 bytes of coded payload"):
            load_container(path)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and "cannot fit" in result.output and "Traceback" not in result.output


class _Confident:
    """A prior that is all but sure of code 0: the coder's cheapest codes."""

    codebook_size = 64
    fingerprint = "confident"

    def weights(self, codes: np.ndarray, speaker: int) -> np.ndarray:
        rows = np.ones((codes.shape[0], self.codebook_size), np.int64)
        rows[:, 0] = 1 << 50
        return rows


def test_the_payload_bound_admits_what_the_coder_can_make() -> None:
    h = TokenHeader(16000, 64, 64, 1, 0, 0, None, "0" * 16, coding="arithmetic",
                    extra={"prior_fingerprint": "1", "prior_speaker": -1, "codes_crc32": 0})  # fmt: skip
    for n in (1, 1000, 40_000):
        payload = encode_codes(np.zeros(n, np.int64), _Confident(), -1)  # type: ignore[arg-type]
        assert n <= h.max_coded_frames(len(payload))
    assert h.max_coded_frames(3) < 2**40


# --------------------------------------------------------------------------------------------
# 7. sample --seconds is bounded before anything is loaded or allocated


@pytest.mark.parametrize("seconds", [1e12, 3601.0])
def test_sample_seconds_is_bounded(tmp_path: Path, seconds: float) -> None:
    with pytest.raises(ConfigError, match="is over the 3600 s"):
        sample_speech(tmp_path / "none.pt", tmp_path / "none.pt", None, seconds)


# --------------------------------------------------------------------------------------------
# 9. audio too short to make one sample: a per-file error; never a 0-sample cache entry


def test_audio_that_resamples_to_nothing_is_a_per_file_error(tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "m.pt")
    sf.write(tmp_path / "a_short.wav", np.array([0.1], np.float32), 48000)
    write_tone(tmp_path / "b_fine.wav")
    inputs = [str(tmp_path / "a_short.wav"), str(tmp_path / "b_fine.wav")]
    result = runner.invoke(app, ["encode", "-m", str(model), *inputs, "-o", f"{tmp_path / 'out'}/"])
    assert result.exit_code == 1, result.output
    assert "too short: 1 sample(s) at 48000 Hz make no sample at 16000 Hz" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert (tmp_path / "out" / "b_fine.vqt").is_file()


def test_the_cache_never_holds_zero_sample_entries(tmp_path: Path) -> None:
    sf.write(tmp_path / "short.wav", np.array([0.1], np.float32), 48000)
    write_tone(tmp_path / "fine.wav")
    sources = [Source("short", "s", tmp_path / "short.wav"), Source("fine", "s", tmp_path / "fine.wav")]
    cached, warnings = build_cache(sources, tmp_path / "cache", num_workers=1)
    assert set(cached) == {"fine"} and all(c.num_samples > 0 for c in cached.values())
    assert len(warnings) == 1 and "too short" in warnings[0]
    lines = corpus_report(warnings, len(cached))
    assert lines[0] == "corpus: 1 file(s) left out, 1 utterance(s) kept:" and "short.wav" in lines[1]


def test_a_zero_sample_entry_of_an_older_cache_is_rebuilt(tmp_path: Path) -> None:
    write_tone(tmp_path / "fine.wav")
    sources = [Source("fine", "s", tmp_path / "fine.wav")]
    build_cache(sources, tmp_path / "cache", num_workers=1)
    index_path = tmp_path / "cache" / "index.json"
    index = json.loads(index_path.read_text())
    index["entries"]["fine"]["num_samples"] = 0
    index_path.write_text(json.dumps(index))
    cached, _ = build_cache(sources, tmp_path / "cache", num_workers=1)
    assert cached["fine"].num_samples > 0


# --------------------------------------------------------------------------------------------
# 10. a full disk while writing a checkpoint is one clean error (RLIMIT_FSIZE stands in for it)


def test_a_failed_checkpoint_write_is_an_output_error_and_leaves_nothing(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        import torch
        from vqspeech.checkpoint import save_payload
        from vqspeech.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, resource.RLIM_INFINITY))
        payload = {{"kind": "toy", "model": {{"a": torch.zeros(100_000), "b": torch.ones(30_000)}}}}
        try:  # torch's zip writer meets the failed write inside a tensor: RuntimeError
            save_payload(Path({str(tmp_path / "m.pt")!r}), payload)
        except OutputError as exc:
            print("OutputError:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot write the checkpoint" in proc.stdout and "check the folder and free space" in proc.stdout
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# 11. info escapes what comes from a file


def test_info_shows_header_strings_inert(tmp_path: Path) -> None:
    model = make_checkpoint(tmp_path / "m.pt")
    write_tone(tmp_path / "x.wav")
    assert runner.invoke(app, ["encode", "-m", str(model), str(tmp_path / "x.wav")]).exit_code == 0
    from vqspeech.tokens import TokenFile, load_tokens, save_tokens

    tokens = load_tokens(tmp_path / "x.vqt")
    evil = "\x1b[31m\x1b]0;owned\x07[bold red]loud[/]\x9b2J\u202e"
    header = TokenHeader(**{**vars(tokens.header), "speaker": evil})
    save_tokens(tmp_path / "x.vqt", TokenFile(header, tokens.codes))
    for args in (["info", str(tmp_path / "x.vqt")], ["info", "--json", str(tmp_path / "x.vqt")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert not any(c in result.output for c in "\x1b\x07\x9b\u202e"), repr(result.output)
    shown = json.loads(runner.invoke(app, ["info", "--json", str(tmp_path / "x.vqt")]).output)
    assert evil in shown.values()  # escaped on screen, the same value once parsed
    table = runner.invoke(app, ["info", str(tmp_path / "x.vqt")]).output
    assert "[bold red]loud[/]" in table and "\\x1b[31m" in table


# --------------------------------------------------------------------------------------------
# 12. messages that say what happened


def test_checkpoint_refusals_say_what_the_file_is(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav")
    (tmp_path / "r.pt").write_bytes(np.random.default_rng(0).bytes(1000))
    for name, what in (("a.wav", "a WAV audio file"), ("r.pt", "not a torch archive")):
        result = runner.invoke(app, ["info", str(tmp_path / name)])
        assert result.exit_code == 1 and what in result.output
        assert "pop from empty list" not in result.output and "index out of range" not in result.output
        assert result.output.count(name) == 1, result.output  # the path is said once


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def test_the_pickle_refusal_is_a_whole_sentence(tmp_path: Path) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "x": _Evil()}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "e.pt")
    message = str(info.value)
    assert "holds pickled Python objects" in message
    assert message.endswith("because loading them can run code)")


def test_a_run_folder_is_accepted_as_model(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "run" / "last.pt")
    write_tone(tmp_path / "x.wav")
    result = runner.invoke(app, ["encode", "-m", str(tmp_path / "run"), str(tmp_path / "x.wav")])
    assert result.exit_code == 0, result.output
    empty = runner.invoke(app, ["encode", "-m", str(tmp_path), str(tmp_path / "x.wav")])
    assert empty.exit_code == 1 and "is a folder without last.pt" in empty.output


def test_resume_says_which_settings_it_keeps(tmp_path: Path) -> None:
    saved = {"train": {"lr": 0.0005, "steps": 10}, "model": {"n_speakers": 3, "hop": 64}}
    given = {"train": {"lr": 2.0, "steps": 20}, "model": {"n_speakers": 0, "hop": 64}}
    note = resume_note(given, saved, tmp_path / "last.pt")
    assert note is not None and "train.lr=2.0 (run: 0.0005)" in note and "steps" not in note.split(": ")[-1]
    assert resume_note(saved, saved, tmp_path / "last.pt") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_an_unreadable_file_is_told_to_check_permissions(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "x.wav")
    path.chmod(0)
    with pytest.raises(AudioError, match=r"cannot read the file.*check its permissions"):
        load_audio(path)
