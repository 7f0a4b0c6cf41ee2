"""Entropy coding of token files with a learned prior (issue 8): exact, deterministic, numpy only.

A prior predicts each code from the codes before it (and the speaker). Coding code ``t`` with
probability ``p_t`` costs about ``-log2 p_t`` bits, so a good prior takes a token file well
below the raw ``ceil(log2 K)`` bits per code. The coder is the range coder of ``constriction``
(``constriction.stream.queue``; Bamler, "Understanding entropy coding with asymmetric numeral
systems (ANS)", 2022), a well-kept Rust library: we do not write a coder by hand. (Measured on
2500 codes of K = 512: its ANS coder gave the same size to the byte and the same speed, about
1 us per code to encode and 3 us to decode step by step; the range coder is a queue, so the
decoder reads codes in the order the prior's stepper makes them, with no reversal.)

The prior is anything with the :class:`PmfSource` protocol (``vqspeech.prior`` provides the
trained one; :class:`BigramSource` is a small reference model): exact *integer* weights per code.

Determinism across runs and machines
------------------------------------
Encoder and decoder must build bit-identical probability tables, or the decoder goes astray.
Every step from the prior to the coder is exact or a fixed sequence of IEEE-754 operations:

1. The prior's weights are int64 integers, identical on every machine (``PmfSource`` promises
   it; the stepper's rows equal the teacher-forced rows exactly).
2. Each row goes to constriction as float64 ``row.astype(float64)``: exact for weights below
   2^53 (we require each row's sum to be below 2^53, so the sums below are exact too).
3. constriction's ``Categorical(perfect=False)`` quantises a row to 24-bit fixed point with
   ``free = 2^24 - K``, ``scale = free / sum(row)``, ``cdf[i] = trunc(cumsum(row)[:i] * scale) + i``:
   one correctly rounded division, one correctly rounded multiplication and a truncation, in a
   fixed order; no transcendental functions, no platform-dependent libm, no FMA contraction
   (Rust does not contract), hence the same integers on every IEEE-754 machine (x86-64 SSE2,
   aarch64). Every code keeps a probability of at least 2^-24, so any code can be coded.
4. From there the coder works on integers only.

The lazy (model-family, 2-D) form used for encoding and the per-step form used for decoding run
the same quantisation (constriction documents that ``lazy`` changes speed, not semantics; the
tests check it on random rows). A payload therefore depends on the prior's integers and on this
quantisation, which constriction keeps stable across releases for ``perfect=False``.

Safety: the header records the prior's fingerprint (a file refuses to decode with another prior)
and :func:`vqspeech.tokens.codes_crc32` of the codes, checked after decoding, so a damaged
payload or a prior that merely claims the right fingerprint is refused, never returned as codes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError, TokenFormatError
from vqspeech.tokens import (
    CODES_CRC32_KEY,
    PRIOR_FINGERPRINT_KEY,
    PRIOR_SPEAKER_KEY,
    CodedTokens,
    TokenFile,
    TokenHeader,
    codes_crc32,
)

__all__ = [
    "CODING",
    "BigramSource",
    "PmfSource",
    "PmfStepper",
    "decode_codes",
    "decode_tokens",
    "encode_codes",
    "encode_tokens",
    "ideal_bits",
]

#: The header's ``coding`` for payloads made here.
CODING = "arithmetic"
#: Rows must sum below this so that their float64 copies and sums are exact (see the docstring).
_MAX_ROW_SUM = 1 << 53
#: constriction's default range coder has 24-bit probabilities; a row needs fewer entries.
_MAX_CODEBOOK = (1 << 24) - 2


class PmfStepper(Protocol):
    """A prior run one code at a time (decoding): the weights of the next code, then its value."""

    def weights(self) -> NDArray[np.int64]:
        """int64 ``[K]``, every entry >= 1: unnormalised probabilities of the next code."""
        ...

    def push(self, code: int) -> None:
        """Condition on ``code`` (the one just decoded)."""
        ...


class PmfSource(Protocol):
    """An integer prior over code sequences (``vqspeech.nn.prior_int.IntegerCodePrior`` is one).

    Defined here, by the code that uses it, so entropy coding imports no torch.

    ``weights(codes, speaker)`` gives all rows at once (teacher forced): row ``t`` of the int64
    ``[T, K]`` result weighs code ``t`` given ``codes[:t]``; every entry >= 1. The rows of
    ``stepper(speaker)`` must equal them exactly, and both must be identical on every machine.
    ``fingerprint`` (16 hex digits) identifies the prior, weights included.
    """

    @property
    def codebook_size(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def weights(self, codes: NDArray[np.int64], speaker: int) -> NDArray[np.int64]: ...

    def stepper(self, speaker: int) -> PmfStepper: ...


def _constriction() -> Any:
    """Import constriction on first use (``vqspeech.tokens`` and plain files never need it)."""
    try:
        import constriction
    except ImportError:  # pragma: no cover - it is a core dependency
        raise ConfigError(
            "entropy coding needs the constriction package: pip install 'constriction>=0.4'"
        ) from None
    return constriction


def _check_rows(rows: NDArray[Any], codebook_size: int, fingerprint: str) -> NDArray[np.float64]:
    """The prior's integer rows ``[T, K]`` (or ``[K]``) as exact float64; CheckpointError if invalid."""
    if rows.dtype.kind not in "iu" or rows.shape[-1:] != (codebook_size,):
        raise CheckpointError(
            f"prior {fingerprint} gave weights of dtype {rows.dtype} and shape {list(rows.shape)}, "
            f"not integers [..., {codebook_size}]; the prior is broken or of another version"
        )
    if rows.size and (int(rows.min()) < 1 or int(rows.sum(axis=-1).max()) >= _MAX_ROW_SUM):
        raise CheckpointError(
            f"prior {fingerprint} gave a weight below 1 or a row summing to 2^53 or more; "
            "the prior is broken or of another version"
        )
    return rows.astype(np.float64)


def _check_source(source: PmfSource, codes: NDArray[Any] | None = None) -> int:
    size = int(source.codebook_size)
    if not 2 <= size <= _MAX_CODEBOOK:
        raise ConfigError(f"entropy coding needs 2 <= codebook_size <= {_MAX_CODEBOOK}, got {size}")
    if codes is not None and codes.size and (int(codes.min()) < 0 or int(codes.max()) >= size):
        raise ConfigError(f"codes outside [0, {size}) cannot be coded with a prior over {size} codes")
    return size


def encode_codes(codes: NDArray[Any], source: PmfSource, speaker: int) -> bytes:
    """Codes ``[T]`` (ints in ``[0, K)``) -> the range-coded bytes, using ``source``'s rows.

    All ``T`` rows come from one teacher-forced ``source.weights`` call. The coder's 32-bit words
    are stored little-endian, with the zero bytes at the end of the last word dropped (the
    decoder puts them back), so ``T = 0`` gives ``b""``.
    """
    flat = np.ascontiguousarray(np.asarray(codes).reshape(-1), dtype=np.int64)
    size = _check_source(source, flat)
    if flat.size == 0:
        return b""
    rows = np.asarray(source.weights(flat, speaker))
    if rows.shape[0] != flat.size:
        raise CheckpointError(
            f"prior {source.fingerprint} gave {rows.shape[0]} rows for {flat.size} codes; it is broken"
        )
    probabilities = _check_rows(rows, size, source.fingerprint)
    constriction = _constriction()
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    encoder.encode(flat.astype(np.int32), family, probabilities)
    data: bytes = np.asarray(encoder.get_compressed(), dtype="<u4").tobytes()
    # Only within the last word: the decoder never has to invent a whole word.
    return data[: max(len(data.rstrip(b"\0")), len(data) - 3)]


def decode_codes(data: bytes, n: int, source: PmfSource, speaker: int) -> NDArray[np.int64]:
    """Inverse of :func:`encode_codes`: ``n`` codes from ``data`` -> int64 ``[n]``.

    Sequential: each code's row comes from ``source.stepper(speaker)`` after the codes before it
    (about 3 us per code here besides the prior's own time). Data that is not a valid coding
    raises TokenFormatError; data coded with another prior decodes to wrong codes, which is
    why :func:`decode_tokens` checks the header's fingerprint and CRC.
    """
    size = _check_source(source)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    constriction = _constriction()
    padded = bytes(data) + b"\0" * (-len(data) % 4)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(padded, dtype="<u4").astype(np.uint32))
    categorical = constriction.stream.model.Categorical
    stepper = source.stepper(speaker)
    # grown as codes are decoded, never sized by ``n`` alone: a header may claim more codes than a
    # damaged payload gives, and memory should follow the work done
    out = np.empty(min(n, 1 << 16), dtype=np.int64)
    for t in range(n):
        if t == out.shape[0]:
            out = np.concatenate([out, np.empty(min(n - t, t), dtype=np.int64)])
        row = _check_rows(np.asarray(stepper.weights()), size, source.fingerprint)
        try:
            # lazy=True: the same quantisation as the encoder's 2-D model family, built faster.
            code = int(decoder.decode(categorical(row, lazy=True, perfect=False)))
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction: "invalid data"
            raise TokenFormatError(
                f"the coded payload is not valid for this prior at code {t} ({' '.join(str(exc).split())}); "
                "the file is corrupt"
            ) from None
        out[t] = code
        stepper.push(code)
    return out


def ideal_bits(codes: NDArray[Any], source: PmfSource, speaker: int) -> float:
    """``-sum log2 p(code_t | codes[:t])`` under ``source``: what an ideal coder would spend."""
    flat = np.ascontiguousarray(np.asarray(codes).reshape(-1), dtype=np.int64)
    _check_source(source, flat)
    if flat.size == 0:
        return 0.0
    rows = np.asarray(source.weights(flat, speaker)).astype(np.float64)
    picked = rows[np.arange(flat.size), flat]
    return float(-np.log2(picked / rows.sum(axis=1)).sum())


# --------------------------------------------------------------------------------------------
# Token files


def encode_tokens(tokens: TokenFile, source: PmfSource, speaker: int) -> CodedTokens:
    """A packed token file -> the same file entropy-coded with ``source`` (``coding="arithmetic"``).

    The header keeps every field and adds ``prior_fingerprint``, ``prior_speaker`` (``speaker``,
    the index the prior is conditioned on) and ``codes_crc32``. One codebook only (the prior
    models one code sequence); ConfigError for more, or for a prior over another codebook size.
    :func:`decode_tokens` gives back ``tokens`` exactly.
    """
    h = tokens.header
    if h.n_codebooks != 1:
        raise ConfigError(
            f"entropy coding handles one codebook; these tokens have {h.n_codebooks}: write them packed"
        )
    if source.codebook_size != h.codebook_size:
        raise ModelMismatchError(
            f"the prior is over {source.codebook_size} codes but the tokens have {h.codebook_size}; "
            "use the prior trained on this model's codes"
        )
    if type(speaker) is not int or speaker < -1:
        raise ConfigError(f"prior speaker index must be an integer >= -1 (-1: unknown), got {speaker!r}")
    extra = {
        **h.extra,
        PRIOR_FINGERPRINT_KEY: source.fingerprint,
        PRIOR_SPEAKER_KEY: speaker,
        CODES_CRC32_KEY: codes_crc32(tokens.codes, h.codebook_size),
    }
    header = _replace_header(h, CODING, extra)
    return CodedTokens(header, encode_codes(tokens.codes[0], source, speaker))


def decode_tokens(coded: CodedTokens, source: PmfSource | None, name: str = "tokens") -> TokenFile:
    """An entropy-coded token file -> the packed :class:`TokenFile` it was made from, exactly.

    ConfigError without a prior and ModelMismatchError with a prior of another fingerprint (both
    name the prior needed); TokenFormatError when the decoded codes fail the header's CRC (a
    damaged payload, or a prior that is not the one it claims to be).
    """
    needed = coded.prior_fingerprint
    if source is None:
        raise ConfigError(
            f"{name}: the codes are entropy-coded with prior {needed}; pass --prior PRIOR with that prior"
        )
    if source.fingerprint != needed:
        raise ModelMismatchError(
            f"{name}: coded with prior {needed}, got {source.fingerprint}; pass the prior it was coded with"
        )
    h = coded.header
    if h.n_codebooks != 1 or source.codebook_size != h.codebook_size:
        raise TokenFormatError(
            f"{name}: an entropy-coded file of {h.n_codebooks} x {h.codebook_size} codes does not fit "
            f"prior {needed} over {source.codebook_size} codes; the file is corrupt"
        )
    codes = decode_codes(coded.payload, h.n_frames, source, coded.prior_speaker)[None]
    if codes_crc32(codes, h.codebook_size) != coded.codes_crc32:
        raise TokenFormatError(
            f"{name}: the decoded codes fail their checksum: the payload is damaged, or the prior "
            f"is not the one with fingerprint {needed}; re-create the file"
        )
    extra = {
        k: v
        for k, v in h.extra.items()
        if k not in (PRIOR_FINGERPRINT_KEY, PRIOR_SPEAKER_KEY, CODES_CRC32_KEY)
    }
    return TokenFile(_replace_header(h, "packed", extra), codes)


def _replace_header(h: TokenHeader, coding: str, extra: dict[str, Any]) -> TokenHeader:
    return TokenHeader(
        sample_rate=h.sample_rate,
        hop_length=h.hop_length,
        codebook_size=h.codebook_size,
        n_codebooks=h.n_codebooks,
        n_frames=h.n_frames,
        num_samples=h.num_samples,
        speaker=h.speaker,
        model_fingerprint=h.model_fingerprint,
        vqspeech_version=h.vqspeech_version,
        coding=coding,
        extra=extra,
    )


# --------------------------------------------------------------------------------------------
# A reference prior


@dataclass(frozen=True)
class BigramSource:
    """An integer bigram prior: ``table[prev]`` weighs the next code (``prev = K`` at the start).

    Speaker-independent (``speaker`` is ignored). :meth:`fit` counts bigrams in code sequences
    (add-``alpha`` smoothed, scaled to integers); the fingerprint is a hash of the table, so two
    different tables never share one. A baseline for the benchmark and a test double for the
    learned prior; satisfies :class:`PmfSource`.
    """

    table: NDArray[np.int64]  # [K + 1, K], entries >= 1
    codebook_size: int = field(init=False)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        table = np.ascontiguousarray(self.table, dtype=np.int64)
        k = table.shape[1] if table.ndim == 2 else 0
        if table.shape != (k + 1, k) or k < 2 or int(table.min()) < 1:
            raise ConfigError(
                f"a bigram table must be [K + 1, K] (K >= 2) of integers >= 1, got {table.shape}"
            )
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "codebook_size", k)
        digest = hashlib.sha256(
            b"bigram\0" + np.asarray(table.shape, "<i8").tobytes() + table.astype("<i8").tobytes()
        )
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:16])

    @classmethod
    def fit(
        cls, sequences: Sequence[NDArray[Any]], codebook_size: int, alpha: float = 0.5, scale: int = 1 << 16
    ) -> BigramSource:
        """Count bigrams in ``sequences`` (each ``[T]``), smooth by ``alpha``, scale to integers."""
        counts = np.zeros((codebook_size + 1, codebook_size), dtype=np.float64)
        for sequence in sequences:
            seq = np.asarray(sequence, dtype=np.int64).reshape(-1)
            if seq.size:
                np.add.at(counts, (np.concatenate([[codebook_size], seq[:-1]]), seq), 1.0)
        probs = (counts + alpha) / (counts + alpha).sum(axis=1, keepdims=True)
        return cls(np.maximum(1, np.rint(probs * scale)).astype(np.int64))

    def weights(self, codes: NDArray[np.int64], speaker: int) -> NDArray[np.int64]:
        flat = np.asarray(codes, dtype=np.int64).reshape(-1)
        previous = np.concatenate([[self.codebook_size], flat[:-1]]).astype(np.int64)
        return self.table[previous]

    def stepper(self, speaker: int) -> PmfStepper:
        return _BigramStepper(self.table, self.codebook_size)


class _BigramStepper:
    def __init__(self, table: NDArray[np.int64], start: int) -> None:
        self._table, self._previous = table, start

    def weights(self) -> NDArray[np.int64]:
        return self._table[self._previous]

    def push(self, code: int) -> None:
        self._previous = int(code)
