"""Fuzzing the audio reader's headers (issue 18), like tests/test_tokens.py fuzzes token files.

Valid small WAVs get their RIFF/fmt/data fields rewritten (sample rate, channels, bit depth,
format tag, chunk sizes), bytes flipped, inserted, deleted or cut. :func:`load_audio` must
return finite mono float32 or raise :class:`AudioError`: nothing else, and never allocate far
beyond what the bytes justify (the header's promises are not believed). Seeded and fast.
"""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqspeech.audio import load_audio
from vqspeech.errors import AudioError

FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _wav(samples: int, rate: int, channels: int, subtype: str) -> bytes:
    rng = np.random.default_rng(samples + rate + channels)
    data = (0.3 * rng.standard_normal((samples, channels))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


VALID = [
    _wav(400, 16000, 1, "PCM_16"),
    _wav(300, 48000, 2, "PCM_24"),
    _wav(200, 8000, 1, "FLOAT"),
    _wav(100, 44100, 3, "PCM_U8"),
]
#: (offset, struct format) of the canonical 44-byte header's fields after "RIFF".
FIELDS = [(4, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"), (40, "<I")]
EXTREMES = [0, 1, 2, 3, 255, 4000, 3999, 768000, 768001, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1]


@st.composite
def mutated_wavs(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 3))):
        offset, fmt = draw(st.sampled_from(FIELDS))
        if offset + struct.calcsize(fmt) > len(data):
            continue
        limit = 2 ** (8 * struct.calcsize(fmt)) - 1
        value = draw(st.sampled_from(EXTREMES) | st.integers(0, limit))
        struct.pack_into(fmt, data, offset, min(value, limit))
    rnd = draw(st.randoms(use_true_random=False))
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = rnd.randrange(max(1, len(data)))
        if op == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[position:]
    return bytes(data)


def _check(data: bytes) -> int:
    """Load ``data``; only AudioError may escape; returns the peak traced allocation in bytes."""
    tracemalloc.start()
    try:
        try:
            audio = load_audio(io.BytesIO(data))
        except AudioError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert audio.dtype == np.float32 and audio.ndim == 1 and audio.shape[0] > 0
            assert np.isfinite(audio).all()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@FUZZ
@given(mutated_wavs())
def test_mutated_wav_headers_only_raise_audio_error_and_stay_small(data: bytes) -> None:
    # the largest valid input holds 600 frames; at the lowest rate accepted (4 kHz) each makes
    # 4 output samples, float32 at 16 kHz: far under 1 MiB. A header that is believed blows this.
    assert _check(data) < 1 << 20


@FUZZ
@given(st.binary(max_size=120))
def test_random_bytes_after_a_riff_header_only_raise_audio_error(tail: bytes) -> None:
    assert _check(b"RIFF" + struct.pack("<I", 36 + len(tail)) + b"WAVEfmt " + tail) < 1 << 20
