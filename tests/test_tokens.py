"""Token files (vqspeech.tokens): exact round trips, compactness, and hostile input.

Everything that reads bytes is fuzzed: random data and mutated valid files (with the checksum
recomputed, so the checks behind it are reached) may only ever raise TokenFormatError, and a
file that claims huge sizes must fail before anything near that size is allocated.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqspeech import tokens as tk
from vqspeech.bitpack import pack_bits, unpack_bits
from vqspeech.errors import TokenFormatError
from vqspeech.tokens import (
    FIXED_OVERHEAD,
    MAGIC,
    TokenFile,
    TokenHeader,
    dumps,
    format_txt,
    jsonl_record,
    load_tokens,
    loads,
    parse_txt,
    read_jsonl_record,
    read_npy,
    read_tokens,
    save_tokens,
    write_npy,
    write_tokens,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIZES = (2, 3, 255, 256, 257, 512, 1000, 1024, 65536)
LENGTHS = (0, 1, 7, 8, 9, 1000)


def make_tokens(
    codebook_size: int = 512,
    n_frames: int = 9,
    n_codebooks: int = 1,
    speaker: str | None = "p225",
    extra: dict[str, Any] | None = None,
    seed: int = 0,
) -> TokenFile:
    """Random codes that use the top code too (so every bit of the width is exercised)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, codebook_size, size=(n_codebooks, n_frames))
    if codes.size:
        codes.flat[-1] = codebook_size - 1
    header = TokenHeader(
        sample_rate=16000,
        hop_length=64,
        codebook_size=codebook_size,
        n_codebooks=n_codebooks,
        n_frames=n_frames,
        num_samples=max(0, n_frames * 64 - 17),
        speaker=speaker,
        model_fingerprint="0123456789abcdef",
        extra=extra or {},
    )
    return TokenFile(header, codes)


def split(data: bytes) -> tuple[int, dict[str, Any], bytes]:
    """(version, header dict, payload) of a valid file."""
    (header_len,) = struct.unpack_from("<I", data, 9)
    return data[8], json.loads(data[13 : 13 + header_len]), data[13 + header_len : -4]


def build(header: Any, payload: bytes, version: int = 1, header_text: str | None = None) -> bytes:
    """A file from parts, with a correct checksum (so validation behind the CRC is exercised)."""
    text = header_text if header_text is not None else json.dumps(header, separators=(",", ":"))
    raw = text.encode("utf-8", "surrogatepass")
    body = MAGIC + struct.pack("<BI", version, len(raw)) + raw + payload
    return body + struct.pack("<I", zlib.crc32(body))


def with_crc(data: bytes) -> bytes:
    """``data`` with its last 4 bytes replaced by the CRC32 of the rest."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def assert_only_format_errors(data: bytes) -> TokenFile | None:
    try:
        return loads(data)
    except TokenFormatError as exc:
        assert str(exc)  # every message says something
        return None


# --------------------------------------------------------------------------------------------
# Round trips and layout


@pytest.mark.parametrize("codebook_size", SIZES)
@pytest.mark.parametrize("n_frames", LENGTHS)
def test_round_trip_is_bit_exact(codebook_size: int, n_frames: int) -> None:
    speaker = None if n_frames % 2 else "p225"
    extra = {"speaker_vector": [3, -1, 127], "note": "ü ✓", "nested": {"a": [1.5, None, True]}}
    tokens = make_tokens(codebook_size, n_frames, speaker=speaker, extra=extra, seed=n_frames)
    data = dumps(tokens)
    back = loads(data)
    assert back == tokens
    assert back.codes.dtype == np.int64 and back.codes.shape == (1, n_frames)
    assert back.header.extra == extra and list(back.header.extra) == list(extra)
    assert dumps(back) == data  # canonical: reading and writing again changes nothing


@pytest.mark.parametrize("codebook_size", (2, 257, 65536))
def test_two_codebooks_round_trip(codebook_size: int) -> None:
    tokens = make_tokens(codebook_size, n_frames=13, n_codebooks=2, speaker=None)
    back = loads(dumps(tokens))
    assert back == tokens and back.codes.shape == (2, 13)


@pytest.mark.parametrize(
    ("codebook_size", "n_frames", "n_codebooks"), [(512, 1000, 1), (3, 7, 1), (1000, 9, 2)]
)
def test_file_size_is_header_plus_packed_codes(codebook_size: int, n_frames: int, n_codebooks: int) -> None:
    tokens = make_tokens(codebook_size, n_frames, n_codebooks)
    data = dumps(tokens)
    (header_len,) = struct.unpack_from("<I", data, 9)
    bits = (codebook_size - 1).bit_length()
    assert FIXED_OVERHEAD == 17
    assert len(data) == FIXED_OVERHEAD + header_len + -(-bits * n_codebooks * n_frames // 8)
    if codebook_size == 512:
        assert len(data) - header_len - FIXED_OVERHEAD == 1125  # 9 bits x 1000 codes


def test_layout_matches_the_documented_example() -> None:
    """The worked example in docs/token-format.md, byte for byte."""
    header = TokenHeader(16000, 160, 5, 1, 3, 480, None, "demo", vqspeech_version="0.1.0")
    data = dumps(TokenFile(header, np.array([[1, 4, 3]])))
    text = (
        b'{"sample_rate":16000,"hop_length":160,"codebook_size":5,"n_codebooks":1,"n_frames":3,'
        b'"num_samples":480,"speaker":null,"model_fingerprint":"demo","vqspeech_version":"0.1.0",'
        b'"coding":"packed"}'
    )
    body = b"VQSPTOK\x00" + b"\x01" + struct.pack("<I", len(text)) + text + b"\xe1\x00"
    assert data == body + struct.pack("<I", zlib.crc32(body))
    doc = Path(__file__).resolve().parents[1] / "docs" / "token-format.md"
    if doc.exists():
        assert data[-6:].hex(" ") in doc.read_text()


def test_reference_reader_in_the_docs_reads_our_files() -> None:
    """The plain-Python reader in docs/token-format.md agrees with vqspeech, so the doc stays true."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "token-format.md").read_text()
    code = doc.split("## Reference reader", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    reader = namespace["read_vqspeech_tokens"]
    for k, n, c in [(5, 3, 1), (2, 9, 1), (257, 100, 2), (65536, 17, 1), (3, 0, 1)]:
        tokens = make_tokens(k, n, c, extra={"future": [1, "x"]})
        header, codes = reader(dumps(tokens))
        assert header == tokens.header.to_dict()
        assert codes == tokens.codes.tolist()
    with pytest.raises(ValueError):
        reader(dumps(make_tokens())[:-1])


def test_stream_io_and_unseekable_streams() -> None:
    tokens = make_tokens(1024, 100)
    buffer = io.BytesIO()
    write_tokens(buffer, tokens)
    data = buffer.getvalue()

    class Pipe(io.RawIOBase):  # no seek, no tell, short reads
        def __init__(self, payload: bytes) -> None:
            self.rest = payload

        def readable(self) -> bool:
            return True

        def readinto(self, target: Any) -> int:
            n = min(len(target), 7, len(self.rest))
            target[:n], self.rest = self.rest[:n], self.rest[n:]
            return n

    assert read_tokens(Pipe(data)) == tokens  # type: ignore[arg-type]
    with pytest.raises(TokenFormatError, match="after its checksum"):
        read_tokens(Pipe(data + b"x"))  # type: ignore[arg-type]
    with pytest.raises(TokenFormatError, match="truncated"):
        read_tokens(Pipe(data[:-1]))  # type: ignore[arg-type]
    with pytest.raises(TokenFormatError, match="empty"):
        read_tokens(Pipe(b""))  # type: ignore[arg-type]
    with pytest.raises(TokenFormatError, match="max_bytes"):
        read_tokens(Pipe(data), max_bytes=len(data) - 1)  # type: ignore[arg-type]
    assert loads(data, max_bytes=len(data)) == tokens
    with pytest.raises(TokenFormatError, match="max_bytes"):
        loads(data, max_bytes=len(data) - 1)


# --------------------------------------------------------------------------------------------
# Bit packing


def reference_pack(codes: list[int], bits: int) -> bytes:
    """The documented bit order, the slow obvious way: code i at bit offset i * bits."""
    value = sum(code << (i * bits) for i, code in enumerate(codes))
    return value.to_bytes((len(codes) * bits + 7) // 8, "little")


@FUZZ
@given(
    st.integers(1, 32).flatmap(
        lambda b: st.tuples(st.just(b), st.lists(st.integers(0, 2**b - 1), max_size=70))
    )
)
def test_pack_unpack_round_trip(case: tuple[int, list[int]]) -> None:
    bits, codes = case
    data = pack_bits(np.array(codes, dtype=np.int64), bits)
    assert data == reference_pack(codes, bits)
    assert unpack_bits(data, bits, len(codes)).tolist() == codes


def test_pack_bits_known_values_and_errors() -> None:
    assert pack_bits(np.array([1, 4, 3]), 3) == b"\xe1\x00"
    assert pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1) == b"\x0d\x01"
    big = np.random.default_rng(0).integers(0, 512, 3 * (1 << 20) + 5)  # several blocks, ragged end
    assert np.array_equal(unpack_bits(pack_bits(big, 9), 9, big.size), big)
    with pytest.raises(TokenFormatError, match="outside"):
        pack_bits(np.array([8]), 3)
    with pytest.raises(TokenFormatError, match="outside"):
        pack_bits(np.array([-1]), 3)
    with pytest.raises(TokenFormatError, match="need"):
        unpack_bits(b"\x00", 9, 1)
    with pytest.raises(ValueError, match="bits"):
        pack_bits(np.array([1]), 0)


# --------------------------------------------------------------------------------------------
# Damaged and foreign input


def test_every_single_byte_change_is_detected() -> None:
    data = dumps(make_tokens(257, 20))
    for position in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[position] ^= mask
            with pytest.raises(TokenFormatError):
                loads(bytes(damaged))


def test_every_prefix_is_truncated() -> None:
    data = dumps(make_tokens(3, 9))
    with pytest.raises(TokenFormatError, match="empty"):
        loads(b"")
    for end in range(1, len(data)):
        with pytest.raises(TokenFormatError, match="truncated"):
            loads(data[:end])


def test_flipped_payload_says_corrupted() -> None:
    data = bytearray(dumps(make_tokens(1024, 50)))
    data[-10] ^= 0x10
    with pytest.raises(TokenFormatError, match="corrupted: checksum mismatch"):
        loads(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00",
        b"\x89PNG\r\n\x1a\n" + bytes(30),
        bytes(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8)),
        b"\x93NUMPY\x01\x00",
        b"x",
    ],
)
def test_foreign_files_are_named(data: bytes) -> None:
    with pytest.raises(TokenFormatError, match="is not a vqspeech token file"):
        loads(data)


def test_newer_version_and_unknown_coding_say_upgrade() -> None:
    _, header, payload = split(dumps(make_tokens()))
    with pytest.raises(TokenFormatError, match=r"newer vqspeech \(format 2.*upgrade"):
        loads(build(header, payload, version=2))
    with pytest.raises(TokenFormatError, match="does not exist"):
        loads(build(header, payload, version=0))
    future = {**header, "coding": "zstd"}
    with pytest.raises(TokenFormatError, match=r"'zstd'.*upgrade"):
        loads(build(future, b"\x07\x01"))


def test_future_optional_fields_round_trip() -> None:
    """A newer writer's extra keys are kept, in order, and written back unchanged."""
    _, header, payload = split(dumps(make_tokens()))
    header["speaker_vector"] = "AAEC/w=="
    header["alignment"] = {"words": [["hello", 0, 3]]}
    header["extra"] = None  # even a key that looks like the dataclass field is kept
    data = build(header, payload)
    back = loads(data)
    assert back.header.extra == {
        "speaker_vector": "AAEC/w==",
        "alignment": {"words": [["hello", 0, 3]]},
        "extra": None,
    }
    assert dumps(back) == data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"n_frames": 10**12}, "truncated"),
        ({"n_frames": -1}, "out of range"),
        ({"n_frames": 9.0}, "must be an integer"),
        ({"n_frames": True}, "must be an integer"),
        ({"n_frames": 2**64}, "out of range"),
        ({"codebook_size": 1}, "out of range"),
        ({"codebook_size": 2**40}, "out of range"),
        ({"n_codebooks": 0}, "out of range"),
        ({"hop_length": 0}, "out of range"),
        ({"sample_rate": "16000"}, "must be an integer"),
        ({"speaker": 3}, "speaker must be"),
        ({"model_fingerprint": None}, "must be a string"),
        ({"n_frames": 8}, "after its checksum"),
        ({"codebook_size": 300}, "is >= codebook_size 300"),
    ],
)
def test_bad_header_values_behind_a_valid_checksum(edit: dict[str, Any], message: str) -> None:
    tokens = make_tokens(512, 9)  # top code 511 is present
    _, header, payload = split(dumps(tokens))
    with pytest.raises(TokenFormatError, match=message):
        loads(build({**header, **edit}, payload))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "JSON object"),
        ('{"a": NaN}', "not valid UTF-8 JSON"),
        ("{" * 5000, "not valid UTF-8 JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid UTF-8 JSON"),
        ('{"n_frames": ' + "9" * 5000 + "}", "not valid UTF-8 JSON"),
        ("\udcff{}", "not valid UTF-8 JSON"),
        ("{}", "lacks required field"),
    ],
)
def test_bad_header_json(text: str, message: str) -> None:
    with pytest.raises(TokenFormatError, match=message):
        loads(build(None, b"", header_text=text))


def test_duplicate_keys_and_dirty_padding_are_refused() -> None:
    tokens = make_tokens(5, 3)  # 9 bits of payload in 2 bytes: 7 padding bits
    _, header, payload = split(dumps(tokens))
    text = json.dumps(header, separators=(",", ":"))
    with pytest.raises(TokenFormatError, match="duplicate"):
        loads(build(None, payload, header_text=text[:-1] + ',"speaker":"x"}'))
    with pytest.raises(TokenFormatError, match="padding"):
        loads(build(header, payload[:-1] + bytes([payload[-1] | 0x80])))


def test_header_length_claims_are_checked_first() -> None:
    for claimed in (2**32 - 1, 17 << 20, 10_000):
        data = MAGIC + struct.pack("<BI", 1, claimed) + b"{}"
        with pytest.raises(TokenFormatError, match=r"not in|truncated"):
            loads(data + b"\x00" * 4)
    with pytest.raises(TokenFormatError, match="not in"):
        loads(MAGIC + struct.pack("<BI", 1, 0) + b"\x00" * 4)


# --------------------------------------------------------------------------------------------
# Fuzzing: only TokenFormatError, and no allocation beyond what the bytes justify

VALID = [dumps(make_tokens(k, n, c, seed=k + n)) for k, n, c in [(2, 9, 1), (257, 30, 1), (1000, 5, 2)]]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, -1, 10**12, 2**31, 2**32, 2**63, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


header_values = (
    st.sampled_from([0, 1, 2, -1, 7, 9, 256, 10**12, 2**31, 2**32, 2**63, 2**64])
    | st.integers()
    | json_values
)


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A valid file with a header edit (values, deleted or new keys, a changed payload) and/or
    byte-level damage (flips, insertions, deletions, truncation), the CRC often recomputed."""
    data = draw(st.sampled_from(VALID))
    if draw(st.booleans()):
        _, header, payload = split(data)
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from([*header, "extra_key"]))
            if draw(st.integers(0, 4)):
                header[key] = draw(header_values)
            else:
                header.pop(key, None)
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))] + draw(st.binary(max_size=4))
        data = build(header, payload)
    damaged = bytearray(data)
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = rnd.randrange(max(1, len(damaged)))  # uniform: not drawn to the magic at 0
        if op == "flip" and damaged:
            damaged[position] ^= draw(st.integers(1, 255))
        elif op == "insert":
            damaged[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del damaged[position : position + draw(st.integers(1, 8))]
        elif op == "truncate":
            del damaged[position:]
    data = bytes(damaged)
    if draw(st.booleans()) and len(data) >= 4:
        data = with_crc(data)  # reach the checks behind the checksum
    return data


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_token_format_error(data: bytes) -> None:
    assert assert_only_format_errors(data) is None or data.startswith(MAGIC)
    assert assert_only_format_errors(MAGIC + data) is None or len(data) > 13


@FUZZ
@given(mutated_files())
def test_mutated_files_only_raise_token_format_error(data: bytes) -> None:
    tokens = assert_only_format_errors(data)
    if tokens is not None:  # a mutation can stay valid: then it survives a rewrite unchanged
        # (not byte-equal: the JSON may spell a character as an escape, e.g. "\u007f", that the
        # writer spells raw; the header it means is the same)
        rewritten = dumps(tokens)
        assert loads(rewritten) == tokens and dumps(loads(rewritten)) == rewritten


def peak_allocation(data: bytes) -> int:
    tracemalloc.start()
    try:
        assert_only_format_errors(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


huge_edits = st.fixed_dictionaries(
    {},
    optional={
        "n_frames": st.sampled_from([10**6, 10**9, 10**12, 2**62, 2**63 - 1]),
        "n_codebooks": st.integers(1, 4096),
        "codebook_size": st.sampled_from([2, 2**16, 2**31, 2**32]),
        "num_samples": st.sampled_from([0, 2**63 - 1]),
    },
)


@settings(max_examples=60, deadline=None)
@given(huge_edits, st.binary(max_size=64))
def test_huge_claims_fail_without_allocating(edit: dict[str, int], payload: bytes) -> None:
    _, header, _ = split(VALID[1])
    data = build({**header, **edit}, payload)  # valid checksum: the size check must catch it
    assert peak_allocation(data) < 4 * len(data) + 64 * 1024


@settings(max_examples=60, deadline=None)
@given(mutated_files())
def test_mutated_files_stay_within_memory_bounds(data: bytes) -> None:
    # Decoded codes are int64, so a valid file may need 64 bytes per payload byte (1-bit codes).
    assert peak_allocation(data) < 80 * len(data) + 64 * 1024


def test_huge_claim_on_an_unseekable_stream_reads_only_what_is_there() -> None:
    _, header, payload = split(VALID[0])
    data = build({**header, "n_frames": 10**12}, payload)
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=16)  # type: ignore[arg-type]
    stream.seekable = lambda: False  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        with pytest.raises(TokenFormatError, match="truncated"):
            read_tokens(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * tk._READ_CHUNK + 64 * 1024


# --------------------------------------------------------------------------------------------
# Construction and writing validate too


def test_header_and_file_validation() -> None:
    base = make_tokens(8, 4).header
    fields = {name: getattr(base, name) for name in tk._FIELD_ORDER}
    for bad in ({"codebook_size": 1}, {"n_frames": -1}, {"hop_length": 0}, {"sample_rate": True}):
        with pytest.raises(TokenFormatError):
            TokenHeader(**{**fields, **bad})
    with pytest.raises(TokenFormatError, match="repeats"):
        TokenHeader(**fields, extra={"speaker": "x"})
    with pytest.raises(TokenFormatError, match="round-trip"):
        TokenHeader(**fields, extra={"v": (1, 2)})
    with pytest.raises(TokenFormatError, match="plain JSON"):
        TokenHeader(**fields, extra={"v": float("nan")})
    with pytest.raises(TokenFormatError, match="shape"):
        TokenFile(base, np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(TokenFormatError, match="outside"):
        TokenFile(base, np.array([[0, 1, 2, 8]]))
    with pytest.raises(TokenFormatError, match="integers"):
        TokenFile(base, np.zeros((1, 4)))  # type: ignore[arg-type]
    tokens = make_tokens(8, 4)
    tokens.codes[0, 0] = 8  # changed behind the TokenFile's back: the writer checks again
    with pytest.raises(TokenFormatError, match="outside"):
        dumps(tokens)
    arithmetic = TokenFile(
        TokenHeader(**{**fields, "coding": "arithmetic"}), np.zeros((1, 4), dtype=np.int64)
    )
    with pytest.raises(TokenFormatError, match="cannot write coding"):
        dumps(arithmetic)


# --------------------------------------------------------------------------------------------
# Files on disk


def test_save_and_load(tmp_path: Path) -> None:
    tokens = make_tokens(1024, 100)
    path = tmp_path / "utt.vqt"
    save_tokens(path, tokens)
    assert load_tokens(path) == tokens
    assert os.listdir(tmp_path) == ["utt.vqt"]
    save_tokens(str(path), make_tokens(2, 3))  # overwrite in place
    assert load_tokens(path) == make_tokens(2, 3)
    with pytest.raises(TokenFormatError, match="cannot read"):
        load_tokens(tmp_path / "missing.vqt")
    with pytest.raises(TokenFormatError, match=r"utt\.vqt is truncated"):
        path.write_bytes(path.read_bytes()[:-1])
        load_tokens(path)


def test_failed_save_keeps_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "utt.vqt"
    save_tokens(path, make_tokens(512, 10))
    before = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tk.os, "replace", broken_replace)
    with pytest.raises(TokenFormatError, match=r"cannot write .*No space left"):
        save_tokens(path, make_tokens(512, 20))
    monkeypatch.undo()
    tokens = make_tokens(8, 4)
    tokens.codes[0, 0] = 99  # invalid: fails before the disk is touched
    with pytest.raises(TokenFormatError):
        save_tokens(path, tokens)
    with pytest.raises(TokenFormatError, match="cannot write"):
        save_tokens(tmp_path / "no-such-dir" / "x.vqt", make_tokens())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["utt.vqt"]


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, vqspeech.tokens; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Pipeline formats


@pytest.mark.parametrize(
    ("codebook_size", "n_codebooks", "dtype"), [(512, 1, "<i2"), (32768, 2, "<i2"), (65536, 1, "<i4")]
)
def test_npy_round_trip(codebook_size: int, n_codebooks: int, dtype: str) -> None:
    codes = make_tokens(codebook_size, 11, n_codebooks).codes
    buffer = io.BytesIO()
    write_npy(buffer, codes, codebook_size)
    raw = np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False)
    assert raw.dtype == np.dtype(dtype)
    assert raw.shape == ((11,) if n_codebooks == 1 else (n_codebooks, 11))
    back = read_npy(io.BytesIO(buffer.getvalue()))
    assert back.dtype == np.int64 and np.array_equal(back, codes)


def test_npy_refuses_pickles_floats_and_lies() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(TokenFormatError, match="pickled"):
        read_npy(io.BytesIO(buffer.getvalue()))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    with pytest.raises(TokenFormatError, match="not integer"):
        read_npy(io.BytesIO(buffer.getvalue()))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 2, 2), dtype=np.int16))
    with pytest.raises(TokenFormatError, match="shape"):
        read_npy(io.BytesIO(buffer.getvalue()))
    buffer = io.BytesIO()
    np.save(buffer, np.array([-1, 2], dtype=np.int16))
    with pytest.raises(TokenFormatError, match=">= 0"):
        read_npy(io.BytesIO(buffer.getvalue()))
    buffer = io.BytesIO()
    np.save(buffer, np.arange(10, dtype=np.int16))
    data = buffer.getvalue()
    with pytest.raises(TokenFormatError, match="truncated"):
        read_npy(io.BytesIO(data[:-1]))
    huge = data.replace(b"(10,), }" + b" " * 8, b"(9999999999,), }")  # same header length
    assert len(huge) == len(data) and huge != data
    tracemalloc.start()
    try:
        with pytest.raises(TokenFormatError):
            read_npy(io.BytesIO(huge))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    for junk in (b"", b"RIFF....", b"\x93NUMPY\x01\x00\xff\xff"):
        with pytest.raises(TokenFormatError):
            read_npy(io.BytesIO(junk))
    with pytest.raises(TokenFormatError, match="int32"):
        write_npy(io.BytesIO(), np.array([1]), codebook_size=2**32)
    with pytest.raises(TokenFormatError, match="outside"):
        write_npy(io.BytesIO(), np.array([600]), codebook_size=512)


@FUZZ
@given(st.binary(max_size=120))
def test_npy_fuzz_only_raises_token_format_error(tail: bytes) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.int16).reshape(2, 3))
    for data in (tail, buffer.getvalue()[: len(tail)] + tail, buffer.getvalue()[:10] + tail):
        with contextlib.suppress(TokenFormatError):
            read_npy(io.BytesIO(data))


@pytest.mark.parametrize("n_codebooks", (1, 2))
@pytest.mark.parametrize("n_frames", (0, 1, 9))
def test_txt_round_trip(n_codebooks: int, n_frames: int) -> None:
    codes = make_tokens(1000, n_frames, n_codebooks).codes
    text = format_txt(codes)
    assert text.count("\n") == n_codebooks
    assert np.array_equal(parse_txt(text), codes)
    assert np.array_equal(parse_txt(text.replace("\n", "\r\n")), codes)


def test_txt_errors_and_1d_input() -> None:
    assert format_txt(np.array([3, 1, 4])) == "3 1 4\n"
    for bad, message in (
        ("", "empty"),
        ("1 2\n3\n", "different lengths"),
        ("1 x\n", "integers"),
        ("-1\n", ">= 0"),
    ):
        with pytest.raises(TokenFormatError, match=message):
            parse_txt(bad)
    with pytest.raises(TokenFormatError, match="64 bits"):
        parse_txt(str(2**70))


@pytest.mark.parametrize("n_codebooks", (1, 2))
def test_jsonl_round_trip(n_codebooks: int) -> None:
    tokens = make_tokens(512, 7, n_codebooks, extra={"speaker_vector": [1, -2]})
    line = jsonl_record("wav/p225_001.wav", tokens)
    assert "\n" not in line
    record = json.loads(line)
    assert record["path"] == "wav/p225_001.wav" and record["codebook_size"] == 512
    assert record["codes"] == (tokens.codes[0].tolist() if n_codebooks == 1 else tokens.codes.tolist())
    assert read_jsonl_record(line) == ("wav/p225_001.wav", tokens)


def test_jsonl_errors() -> None:
    tokens = make_tokens(512, 3)
    record = json.loads(jsonl_record("a.wav", tokens))
    for edit, message in (
        ({"codes": [1, 2.5, 3]}, "list of integers"),
        ({"codes": [1, 2]}, "shape"),
        ({"codes": [1, 2, 999]}, "outside"),
        ({"path": 3}, '"path"'),
        ({"n_frames": -3}, "out of range"),
    ):
        with pytest.raises(TokenFormatError, match=message):
            read_jsonl_record(json.dumps({**record, **edit}))
    with pytest.raises(TokenFormatError, match="not valid JSON"):
        read_jsonl_record("{")
    clash = make_tokens(512, 3, extra={"codes": 1})
    with pytest.raises(TokenFormatError, match="clash"):
        jsonl_record("a.wav", clash)


# --------------------------------------------------------------------------------------------
# Entropy-coded files (coding "arithmetic"): the container, without the prior


def make_coded(payload: bytes = b"\x9a\x01\xff", n_frames: int = 9, **extra: Any) -> tk.CodedTokens:
    tokens = make_tokens(512, n_frames)
    fields = {name: getattr(tokens.header, name) for name in tk._FIELD_ORDER}
    keys = {
        tk.PRIOR_FINGERPRINT_KEY: "feedfacefeedface",
        tk.PRIOR_SPEAKER_KEY: -1,
        tk.CODES_CRC32_KEY: tk.codes_crc32(tokens.codes, 512),
        **extra,
    }
    return tk.CodedTokens(TokenHeader(**{**fields, "coding": "arithmetic"}, extra=keys), payload)


@pytest.mark.parametrize("payload", [b"", b"\x01", bytes(range(200))])
def test_coded_files_round_trip_as_opaque_payloads(payload: bytes) -> None:
    coded = make_coded(payload, n_frames=60)
    data = dumps(coded)
    assert len(data) == FIXED_OVERHEAD + struct.unpack_from("<I", data, 9)[0] + len(payload)
    back = tk.loads_container(data)
    assert back == coded and isinstance(back, tk.CodedTokens)
    assert (back.prior_fingerprint, back.prior_speaker, back.code_bits) == (
        "feedfacefeedface",
        -1,
        8 * len(payload),
    )
    assert back.header.coding == "arithmetic" and dumps(back) == data
    assert split(data)[1]["coding"] == "arithmetic"  # the flag is in the header on disk
    # read_tokens promises codes: it refuses, naming the prior the codes need
    with pytest.raises(TokenFormatError, match=r"entropy-coded with prior feedfacefeedface.*--prior"):
        loads(data)
    # a packed file reads the same through either function
    plain = dumps(make_tokens())
    assert tk.loads_container(plain) == loads(plain)


def test_coded_files_are_checked_like_packed_ones(tmp_path: Path) -> None:
    data = dumps(make_coded(bytes(40)))
    with pytest.raises(TokenFormatError, match="checksum mismatch"):
        tk.loads_container(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])  # a payload bit flipped
    for cut in (1, 4, 5, 44):  # truncation loses the CRC or shifts it: never a silent success
        with pytest.raises(TokenFormatError, match=r"truncated|checksum"):
            tk.loads_container(data[:-cut])
    _, header, _ = split(data)
    for key in (tk.PRIOR_FINGERPRINT_KEY, tk.PRIOR_SPEAKER_KEY, tk.CODES_CRC32_KEY):
        broken = {k: v for k, v in header.items() if k != key}
        with pytest.raises(TokenFormatError, match=f"needs \\['{key}'\\]"):
            tk.loads_container(build(broken, b"\x01"))
    for key, bad in ((tk.PRIOR_SPEAKER_KEY, -2), (tk.PRIOR_SPEAKER_KEY, "0"), (tk.CODES_CRC32_KEY, 2**32)):
        with pytest.raises(TokenFormatError, match=key):
            tk.loads_container(build({**header, key: bad}, b"\x01"))
    with pytest.raises(TokenFormatError, match=tk.PRIOR_FINGERPRINT_KEY):
        tk.loads_container(build({**header, tk.PRIOR_FINGERPRINT_KEY: 7}, b"\x01"))
    # the payload is bounded by what the codes could need: 32 bits each + 64 bytes
    limit = make_coded().header.max_payload_bytes
    assert limit == 9 * 4 + 64
    assert tk.loads_container(build(header, bytes(limit))).payload == bytes(limit)  # type: ignore[union-attr]
    with pytest.raises(TokenFormatError, match="more than 9 frames can take"):
        tk.loads_container(build(header, bytes(limit + 1)))
    with pytest.raises(TokenFormatError, match="limit"):
        make_coded(bytes(limit + 1))
    save_tokens(tmp_path / "c.vqt", make_coded())
    assert tk.load_container(tmp_path / "c.vqt") == make_coded()
    with pytest.raises(TokenFormatError, match="entropy-coded"):
        load_tokens(tmp_path / "c.vqt")


def test_coded_files_on_unseekable_streams() -> None:
    data = dumps(make_coded(bytes(range(50))))
    _, header, _ = split(data)
    limit = make_coded().header.max_payload_bytes

    def pipe(payload: bytes) -> Any:
        stream = io.BufferedReader(io.BytesIO(payload), buffer_size=16)  # type: ignore[arg-type]
        stream.seekable = lambda: False  # type: ignore[method-assign]
        return stream

    assert tk.read_container(pipe(data)) == make_coded(bytes(range(50)))
    with pytest.raises(TokenFormatError, match="more than 9 frames can take"):
        tk.read_container(pipe(build(header, bytes(limit + 1)) + bytes(10**6)))
    with pytest.raises(TokenFormatError, match="truncated"):
        tk.read_container(pipe(data[: 13 + struct.unpack_from("<I", data, 9)[0] + 2]))


def test_codes_crc32_is_the_crc_of_the_packed_payload() -> None:
    tokens = make_tokens(1000, 77)
    _, _, payload = split(dumps(tokens))
    assert tk.codes_crc32(tokens.codes, 1000) == zlib.crc32(payload)


@FUZZ
@given(st.binary(max_size=120), st.data())
def test_mutated_coded_files_only_raise_token_format_error(payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(dumps(make_coded(payload)))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        tk.loads_container(with_crc(bytes(raw)))
    except TokenFormatError as exc:
        assert str(exc)


def test_import_does_not_pull_in_the_entropy_coder() -> None:
    code = "import sys, vqspeech.tokens; print('constriction' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
