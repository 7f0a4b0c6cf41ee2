"""Entropy coding with a prior (vqspeech.entropy, issue 8): exact round trips, a size close to the
ideal ``-sum log2 p``, fixed bytes for fixed inputs, and refusals (no prior, another prior, a
damaged payload). Toy integer priors stand in for the learned one (which has the same protocol);
one test uses a tiny real :class:`~vqspeech.nn.prior_int.IntegerCodePrior`.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from vqspeech.entropy import (
    BigramSource,
    PmfStepper,
    decode_codes,
    decode_tokens,
    encode_codes,
    encode_tokens,
    ideal_bits,
)
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError, TokenFormatError
from vqspeech.tokens import CodedTokens, TokenFile, TokenHeader, dumps, loads_container

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_walk(n: int, k: int, seed: int) -> NDArray[np.int64]:
    """Structured codes: a random walk on the codebook (what a bigram model predicts well)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.integers(-2, 3, n)) % k


def fitted(k: int = 64, seed: int = 0) -> BigramSource:
    return BigramSource.fit([random_walk(5000, k, seed + i) for i in range(4)], k, alpha=0.01)


class HistorySource:
    """A toy prior whose rows depend on the position, the last two codes and the speaker, with a
    huge dynamic range (weights 1 .. 2^44): rows from a hash, so both paths agree exactly."""

    def __init__(self, k: int, fingerprint: str = "0123456789abcdef") -> None:
        self.codebook_size, self.fingerprint = k, fingerprint

    def row(self, t: int, history: tuple[int, int], speaker: int) -> NDArray[np.int64]:
        seed = zlib.crc32(struct.pack("<4q", t, *history, speaker))
        rng = np.random.default_rng(seed)
        return (1 << rng.integers(0, 45, self.codebook_size)).astype(np.int64)

    def weights(self, codes: NDArray[np.int64], speaker: int) -> NDArray[np.int64]:
        padded = [-1, -1, *(int(c) for c in codes)]
        rows = [self.row(t, (padded[t], padded[t + 1]), speaker) for t in range(len(codes))]
        return np.array(rows, dtype=np.int64).reshape(len(codes), self.codebook_size)

    def stepper(self, speaker: int) -> PmfStepper:
        source, state = self, {"t": 0, "h": (-1, -1)}

        class Stepper:
            def weights(self) -> NDArray[np.int64]:
                return source.row(state["t"], state["h"], speaker)  # type: ignore[arg-type]

            def push(self, code: int) -> None:
                state["t"] = state["t"] + 1  # type: ignore[operator]
                state["h"] = (state["h"][1], code)  # type: ignore[index]

        return Stepper()


def make_tokens(codes: NDArray[Any], k: int, speaker: str | None = "s01") -> TokenFile:
    codes = np.asarray(codes, dtype=np.int64).reshape(1, -1)
    header = TokenHeader(16000, 64, k, 1, codes.shape[1], codes.shape[1] * 64 - 5, speaker, "model-fp")
    return TokenFile(header, codes)


# --------------------------------------------------------------------------------------------
# Codes


@pytest.mark.parametrize("k", [2, 3, 64, 512])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_random_codes_round_trip_exactly(k: int, n: int) -> None:
    rng = np.random.default_rng(k * 1000 + n)
    codes = rng.integers(0, k, n)
    source = BigramSource(rng.integers(1, 1 << 20, size=(k + 1, k)))
    data = encode_codes(codes, source, 0)
    np.testing.assert_array_equal(decode_codes(data, n, source, 0), codes)
    assert (data == b"") == (n == 0)


def test_structured_codes_round_trip_and_cost_close_to_the_ideal() -> None:
    source = fitted()
    codes = random_walk(5000, 64, seed=99)  # held out from the fit
    data = encode_codes(codes, source, 0)
    np.testing.assert_array_equal(decode_codes(data, codes.size, source, 0), codes)
    ideal = ideal_bits(codes, source, 0)
    assert ideal < 0.5 * 6 * codes.size  # the prior knows the walk: well under log2(64) = 6 bits
    assert ideal <= 8 * len(data) <= 1.005 * ideal + 64  # the coder's overhead: < 0.5% + 8 bytes


@FUZZ
@given(st.lists(st.integers(0, 9), max_size=60), st.integers(-1, 3))
def test_history_dependent_rows_with_a_huge_range_round_trip(codes: list[int], speaker: int) -> None:
    source = HistorySource(10)
    array = np.array(codes, dtype=np.int64)
    data = encode_codes(array, source, speaker)
    np.testing.assert_array_equal(decode_codes(data, len(codes), source, speaker), array)
    assert 8 * len(data) <= 1.02 * ideal_bits(array, source, speaker) + 64


def test_unlikely_codes_still_code() -> None:
    """Codes the prior gives weight 1 out of ~2^50 (below the coder's 2^-24 floor) still code."""
    k = 32
    table = np.ones((k + 1, k), dtype=np.int64)
    table[:, 0] = 1 << 50
    source = BigramSource(table)
    codes = np.array([5, 0, 31, 31, 0, 0, 7] * 20)
    data = encode_codes(codes, source, 0)
    np.testing.assert_array_equal(decode_codes(data, codes.size, source, 0), codes)
    assert 8 * len(data) <= 25 * np.count_nonzero(codes) + 64  # at most ~24 bits per unlikely code


#: Size and hash of the payload below: the same on every machine and run.
PINNED = (168, "b6e60b77b9d8af11")  # constriction 0.5.0 range coder, perfect=False models


def test_the_same_input_gives_the_same_bytes() -> None:
    """A fixed prior and fixed codes give fixed bytes, pinned here: a change in the quantisation
    (ours or constriction's) would make old files undecodable, and must fail this test."""
    source = BigramSource((np.arange(17 * 16).reshape(17, 16) % 13 + 1) * 1000)
    codes = np.arange(300) * 7 % 16
    data = encode_codes(codes, source, 0)
    assert encode_codes(codes, source, 0) == data
    assert source.fingerprint == BigramSource(source.table.copy()).fingerprint
    assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == PINNED


def test_decoding_with_per_step_models_matches_the_vectorised_encoder() -> None:
    """The encoder's 2-D model family and the decoder's per-step models quantise identically."""
    import constriction

    rng = np.random.default_rng(3)
    rows = rng.integers(1, 1 << 40, size=(200, 300)).astype(np.float64)
    codes = rng.integers(0, 300, 200).astype(np.int32)
    one = constriction.stream.queue.RangeEncoder()
    one.encode(codes, constriction.stream.model.Categorical(perfect=False), rows)
    two = constriction.stream.queue.RangeEncoder()
    for code, row in zip(codes, rows, strict=True):
        two.encode(int(code), constriction.stream.model.Categorical(row, lazy=True, perfect=False))
    np.testing.assert_array_equal(one.get_compressed(), two.get_compressed())


def test_bad_rows_and_codes_are_refused() -> None:
    source = BigramSource(np.ones((5, 4), dtype=np.int64))
    with pytest.raises(ConfigError, match="outside"):
        encode_codes(np.array([0, 4]), source, 0)

    class Zero(BigramSource):
        def weights(self, codes: NDArray[np.int64], speaker: int) -> NDArray[np.int64]:
            return np.zeros((len(codes), 4), dtype=np.int64)

    with pytest.raises(CheckpointError, match="below 1"):
        encode_codes(np.array([0, 1]), Zero(np.ones((5, 4), dtype=np.int64)), 0)
    with pytest.raises(ConfigError):
        BigramSource(np.zeros((5, 4), dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Token files


def test_token_files_round_trip_through_the_prior() -> None:
    source = fitted(64)
    tokens = make_tokens(random_walk(777, 64, seed=5), 64)
    coded = encode_tokens(tokens, source, 2)
    h = coded.header
    assert h.coding == "arithmetic"
    assert (coded.prior_fingerprint, coded.prior_speaker) == (source.fingerprint, 2)
    assert (h.n_frames, h.num_samples, h.speaker, h.model_fingerprint) == (
        777,
        777 * 64 - 5,
        "s01",
        "model-fp",
    )
    data = dumps(coded)
    assert len(data) < 0.75 * len(dumps(tokens))  # the random walk needs ~2.3 of 6 bits per code
    back = loads_container(data)
    assert isinstance(back, CodedTokens)
    assert decode_tokens(back, source) == tokens  # header included: coding back to "packed"
    assert dumps(decode_tokens(back, source)) == dumps(tokens)


def test_extra_header_fields_survive_coding() -> None:
    tokens = make_tokens(random_walk(50, 64, 1), 64)
    header = TokenHeader(**{**vars(tokens.header), "extra": {"speaker_vector": {"bits": 8, "codes": [1, 2]}}})
    tokens = TokenFile(header, tokens.codes)
    coded = encode_tokens(tokens, fitted(), -1)
    assert coded.header.extra["speaker_vector"] == {"bits": 8, "codes": [1, 2]}
    assert decode_tokens(loads_container(dumps(coded)), fitted()) == tokens  # type: ignore[arg-type]


def test_another_prior_or_no_prior_is_refused() -> None:
    a, b = fitted(64, seed=0), fitted(64, seed=50)
    assert a.fingerprint != b.fingerprint
    coded = encode_tokens(make_tokens(random_walk(100, 64, 2), 64), a, 0)
    with pytest.raises(ModelMismatchError, match=f"coded with prior {a.fingerprint}, got {b.fingerprint}"):
        decode_tokens(coded, b)
    with pytest.raises(ConfigError, match=f"entropy-coded with prior {a.fingerprint}.*--prior"):
        decode_tokens(coded, None)

    class Impostor:  # b's weights under a's fingerprint: caught by the codes' CRC
        codebook_size, fingerprint = 64, a.fingerprint
        weights, stepper = b.weights, b.stepper

    impostor = Impostor()
    with pytest.raises(TokenFormatError, match="fail their checksum"):
        decode_tokens(coded, impostor)


def test_damaged_payloads_are_refused_not_returned() -> None:
    source = fitted()
    tokens = make_tokens(random_walk(400, 64, 3), 64)
    coded = encode_tokens(tokens, source, 0)
    payload = coded.payload
    outcomes = set()
    for damaged in (
        payload[:-8],
        payload[: len(payload) // 2],
        b"",
        payload[:40] + bytes([payload[40] ^ 4]) + payload[41:],
    ):
        try:
            decoded = decode_tokens(CodedTokens(coded.header, damaged), source)
        except TokenFormatError as exc:
            outcomes.add("checksum" if "checksum" in str(exc) else "invalid")
        else:
            raise AssertionError(f"a damaged payload decoded to {decoded.codes[0, :5]}...")
    assert outcomes <= {"checksum", "invalid"}


def test_only_one_codebook_and_the_right_codebook_size() -> None:
    header = TokenHeader(16000, 64, 64, 2, 3, 100, None, "m")
    with pytest.raises(ConfigError, match="one codebook"):
        encode_tokens(TokenFile(header, np.zeros((2, 3), dtype=np.int64)), fitted(), 0)
    with pytest.raises(ModelMismatchError, match="prior is over 64 codes"):
        encode_tokens(make_tokens(np.zeros(3), 32), fitted(64), 0)


# --------------------------------------------------------------------------------------------
# The learned prior's integer model


def test_a_real_integer_prior_round_trips_per_speaker() -> None:
    torch = pytest.importorskip("torch")
    from vqspeech.nn.prior import CodePrior
    from vqspeech.nn.prior_int import IntegerCodePrior
    from vqspeech.prior_config import PriorConfig

    config = PriorConfig(codebook_size=32, n_speakers=3, channels=16, kernel_size=2, dilations=(1, 2, 4))
    torch.manual_seed(0)
    model = CodePrior(config)
    with torch.no_grad():
        model.speaker_bias.weight.normal_(0.0, 0.5)
        model.out.weight.mul_(3.0)
    source = IntegerCodePrior.from_state_dict(config, model.eval().state_dict())
    codes = random_walk(300, 32, 11)
    for speaker in (-1, 0, 2):
        data = encode_codes(codes, source, speaker)
        np.testing.assert_array_equal(decode_codes(data, codes.size, source, speaker), codes)
        assert 8 * len(data) <= 1.01 * ideal_bits(codes, source, speaker) + 64
    assert encode_codes(codes, source, 0) != encode_codes(codes, source, 1)  # the speaker matters
