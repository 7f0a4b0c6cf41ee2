"""``vqspeech encode / decode / convert / speakers / info`` in-process with CliRunner (one real pipe).

Tiny random-weight checkpoints (tests/helpers.py) keep the WaveNet fast: a second of audio
decodes in about 0.1 s. Audio clips are a fraction of a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import SPEAKERS, make_checkpoint, write_tone
from typer.testing import CliRunner

from vqspeech import __version__
from vqspeech.audio import load_audio
from vqspeech.codec import Codec
from vqspeech.tokens import TokenFile, dumps, load_tokens, parse_txt, read_jsonl_record, read_npy, save_tokens
from vqspeech_cli.main import app

runner = CliRunner()
REPO = Path(__file__).absolute().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture(scope="module")
def codec(ckpt: Path) -> Codec:
    return Codec.load(ckpt, "cpu")


def run(*args: str | Path, input: str | None = None) -> tuple[int, str, str, bytes]:
    """Invoke the CLI: (exit code, stdout text, stderr text, stdout bytes)."""
    result = runner.invoke(app, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr, result.stdout_bytes


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# encode


def test_encode_writes_a_token_file_that_reads_back_bit_exact(
    tmp_path: Path, ckpt: Path, codec: Codec
) -> None:
    wav = write_tone(tmp_path / "s02" / "s02_007.wav", seconds=0.3013)  # not a whole number of hops
    code, out, err, _ = run("encode", wav, "--model", ckpt, "-q")
    assert code == 0, err
    assert out == "" and err == ""  # -q: nothing on stderr; data went to the file
    target = wav.with_suffix(".vqt")  # default: next to the input
    tokens = load_tokens(target)
    audio = load_audio(wav, codec.sample_rate)
    h = tokens.header
    assert (h.sample_rate, h.hop_length, h.codebook_size, h.n_codebooks) == (16000, 64, 32, 1)
    assert h.num_samples == audio.shape[0] == 4821
    assert h.n_frames == -(-h.num_samples // 64)
    assert h.speaker == "s02"  # the parent folder names a speaker the model knows
    assert h.model_fingerprint == codec.fingerprint and h.vqspeech_version == __version__
    np.testing.assert_array_equal(tokens.codes, codec.encode_audio(audio, chunk_frames=None))
    assert len(np.unique(tokens.codes)) > 3  # a real code sequence, not one repeated code
    assert dumps(tokens) == target.read_bytes()  # write -> read -> write is bit-exact


def test_source_speaker_is_inferred_from_folder_or_prefix_or_left_unknown(tmp_path: Path, ckpt: Path) -> None:
    files = [
        write_tone(tmp_path / "in" / "s03" / "take1.wav"),
        write_tone(tmp_path / "in" / "misc" / "s01_002.wav"),
        write_tone(tmp_path / "in" / "misc" / "zed_001.wav"),
    ]
    assert run("encode", tmp_path / "in", "-m", ckpt, "-o", tmp_path / "out")[0] == 0
    outputs = [tmp_path / "out" / f.relative_to(tmp_path / "in").with_suffix(".vqt") for f in files]
    speakers = [load_tokens(path).header.speaker for path in outputs]
    assert speakers == ["s03", "s01", None]
    code, _, _, _ = run("encode", files[2], "-m", ckpt, "-o", tmp_path / "x.vqt", "--source-speaker", "s02")
    assert code == 0 and load_tokens(tmp_path / "x.vqt").header.speaker == "s02"


def test_any_format_rate_and_channel_count_is_accepted(tmp_path: Path, ckpt: Path, codec: Codec) -> None:
    flac = write_tone(tmp_path / "a.flac", seconds=0.25, sample_rate=44100, channels=2)
    ogg = write_tone(tmp_path / "b.ogg", seconds=0.25, sample_rate=22050)
    assert run("encode", flac, ogg, "-m", ckpt, "-o", tmp_path / "out", "-q")[0] == 0
    for src in (flac, ogg):
        tokens = load_tokens(tmp_path / "out" / (src.stem + ".vqt"))
        audio = load_audio(src, 16000)
        assert tokens.header.num_samples == audio.shape[0] == 4000
        np.testing.assert_array_equal(tokens.codes, codec.encode_audio(audio))


def test_npy_txt_and_jsonl_outputs(tmp_path: Path, ckpt: Path) -> None:
    a, b = write_tone(tmp_path / "a.wav", 0.2), write_tone(tmp_path / "b.wav", 0.15, f0=300)
    assert run("encode", a, "-m", ckpt, "-q")[0] == 0
    codes = load_tokens(tmp_path / "a.vqt").codes
    assert run("encode", a, "-m", ckpt, "-f", "npy", "-q")[0] == 0
    with open(tmp_path / "a.npy", "rb") as handle:
        np.testing.assert_array_equal(read_npy(handle), codes)
    assert run("encode", a, "-m", ckpt, "-o", tmp_path / "a.txt", "-q")[0] == 0  # format from the extension
    np.testing.assert_array_equal(parse_txt((tmp_path / "a.txt").read_text()), codes)

    code, out, _, _ = run("encode", a, b, "-m", ckpt, "-f", "jsonl", "-q")  # jsonl: stdout by default
    assert code == 0
    records = [read_jsonl_record(line) for line in out.splitlines()]
    assert [path for path, _ in records] == [str(a), str(b)]
    assert records[0][1] == load_tokens(tmp_path / "a.vqt")
    assert run("encode", a, b, "-m", ckpt, "-o", tmp_path / "all.jsonl", "-q")[0] == 0
    assert (tmp_path / "all.jsonl").read_text() == out
    code, _, err, _ = run("encode", a, "-m", ckpt, "-o", tmp_path / "all.jsonl", "-q")
    assert code == 1 and "already exists" in err and (tmp_path / "all.jsonl").read_text() == out


def test_stdout_carries_exactly_the_bytes_of_the_file_output(tmp_path: Path, ckpt: Path) -> None:
    wav = write_tone(tmp_path / "s01" / "x.wav", 0.2)
    assert run("encode", wav, "-m", ckpt, "-o", tmp_path / "x.vqt", "-q")[0] == 0
    code, _, err, data = run("encode", wav, "-m", ckpt, "-o", "-", "-q")
    assert code == 0 and err == "" and data == (tmp_path / "x.vqt").read_bytes()
    code, out, _, _ = run("encode", wav, "-m", ckpt, "-o", "-", "-f", "txt")
    assert code == 0 and parse_txt(out).shape[1] == load_tokens(tmp_path / "x.vqt").header.n_frames

    assert run("decode", tmp_path / "x.vqt", "-m", ckpt, "-o", tmp_path / "x.wav", "-q")[0] == 0
    code, _, _, data = run("decode", tmp_path / "x.vqt", "-m", ckpt, "-o", "-", "-q")
    assert code == 0 and data == (tmp_path / "x.wav").read_bytes()
    assert data[:4] == b"RIFF"


def test_stdin_paths_and_mirrored_trees(tmp_path: Path, ckpt: Path) -> None:
    corpus = tmp_path / "corpus"
    files = [write_tone(corpus / rel, 0.1) for rel in ("s01/a.wav", "s01/day2/b.flac", "s02/c.ogg")]
    (corpus / "s01" / "notes.txt").write_text("not audio, not picked up from a folder")
    (corpus / "s01" / "._a.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (corpus / "s02" / "loop").symlink_to(corpus, target_is_directory=True)  # walked once, not forever
    loose = write_tone(tmp_path / "loose.wav", 0.1)

    code, _, err, _ = run("encode", corpus, loose, "-m", ckpt, "-o", tmp_path / "tok", "-q")
    assert code == 0, err
    found = sorted(str(p.relative_to(tmp_path / "tok")) for p in (tmp_path / "tok").rglob("*.vqt"))
    assert found == ["loose.vqt", "s01/a.vqt", "s01/day2/b.vqt", "s02/c.vqt"]

    paths = "".join(f"{p}\n" for p in files) + "\n"  # like `find corpus -name ...`; blank lines ignored
    code, _, err, _ = run("encode", "-", "-m", ckpt, "-o", tmp_path / "flat", input=paths)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.vqt", "b.vqt", "c.vqt"]

    assert load_tokens(tmp_path / "tok" / "s01" / "day2" / "b.vqt").header.speaker == "s01"
    code, _, err, _ = run("decode", tmp_path / "tok", "-m", ckpt, "-o", tmp_path / "wav", "-s", "s02", "-q")
    assert code == 0, err
    found = sorted(str(p.relative_to(tmp_path / "wav")) for p in (tmp_path / "wav").rglob("*.wav"))
    assert found == ["loose.wav", "s01/a.wav", "s01/day2/b.wav", "s02/c.wav"]
    assert no_temp_files(tmp_path)


def test_overwrite_semantics(tmp_path: Path, ckpt: Path) -> None:
    a, b = write_tone(tmp_path / "a.wav", 0.1), write_tone(tmp_path / "b.wav", 0.1, f0=250)
    stale = b"stale bytes"
    (tmp_path / "a.vqt").write_bytes(stale)
    code, _, err, _ = run("encode", a, b, "-m", ckpt, "-q")
    assert code == 1
    assert error_lines(err) == [  # names the input, then the reason
        f"error: {a}: {tmp_path / 'a.vqt'}: output already exists; pass --overwrite to replace it"
    ]
    assert (tmp_path / "a.vqt").read_bytes() == stale  # kept
    assert load_tokens(tmp_path / "b.vqt").header.num_samples == 1600  # the other input was still done
    code, _, err, _ = run("encode", a, b, "-m", ckpt, "--overwrite", "-q")
    assert code == 0 and err == ""
    assert load_tokens(tmp_path / "a.vqt").header.num_samples == 1600


def test_usage_errors_exit_2(tmp_path: Path, ckpt: Path) -> None:
    a, b = write_tone(tmp_path / "a.wav", 0.1), write_tone(tmp_path / "b.wav", 0.1)
    assert run("encode", a, b, "-m", ckpt, "-o", "-")[0] == 2  # one result only on stdout
    assert run("encode", a, "-m", ckpt, "-f", "mp3")[0] == 2
    assert run("encode", "-m", ckpt)[0] == 2  # INPUT is required (--model is not: tests/test_bundled.py)
    assert run("decode", a, "-m", ckpt, "-o", tmp_path / "x.mp3")[0] == 2
    assert run("encode", "-", "-m", ckpt, input="\n")[0] == 2  # stdin gave no paths
    assert run("convert", a, "-m", ckpt)[0] == 2  # --speaker is required
    assert not list(tmp_path.glob("*.vqt"))


def test_jobs_give_the_same_outputs(tmp_path: Path, ckpt: Path) -> None:
    for i in range(4):
        write_tone(tmp_path / "in" / f"f{i}.wav", 0.1 + 0.02 * i, f0=150 + 30 * i)
    for jobs in ("1", "3"):
        assert (
            run("encode", tmp_path / "in", "-m", ckpt, "-o", tmp_path / f"t{jobs}", "-j", jobs, "-q")[0] == 0
        )
        assert run("decode", tmp_path / f"t{jobs}", "-m", ckpt, "-s", "s01", "-o", tmp_path / f"w{jobs}",
                   "-j", jobs, "-q")[0] == 0  # fmt: skip
    for i in range(4):
        assert (tmp_path / "t1" / f"f{i}.vqt").read_bytes() == (tmp_path / "t3" / f"f{i}.vqt").read_bytes()
        assert (tmp_path / "w1" / f"f{i}.wav").read_bytes() == (tmp_path / "w3" / f"f{i}.wav").read_bytes()


# --------------------------------------------------------------------------------------------
# decode and convert


def test_decode_trims_exactly_and_resamples(tmp_path: Path, ckpt: Path) -> None:
    wav = write_tone(tmp_path / "s01_x.wav", seconds=0.2007)
    assert run("encode", wav, "-m", ckpt, "-q")[0] == 0
    num_samples = load_tokens(tmp_path / "s01_x.vqt").header.num_samples
    assert num_samples % 64 != 0
    code, _, err, _ = run("decode", tmp_path / "s01_x.vqt", "-m", ckpt, "-q")
    assert code == 0, err
    decoded = tmp_path / "s01_x.decoded.wav"  # default name: never the source's x.wav
    info = sf.info(decoded)
    assert (info.frames, info.samplerate, info.channels) == (num_samples, 16000, 1)
    code, _, err, _ = run("decode", tmp_path / "s01_x.vqt", "-m", ckpt, "-o", tmp_path / "r.flac",
                          "--sample-rate", "8000", "-q")  # fmt: skip
    assert code == 0, err
    info = sf.info(tmp_path / "r.flac")
    assert info.samplerate == 8000 and info.format == "FLAC"
    assert abs(info.frames - num_samples / 2) <= 1
    # the same tokens, speaker and seed give the same audio; another seed other audio
    a = sf.read(decoded)[0]
    assert run("decode", tmp_path / "s01_x.vqt", "-m", ckpt, "-o", tmp_path / "again.wav", "-q")[0] == 0
    assert (
        run("decode", tmp_path / "s01_x.vqt", "-m", ckpt, "-o", tmp_path / "s9.wav", "--seed", "9", "-q")[0]
        == 0
    )
    np.testing.assert_array_equal(sf.read(tmp_path / "again.wav")[0], a)
    assert not np.array_equal(sf.read(tmp_path / "s9.wav")[0], a)


def test_decode_with_a_new_speaker_equals_convert(tmp_path: Path, ckpt: Path) -> None:
    wav = write_tone(tmp_path / "s01" / "u.wav", seconds=0.3, sample_rate=22050)
    assert run("encode", wav, "-m", ckpt, "-q")[0] == 0
    tokens = tmp_path / "s01" / "u.vqt"
    code, _, err, _ = run("decode", tokens, "-m", ckpt, "--speaker", "s03", "--seed", "7", "-q")
    assert code == 0, err
    code, _, err, _ = run(
        "convert", wav, "-m", ckpt, "--speaker", "s03", "--seed", "7", "-o", tmp_path / "c.wav", "-q"
    )
    assert code == 0, err
    swapped = tmp_path / "s01" / "u.s03.wav"  # decode's default name with --speaker
    assert swapped.read_bytes() == (tmp_path / "c.wav").read_bytes()
    # the voice matters: the source speaker gives other audio
    assert run("decode", tokens, "-m", ckpt, "--seed", "7", "-o", tmp_path / "own.wav", "-q")[0] == 0
    assert not np.array_equal(sf.read(tmp_path / "own.wav")[0], sf.read(swapped)[0])
    # convert's default name matches decode's, so the second one refuses to overwrite it
    code, _, err, _ = run("convert", wav, "-m", ckpt, "--speaker", "s03", "--seed", "7")
    assert code == 1 and "already exists" in err


def test_decode_needs_a_speaker_it_knows(tmp_path: Path, ckpt: Path, codec: Codec) -> None:
    wav = write_tone(tmp_path / "anon.wav", 0.1)
    assert run("encode", wav, "-m", ckpt, "-q")[0] == 0
    code, _, err, _ = run("decode", tmp_path / "anon.vqt", "-m", ckpt, "-q")
    assert code == 1
    assert error_lines(err) == [
        f"error: {tmp_path / 'anon.vqt'}: the tokens do not say who spoke; pass --speaker NAME "
        f"(known: {', '.join(SPEAKERS)})"
    ]
    tokens = load_tokens(tmp_path / "anon.vqt")
    header = {**tokens.header.to_dict(), "speaker": "zed"}
    from vqspeech.tokens import TokenHeader

    save_tokens(tmp_path / "zed.vqt", TokenFile(TokenHeader.from_dict(header), tokens.codes))
    code, _, err, _ = run("decode", tmp_path / "zed.vqt", "-m", ckpt, "-q")
    assert code == 1 and "'zed' is not one this model knows" in err and "s01, s02, s03" in err
    for command in ("decode", "convert"):  # an unknown --speaker stops the command before any input
        code, _, err, _ = run(command, tmp_path / "anon.vqt", "-m", ckpt, "-s", "nobody")
        assert code == 1 and len(err.splitlines()) == 1
        assert "unknown speaker 'nobody'" in err and "s01, s02, s03" in err
    assert not list(tmp_path.glob("*.wav"))[1:]  # only the source


def test_tokens_of_another_model_are_refused_unless_forced(tmp_path: Path, ckpt: Path) -> None:
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    wav = write_tone(tmp_path / "s02" / "x.wav", 0.1)
    assert run("encode", wav, "-m", other, "-o", tmp_path / "x.vqt", "-q")[0] == 0
    code, _, err, _ = run("decode", tmp_path / "x.vqt", "-m", ckpt, "-o", tmp_path / "x.wav", "-q")
    assert code == 1 and len(error_lines(err)) == 1
    assert "made by model" in err and "--force" in err
    assert not (tmp_path / "x.wav").exists()
    code, _, err, _ = run("decode", tmp_path / "x.vqt", "-m", ckpt, "-o", tmp_path / "x.wav", "--force", "-q")
    assert code == 0, err
    assert sf.info(tmp_path / "x.wav").frames == 1600


def test_speakers_table_and_json(ckpt: Path) -> None:
    code, out, _, _ = run("speakers", "--model", ckpt)
    assert code == 0 and all(name in out for name in SPEAKERS) and "gender" in out
    code, out, _, _ = run("speakers", "--model", ckpt, "--json")
    rows = json.loads(out)
    assert [(r["id"], r["name"], r["gender"]) for r in rows] == [
        (0, "s01", "F"),
        (1, "s02", "M"),
        (2, "s03", "F"),
    ]


def test_info_on_token_files_and_several_targets(tmp_path: Path, ckpt: Path, codec: Codec) -> None:
    wav = write_tone(tmp_path / "s03_a.wav", 0.5)
    assert run("encode", wav, "-m", ckpt, "-q")[0] == 0
    vqt = tmp_path / "s03_a.vqt"
    code, out, _, _ = run("info", vqt)
    assert code == 0 and "s03" in out and codec.fingerprint in out and "0.500 s" in out
    code, out, _, _ = run("info", vqt, "--json")
    info = json.loads(out)
    assert info["kind"] == "tokens" and info["speaker"] == "s03" and info["n_frames"] == 125
    assert info["duration"] == 0.5 and info["bitrate"] == 125 * 5 / 0.5
    assert info["file_size"] == vqt.stat().st_size and info["file_bitrate"] == 8 * vqt.stat().st_size / 0.5
    code, out, err, _ = run("info", vqt, tmp_path / "missing.vqt", str(ckpt), "--json")
    assert code == 1 and len(error_lines(err)) == 1 and "missing.vqt" in err
    assert [d["kind"] for d in json.loads(out)] == ["tokens", "checkpoint"]


# --------------------------------------------------------------------------------------------
# a real pipeline


def test_real_subprocess_pipeline(tmp_path: Path, ckpt: Path) -> None:
    """``find ... | vqspeech encode - -o out/`` and ``vqspeech encode x -o - | cat > y``, for real."""
    for i in range(2):
        write_tone(tmp_path / "in" / f"s01_{i}.wav", 0.1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cli = f"{sys.executable} -m vqspeech_cli.main"
    script = (
        f"find in -name '*.wav' | sort | {cli} encode - -m {ckpt} -o out/ && "
        f"{cli} encode in/s01_0.wav -m {ckpt} -o - -q | cat > piped.vqt"
    )
    command = ["bash", "-o", "pipefail", "-c", script]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"" and b"encode: 2 done" in done.stderr  # not a TTY: a summary line, no bar
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s01_0.vqt", "s01_1.vqt"]
    assert (tmp_path / "piped.vqt").read_bytes() == (tmp_path / "out" / "s01_0.vqt").read_bytes()


def test_decoder_family_option(tmp_path: Path, ckpt: Path) -> None:
    spectro = [
        "model.spectrogram.channels=16",
        "model.spectrogram.dilations=[1, 2]",
        "model.spectrogram.n_fft=256",
    ]
    both = make_checkpoint(tmp_path / "both.pt", extra=["model.decoders=[wavenet, spectrogram]", *spectro])
    wav = write_tone(tmp_path / "s02_a.wav", 0.1)
    assert run("encode", wav, "-m", both, "-q")[0] == 0
    code, _, err, _ = run("decode", tmp_path / "s02_a.vqt", "-m", both, "--decoder", "spectrogram", "-q")
    assert code == 0, err
    assert sf.info(tmp_path / "s02_a.decoded.wav").frames == 1600
    code, _, err, _ = run("convert", wav, "-m", ckpt, "-s", "s01", "--decoder", "spectrogram")
    assert code == 1
    assert err.strip() == "error: this model has no spectrogram decoder; it decodes with: wavenet"


def test_outputs_get_the_mode_open_would_give_not_mkstemps_private_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    wanted = 0o666 & ~umask  # what open() makes: 0644 under the usual umask 022
    ckpt = make_checkpoint(tmp_path / "model.pt")
    wav = write_tone(tmp_path / SPEAKERS[0] / "x.wav", 0.2)  # the folder names a known speaker
    jsonl = ("-f", "jsonl")
    assert run("encode", wav, "-m", ckpt, "-o", tmp_path / "x.vqt", "-q")[0] == 0
    assert run("encode", wav, "-m", ckpt, "-o", tmp_path / "x.jsonl", *jsonl, "-q")[0] == 0
    assert run("decode", tmp_path / "x.vqt", "-m", ckpt, "-o", tmp_path / "x.wav", "-q")[0] == 0
    assert run("convert", wav, "-m", ckpt, "-s", SPEAKERS[1], "-o", tmp_path / "y.flac", "-q")[0] == 0
    for name in ("model.pt", "x.vqt", "x.jsonl", "x.wav", "y.flac"):
        assert (tmp_path / name).stat().st_mode & 0o777 == wanted, name
