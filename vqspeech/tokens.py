"""Token files: discrete speech codes on disk, self-describing and checksummed. No torch here.

Layout of format version 1 (all integers little-endian; byte-by-byte in ``docs/token-format.md``)::

    offset  size  field
    0       8     magic            b"VQSPTOK\\x00"
    8       1     format version   1 (uint8)
    9       4     header length H  (uint32)
    13      H     header           UTF-8 JSON object (sample_rate, hop_length, codebook_size, ...)
    13+H    P     payload          coding "packed": codes [n_codebooks, n_frames], row-major,
                                   ceil(log2 K) bits each, LSB-first little-endian bit stream,
                                   zero-padded to a whole byte; coding "arithmetic": opaque bytes
    13+H+P  4     CRC32            zlib.crc32 of bytes [0, 13+H+P)

so a packed file is ``17 + H + ceil(bits * n_codebooks * n_frames / 8)`` bytes. Modelled on EnCodec's
``binary.py`` (magic, version byte, JSON header, bit-packed codes); the file-object functions
(:func:`write_tokens`, :func:`read_tokens`) are the core that every reader and writer goes through:
:func:`dumps`, :func:`loads`, :func:`save_tokens` and :func:`load_tokens` wrap them here, and the
CLI's outputs (files or stdout, :func:`vqspeech.inference.write_token_output`) call
:func:`write_tokens` on a :mod:`vqspeech.files` output. Files on disk are always written by
:mod:`vqspeech.files` (temp file, fsync, rename).

Forward compatibility: readers ignore (and keep, in :attr:`TokenHeader.extra`) header keys they do
not know, so new optional fields (``speaker_vector``, ...) need no new format version. The header's
``coding`` says how the payload is coded:

* ``"packed"``: the bit-packed codes above; :class:`TokenFile` (header + codes).
* ``"arithmetic"``: the codes entropy-coded with a learned prior (issue 8); the header adds
  ``prior_fingerprint``, ``prior_speaker`` and ``codes_crc32`` (see :class:`CodedTokens`). This
  module treats the payload as opaque bytes, so it needs neither the prior nor the entropy coder:
  :func:`read_container` returns a :class:`CodedTokens` (header + payload) that ``vqspeech info``
  can show, and :mod:`vqspeech.entropy` turns it into a :class:`TokenFile` given the prior.
  :func:`read_tokens` (which promises codes) refuses such a file with a message naming the prior.

Other codings are refused with an "upgrade" message. The version byte changes only if the
container itself changes.

Reading never trusts a length before checking it against the bytes actually there: a 20-byte file
that claims 10^12 frames fails before anything is allocated. Every problem with the bytes raises
:class:`~vqspeech.errors.TokenFormatError` with a message that says what to do.

Also here, for pipelines: plain ``.npy`` arrays (:func:`write_npy`, :func:`read_npy`), text
(:func:`format_txt`, :func:`parse_txt`) and JSON lines (:func:`jsonl_record`,
:func:`read_jsonl_record`).

Why this module is ~1000 lines and still one: it is the token container and nothing else,
its types (header, speaker vector, packed and coded tokens, with their validation), its writer
and its bounded reader, which is most of it because it checks every length against the bytes
actually there before allocating (issue 18). The bit packing, a pure numpy job with its own
rules, is :mod:`vqspeech.bitpack`. The pipeline formats above are a second job and belong in a
module of their own; they stay here for now only because ``vqspeech/inference.py`` imports
``write_npy`` and ``format_txt`` from here and is being rewritten in parallel (issue 15): moving
them is one import line there once that lands.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from vqspeech import __version__
from vqspeech.bitpack import bits_per_code, check_range, pack_bits, unpack_bits
from vqspeech.errors import OutputError, TokenFormatError
from vqspeech.files import write_atomic

__all__ = [
    "CODED_CODINGS",
    "CODES_CRC32_KEY",
    "CODINGS",
    "FIXED_OVERHEAD",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_CODEBOOKS",
    "MAX_CODEBOOK_SIZE",
    "MAX_HEADER_BYTES",
    "PRIOR_FINGERPRINT_KEY",
    "PRIOR_SPEAKER_KEY",
    "SPEAKER_VECTOR_KEY",
    "CodedTokens",
    "SpeakerVector",
    "TokenFile",
    "TokenHeader",
    "codes_crc32",
    "dumps",
    "format_txt",
    "jsonl_record",
    "load_container",
    "load_tokens",
    "loads",
    "loads_container",
    "parse_txt",
    "read_container",
    "read_jsonl_record",
    "read_npy",
    "read_tokens",
    "save_tokens",
    "write_npy",
    "write_tokens",
]

MAGIC = b"VQSPTOK\x00"
#: File extension of vqspeech token files (format: ``docs/token-format.md``).
TOKEN_SUFFIX = ".vqt"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sBI")  # magic, format version, header length
_CRC = struct.Struct("<I")
#: Bytes in every file besides the JSON header and the payload: prefix (13) + CRC32 (4).
FIXED_OVERHEAD = _PREFIX.size + _CRC.size

#: Codings this version can read and write; see the module docstring for how new ones fit in.
CODINGS = ("packed", "arithmetic")
#: The codings whose payload is opaque here (entropy-coded: decoding needs a prior).
CODED_CODINGS = ("arithmetic",)
#: Header keys of an entropy-coded file: the prior's fingerprint (a string), the speaker index the
#: prior was conditioned on (an int; -1 = unknown speaker), and :func:`codes_crc32` of the codes
#: it stands for.
PRIOR_FINGERPRINT_KEY = "prior_fingerprint"
PRIOR_SPEAKER_KEY = "prior_speaker"
CODES_CRC32_KEY = "codes_crc32"
#: An entropy-coded payload may take at most this many bits per code plus _CODED_SLACK bytes. The
#: coder spends at most 24 bits on a code (its probabilities have 24-bit precision), so this only
#: stops a corrupt or hostile header from making a reader take gigabytes for a few codes.
_MAX_CODED_BITS = 32
_CODED_SLACK = 64
#: And the fewest: the coder's probabilities have 24-bit precision and every code keeps at least
#: 2^-24, so the likeliest of K codes has at most 1 - (K - 1) 2^-24 and costs at least
#: -log2 of that. A payload of P bytes therefore holds at most (8 P + _CODER_STATE_BITS) /
#: that many codes (the coder's 64-bit state may be flushed as dropped zero bytes), which
#: bounds n_frames by the payload before anything is decoded or allocated.
_CODER_PRECISION = 24
_CODER_STATE_BITS = 64 + 32

MAX_HEADER_BYTES = 16 << 20  # a header is metadata; 16 MiB leaves room for speaker vectors and more
MAX_CODEBOOK_SIZE = 1 << 32  # codes fit in 32 bits (uint32 in other languages)
MAX_CODEBOOKS = 4096
_MAX_INT64 = (1 << 63) - 1  # every integer field fits an int64, so other languages can read it
_READ_CHUNK = 1 << 20  # bytes per read() when the stream's size is unknown

# Header fields in the order they are written; ``coding`` then ``extra``'s keys follow.
_INT_FIELDS = ("sample_rate", "hop_length", "codebook_size", "n_codebooks", "n_frames", "num_samples")
_STR_FIELDS = ("model_fingerprint", "vqspeech_version", "coding")
_MIN_VALUE = {
    "sample_rate": 1,
    "hop_length": 1,
    "codebook_size": 2,
    "n_codebooks": 1,
    "n_frames": 0,
    "num_samples": 0,
}
_MAX_VALUE = {"codebook_size": MAX_CODEBOOK_SIZE, "n_codebooks": MAX_CODEBOOKS}


# --------------------------------------------------------------------------------------------
# Header and file


@dataclass(frozen=True)
class TokenHeader:
    """What a token file says about its codes. Rates in Hz, lengths in samples / frames.

    ``num_samples`` is the source audio's length, so decoding trims exactly; ``speaker`` is the
    source speaker's name (None if unknown); ``model_fingerprint`` identifies the model that made
    the codes (see :func:`vqspeech.checkpoint.model_fingerprint`). ``coding`` is how the payload
    is coded: ``"packed"`` or ``"arithmetic"`` (see the module docstring). ``extra`` holds any
    other header keys, JSON values only; it round-trips exactly (use lists, not tuples) and
    readers that do not know a key keep it.
    Invalid values raise :class:`~vqspeech.errors.TokenFormatError`.
    """

    sample_rate: int
    hop_length: int
    codebook_size: int
    n_codebooks: int
    n_frames: int
    num_samples: int
    speaker: str | None
    model_fingerprint: str
    vqspeech_version: str = __version__
    coding: str = "packed"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(vars(self), "token header")
        if not isinstance(self.extra, dict):
            raise TokenFormatError(f"token header: extra must be a dict, got {type(self.extra).__name__}")
        clash = sorted(set(self.extra) & _FIELD_NAMES)
        if clash:
            raise TokenFormatError(
                f"token header: extra repeats the header field(s) {clash}; set them directly"
            )
        # A deep copy through JSON: proves the values serialise and round-trip exactly, and keeps
        # the caller's dict from changing this (frozen) header behind its back.
        object.__setattr__(self, "extra", _json_copy(self.extra))

    @property
    def speaker_vector(self) -> SpeakerVector | None:
        """The optional ``speaker_vector`` field (issue #7) parsed, or None where there is none.

        Parsed when asked for, not when the header is read, so a reader that does not use it is
        never stopped by it; a malformed one raises TokenFormatError here.
        """
        value = self.extra.get(SPEAKER_VECTOR_KEY)
        return None if value is None else SpeakerVector.from_json(value)

    @property
    def side_bits(self) -> int:
        """Bits of side information besides the codes that decoding uses: the speaker vector's."""
        vector = self.speaker_vector
        return vector.n_bits if vector is not None else 0

    @property
    def bits(self) -> int:
        """Bits per code in the packed payload: ``ceil(log2 codebook_size)``. This is the raw rate;
        an entropy-coded file's codes take ``8 * len(payload)`` bits (:attr:`CodedTokens.code_bits`)."""
        return bits_per_code(self.codebook_size)

    @property
    def payload_bytes(self) -> int:
        """Payload size for ``coding="packed"``: ``ceil(bits * n_codebooks * n_frames / 8)``."""
        return (self.bits * self.n_codebooks * self.n_frames + 7) // 8

    def max_coded_frames(self, payload_bytes: int) -> int:
        """The most frames an entropy-coded payload of ``payload_bytes`` bytes can hold (see
        ``_CODER_PRECISION``): a reader refuses a header that claims more, before decoding."""
        likeliest = 1.0 - (self.codebook_size - 1) / (1 << _CODER_PRECISION)
        if likeliest <= 0.0:
            return 8 * payload_bytes + _CODER_STATE_BITS  # >= 1 bit per code
        min_bits = -math.log2(likeliest) * (1 - 1e-9)  # a hair under, against rounding
        return math.floor((8 * payload_bytes + _CODER_STATE_BITS) / min_bits) + 1

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload a reader accepts: :attr:`payload_bytes` when packed; for an
        entropy-coded payload, 32 bits per code plus 64 bytes (the coder never needs that much)."""
        if self.coding not in CODED_CODINGS:
            return self.payload_bytes
        return (_MAX_CODED_BITS * self.n_codebooks * self.n_frames + 7) // 8 + _CODED_SLACK

    def to_dict(self) -> dict[str, Any]:
        """The header as written to disk: the fields in declaration order, then ``extra``'s keys."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_ORDER}
        out.update(_json_copy(self.extra))
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "token header") -> TokenHeader:
        """Validate a decoded JSON header; unknown keys go to ``extra`` in their original order."""
        if not isinstance(data, dict):
            raise TokenFormatError(f"{source}: header must be a JSON object, got {type(data).__name__}")
        missing = [name for name in _FIELD_ORDER if name not in data]
        if missing:
            raise TokenFormatError(
                f"{source}: header lacks required field(s) {missing}; is the file corrupt?"
            )
        _check_fields(data, source)
        known = {name: data[name] for name in _FIELD_ORDER}
        extra = {key: value for key, value in data.items() if key not in _FIELD_NAMES}
        return cls(**known, extra=extra)


_FIELD_ORDER = tuple(f.name for f in fields(TokenHeader) if f.name != "extra")
_FIELD_NAMES = frozenset(_FIELD_ORDER)


def _check_fields(values: dict[str, Any], source: str) -> None:
    """Types and ranges of the known header fields present in ``values`` (a dict or ``vars``)."""
    for name in _INT_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if type(value) is not int:  # bool is an int subclass; 16000.0 is not an int either
            raise TokenFormatError(f"{source}: {name} must be an integer, got {value!r}")
        low, high = _MIN_VALUE[name], _MAX_VALUE.get(name, _MAX_INT64)
        if not low <= value <= high:
            raise TokenFormatError(f"{source}: {name}={value} is out of range [{low}, {high}]")
    for name in _STR_FIELDS:
        if name in values and not isinstance(values[name], str):
            raise TokenFormatError(f"{source}: {name} must be a string, got {values[name]!r}")
    if "speaker" in values and values["speaker"] is not None and not isinstance(values["speaker"], str):
        raise TokenFormatError(f"{source}: speaker must be a string or null, got {values['speaker']!r}")


def _json_copy(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` through JSON and back; raises if it is not JSON or would not come back equal."""
    try:
        copy = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TokenFormatError(f"token header: extra fields must be plain JSON values ({exc})") from None
    if copy != value:
        raise TokenFormatError(
            "token header: extra fields would not round-trip through JSON "
            "(use lists instead of tuples and string keys)"
        )
    return copy  # type: ignore[no-any-return]


#: Header key of the optional quantised speaker vector (see :class:`SpeakerVector`).
SPEAKER_VECTOR_KEY = "speaker_vector"
_MAX_VECTOR_BITS = 16
_MAX_VECTOR_DIM = 4096


@dataclass(frozen=True)
class SpeakerVector:
    """A speaker vector in [-1, 1]^D on a uniform grid of ``bits`` bits per dimension (issue #7).

    ``codes[i]`` in ``[0, 2**bits - 1]`` stands for ``values[i] = 2 * codes[i] / (2**bits - 1) - 1``
    (both ends of [-1, 1] are grid points; the step is ``2 / (2**bits - 1)``). In a token
    header it is the JSON object ``{"bits": 8, "codes": [...]}`` under ``speaker_vector``;
    ``bits * D`` bits count toward the file's bitrate (256 for the demo model: 32 x 8).
    """

    bits: int
    codes: tuple[int, ...]

    def __post_init__(self) -> None:
        if type(self.bits) is not int or not 1 <= self.bits <= _MAX_VECTOR_BITS:
            raise TokenFormatError(
                f"speaker_vector: bits must be an integer in [1, {_MAX_VECTOR_BITS}], got {self.bits!r}"
            )
        codes = tuple(self.codes)
        if not 1 <= len(codes) <= _MAX_VECTOR_DIM:
            raise TokenFormatError(f"speaker_vector: needs 1 to {_MAX_VECTOR_DIM} codes, got {len(codes)}")
        top = (1 << self.bits) - 1
        for code in codes:
            if type(code) is not int or not 0 <= code <= top:
                raise TokenFormatError(f"speaker_vector: code {code!r} is not an integer in [0, {top}]")
        object.__setattr__(self, "codes", codes)

    @classmethod
    def quantize(cls, vector: Any, bits: int = 8) -> SpeakerVector:
        """Float values ``[D]`` (clipped to [-1, 1]) -> the nearest grid point of each."""
        values = np.clip(np.asarray(vector, np.float64).reshape(-1), -1.0, 1.0)
        if not np.isfinite(values).all():
            raise TokenFormatError("speaker_vector: values must be finite")
        top = (1 << bits) - 1
        return cls(bits, tuple(int(c) for c in np.rint((values + 1.0) * (top / 2.0))))

    @property
    def values(self) -> NDArray[np.float32]:
        """The vector, float32 ``[D]`` in [-1, 1]."""
        return (np.asarray(self.codes, np.float64) * (2.0 / ((1 << self.bits) - 1)) - 1.0).astype(np.float32)

    @property
    def n_bits(self) -> int:
        """Bits the vector is worth: ``bits * D``."""
        return self.bits * len(self.codes)

    def to_json(self) -> dict[str, Any]:
        return {"bits": self.bits, "codes": list(self.codes)}

    @classmethod
    def from_json(cls, value: Any) -> SpeakerVector:
        """Parse the header's ``{"bits": B, "codes": [...]}``; TokenFormatError if malformed."""
        if (
            not isinstance(value, dict)
            or set(value) != {"bits", "codes"}
            or not isinstance(value["codes"], list)
        ):
            raise TokenFormatError(
                'token header: speaker_vector must be {"bits": B, "codes": [...]}; the file is corrupt '
                "or from an incompatible writer"
            )
        return cls(value["bits"], tuple(value["codes"]))


@dataclass(frozen=True, eq=False)
class TokenFile:
    """A header plus its codes: int64 ``[n_codebooks, n_frames]``, each in ``[0, codebook_size)``.

    ``codes`` is converted to a C-contiguous int64 array; a shape or value that disagrees with the
    header raises :class:`~vqspeech.errors.TokenFormatError`. Equality compares header and codes.
    Only a ``"packed"`` header can be written (an entropy-coded file is a :class:`CodedTokens`).
    """

    header: TokenHeader
    codes: NDArray[np.int64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", _check_codes(self.codes, self.header, "token file"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenFile):
            return NotImplemented
        return self.header == other.header and np.array_equal(self.codes, other.codes)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CodedTokens:
    """A header plus an entropy-coded payload (``coding="arithmetic"``): what a token file holds
    when its codes were coded with a prior. The payload is opaque here; :mod:`vqspeech.entropy`
    decodes it, given the prior whose fingerprint the header names.

    The header must carry ``prior_fingerprint`` (str), ``prior_speaker`` (int >= -1; -1 is the
    prior's "unknown speaker") and
    ``codes_crc32`` (:func:`codes_crc32` of the codes, an int in [0, 2^32)); the payload may be at
    most :attr:`TokenHeader.max_payload_bytes`. Anything else raises TokenFormatError.
    """

    header: TokenHeader
    payload: bytes

    def __post_init__(self) -> None:
        _check_coded(self.header, "coded tokens")
        object.__setattr__(self, "payload", bytes(self.payload))
        most = self.header.max_coded_frames(len(self.payload))
        if self.header.n_codebooks * self.header.n_frames > most:
            raise TokenFormatError(
                f"coded tokens: {self.header.n_frames} frames cannot fit in a {len(self.payload)}-byte "
                f"payload (at most {most} codes of {self.header.codebook_size}); the file is corrupt"
            )
        if len(self.payload) > self.header.max_payload_bytes:
            raise TokenFormatError(
                f"coded tokens: a {len(self.payload)}-byte payload for {self.header.n_frames} frames is "
                f"over the {self.header.max_payload_bytes}-byte limit; the file is corrupt"
            )

    @property
    def prior_fingerprint(self) -> str:
        """The fingerprint of the prior the codes were coded with."""
        return str(self.header.extra[PRIOR_FINGERPRINT_KEY])

    @property
    def prior_speaker(self) -> int:
        """The speaker index the prior was conditioned on."""
        return int(self.header.extra[PRIOR_SPEAKER_KEY])

    @property
    def codes_crc32(self) -> int:
        """:func:`codes_crc32` of the codes the payload stands for."""
        return int(self.header.extra[CODES_CRC32_KEY])

    @property
    def code_bits(self) -> int:
        """Bits the coded codes take: ``8 * len(payload)``."""
        return 8 * len(self.payload)


def _check_coded(header: TokenHeader, source: str) -> None:
    """The fields an entropy-coded header needs, with their types and ranges."""
    if header.coding not in CODED_CODINGS:
        raise TokenFormatError(
            f"{source}: coding {header.coding!r} is not an entropy coding ({list(CODED_CODINGS)})"
        )
    extra = header.extra
    missing = [k for k in (PRIOR_FINGERPRINT_KEY, PRIOR_SPEAKER_KEY, CODES_CRC32_KEY) if k not in extra]
    if missing:
        raise TokenFormatError(
            f"{source}: an entropy-coded header needs {missing}; the file is corrupt or from an "
            "incompatible writer"
        )
    if not isinstance(extra[PRIOR_FINGERPRINT_KEY], str):
        raise TokenFormatError(f"{source}: {PRIOR_FINGERPRINT_KEY} must be a string; the file is corrupt")
    speaker = extra[PRIOR_SPEAKER_KEY]
    if type(speaker) is not int or not -1 <= speaker <= _MAX_INT64:
        raise TokenFormatError(f"{source}: {PRIOR_SPEAKER_KEY} must be an integer >= -1, got {speaker!r}")
    crc = extra[CODES_CRC32_KEY]
    if type(crc) is not int or not 0 <= crc < 1 << 32:
        raise TokenFormatError(f"{source}: {CODES_CRC32_KEY} must be an integer in [0, 2^32), got {crc!r}")


def codes_crc32(codes: NDArray[Any], codebook_size: int) -> int:
    """``zlib.crc32`` of ``codes`` as the ``"packed"`` coding writes them (:func:`pack_bits` at
    ``ceil(log2 codebook_size)`` bits, C order): what an entropy-coded header stores as
    ``codes_crc32``, so a decode with the wrong prior, or of a damaged payload, is refused
    instead of returned."""
    return zlib.crc32(pack_bits(codes, bits_per_code(codebook_size)))


def _check_codes(codes: Any, header: TokenHeader, source: str) -> NDArray[np.int64]:
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise TokenFormatError(f"{source}: codes must be integers, got dtype {array.dtype}")
    expected = (header.n_codebooks, header.n_frames)
    if array.shape != expected:
        raise TokenFormatError(
            f"{source}: codes have shape {list(array.shape)}, but the header says "
            f"[n_codebooks, n_frames] = {list(expected)}"
        )
    check_range(array, header.codebook_size, source)
    return np.ascontiguousarray(array, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Writing


def write_tokens(fileobj: BinaryIO, tokens: TokenFile | CodedTokens) -> None:
    """Write ``tokens`` to a binary file object in format version 1 (see the module docstring).

    A :class:`TokenFile` is written bit-packed (its header's coding must be ``"packed"``); a
    :class:`CodedTokens` with its entropy-coded payload as it is.
    """
    header = tokens.header
    if isinstance(tokens, CodedTokens):
        _check_coded(header, "write_tokens")
        payload = tokens.payload
    elif header.coding != "packed":
        raise TokenFormatError(
            f'cannot write coding {header.coding!r} from codes: a TokenFile is written "packed"; '
            "entropy-code it with vqspeech.entropy (a CodedTokens) instead"
        )
    else:
        # The TokenFile already holds checked codes; check again in case its array was modified since.
        payload = pack_bits(_check_codes(tokens.codes, header, "write_tokens"), header.bits)
    header_bytes = json.dumps(header.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise TokenFormatError(
            f"token header is {len(header_bytes)} bytes, over the {MAX_HEADER_BYTES}-byte limit; "
            "keep large data out of extra fields"
        )
    crc = 0
    for part in (
        _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)),
        header_bytes,
        payload,
    ):
        fileobj.write(part)
        crc = zlib.crc32(part, crc)
    fileobj.write(_CRC.pack(crc))


def dumps(tokens: TokenFile | CodedTokens) -> bytes:
    """``tokens`` as the bytes of a token file."""
    buffer = io.BytesIO()
    write_tokens(buffer, tokens)
    return buffer.getvalue()


def save_tokens(path: str | os.PathLike[str], tokens: TokenFile | CodedTokens) -> None:
    """Write a token file atomically (:func:`vqspeech.files.write_atomic`, fsynced before the rename).

    A failure at any point leaves an existing file at ``path`` untouched and no temp file behind.
    The folder must exist. OS errors become TokenFormatError ("cannot write ...").
    """
    data = dumps(tokens)  # validate and encode before touching the disk
    try:
        write_atomic(path, lambda handle: handle.write(data), "token file", fsync=True, mkdir=False)
    except OutputError as exc:
        raise TokenFormatError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Reading


class _Source:
    """Reads a stream with a running CRC32, never asking for more than is known to be there.

    ``available`` is the byte count left in the stream when it can be measured (seekable files,
    BytesIO), else None; then reads go in bounded chunks, so memory follows the bytes that arrive,
    not the lengths a header claims.
    """

    def __init__(self, fileobj: BinaryIO, name: str, max_bytes: int | None) -> None:
        self.fileobj, self.name, self.max_bytes = fileobj, name, max_bytes
        self.crc = 0
        self.consumed = 0
        self.size = _stream_size(fileobj)
        if max_bytes is not None and self.size is not None and self.size > max_bytes:
            raise TokenFormatError(f"{name} is {self.size} bytes, more than max_bytes={max_bytes}")

    @property
    def available(self) -> int | None:
        return None if self.size is None else self.size - self.consumed

    def truncated(self, what: str, needed: int, found: int) -> TokenFormatError:
        return TokenFormatError(
            f"{self.name} is truncated: the {what} needs {needed} bytes, only {found} remain "
            "(an interrupted write or copy?); re-create the file"
        )

    def read(self, n: int, what: str, checksum: bool = True) -> bytes | bytearray:
        available = self.available
        if available is not None and n > available:
            raise self.truncated(what, n, available)
        if self.max_bytes is not None and self.consumed + n > self.max_bytes:
            raise TokenFormatError(
                f"{self.name}: the {what} would take the file past max_bytes={self.max_bytes}"
            )
        data = b"".join(self._chunks(n)) if available is None else self._read_known(n)
        if len(data) < n:
            raise self.truncated(what, n, len(data))
        self.consumed += n
        if checksum:
            self.crc = zlib.crc32(data, self.crc)
        return data

    def read_upto(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer at the end of the stream), checksummed."""
        if self.available is not None:
            n = min(n, self.available)
        data = b"".join(self._chunks(n))
        self.consumed += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data

    def read_rest(self) -> bytes:
        """Everything left in the stream (bounded by ``max_bytes``)."""
        if self.available is not None:
            return bytes(self.read(self.available, "data"))
        chunks = []
        while chunk := self._raw_read(_READ_CHUNK):
            self.consumed += len(chunk)
            if self.max_bytes is not None and self.consumed > self.max_bytes:
                raise TokenFormatError(f"{self.name} is more than max_bytes={self.max_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _read_known(self, n: int) -> bytes | bytearray:
        data = self._raw_read(n)
        if len(data) == n:
            return data
        whole = bytearray(data)  # a short read from a raw stream: keep going
        for chunk in self._chunks(n - len(whole)):
            whole += chunk
        return whole

    def _chunks(self, n: int) -> Iterator[bytes]:
        while n > 0:
            chunk = self._raw_read(min(n, _READ_CHUNK))
            if not chunk:
                return
            n -= len(chunk)
            yield chunk

    def _raw_read(self, n: int) -> bytes:
        data = self.fileobj.read(n)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(
                f"{self.name}: read() returned {type(data).__name__}; open the file in binary mode"
            )
        return bytes(data) if isinstance(data, bytearray) else data

    def at_end(self) -> int:
        """Bytes left after what was read (0 at EOF; for unmeasured streams, 0 or 1)."""
        if self.size is not None:
            return self.size - self.consumed
        return len(self._raw_read(1))


def _stream_size(fileobj: BinaryIO) -> int | None:
    """Bytes from the current position to the end, or None for pipes and other unseekable streams."""
    try:
        if not fileobj.seekable():
            return None
        position = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(position)
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, end - position)


def read_tokens(fileobj: BinaryIO, max_bytes: int | None = None, *, name: str | None = None) -> TokenFile:
    """Read and fully validate one token file from a binary file object.

    ``max_bytes`` caps the file's size (None: no cap beyond the bytes actually there). ``name``
    is used in messages (default: the file object's ``name``). The stream must end right after
    the checksum. Raises :class:`~vqspeech.errors.TokenFormatError` for anything wrong with the
    bytes: foreign, newer format, truncated, corrupted (checksum), invalid header or codes; and
    for an entropy-coded file, whose codes need its prior (use :func:`read_container`).
    """
    tokens = read_container(fileobj, max_bytes, name=name)
    if isinstance(tokens, CodedTokens):
        label = name if name is not None else _stream_name(fileobj)
        raise TokenFormatError(
            f"{label}: the codes are entropy-coded with prior {tokens.prior_fingerprint}; decode them "
            "with that prior (vqspeech decode --prior PRIOR, or vqspeech.entropy.decode_tokens)"
        )
    return tokens


def _stream_name(fileobj: BinaryIO) -> str:
    raw_name = getattr(fileobj, "name", None)
    return str(raw_name) if isinstance(raw_name, (str, os.PathLike)) else "token data"


def read_container(
    fileobj: BinaryIO, max_bytes: int | None = None, *, name: str | None = None
) -> TokenFile | CodedTokens:
    """Read and validate one token file of any coding this version knows: a :class:`TokenFile`
    for ``"packed"``, a :class:`CodedTokens` (header + opaque payload) for an entropy-coded one.

    The same checks as :func:`read_tokens`; an entropy-coded payload may be any length up to
    :attr:`TokenHeader.max_payload_bytes` (decided before it is read).
    """
    if name is None:
        name = _stream_name(fileobj)
    source = _Source(fileobj, name, max_bytes)
    start = source.read_upto(len(MAGIC))
    if not start:
        raise TokenFormatError(f"{name} is empty: not a vqspeech token file")
    if start != MAGIC[: len(start)]:
        raise TokenFormatError(
            f"{name} is not a vqspeech token file (it starts with {start!r}, not {MAGIC!r}); "
            "give a file written by `vqspeech encode`"
        )
    if len(start) < len(MAGIC):
        raise source.truncated("magic", len(MAGIC), len(start))
    rest = source.read(_PREFIX.size - len(MAGIC), "file prefix")
    _, version, header_len = _PREFIX.unpack(start + bytes(rest))
    if version > FORMAT_VERSION:
        raise TokenFormatError(
            f"{name} was written by a newer vqspeech (format {version}; this one reads format "
            f"{FORMAT_VERSION}); upgrade vqspeech to read it"
        )
    if version < 1:
        raise TokenFormatError(f"{name}: format version {version} does not exist; the file is corrupt")
    if not 2 <= header_len <= MAX_HEADER_BYTES:
        raise TokenFormatError(
            f"{name}: header length {header_len} is not in [2, {MAX_HEADER_BYTES}]; the file is corrupt"
        )
    header_bytes = source.read(header_len, "JSON header")
    header = _parse_header(header_bytes, name)
    if header.coding not in CODINGS:
        raise TokenFormatError(
            f"{name}: codes are coded as {header.coding!r}, which this vqspeech cannot decode "
            f"(it reads {list(CODINGS)}); upgrade vqspeech to read it"
        )
    if header.coding in CODED_CODINGS:
        return _read_coded(source, header, name)
    payload_len = header.payload_bytes
    available = source.available
    if available is not None:
        # Decide before reading (or allocating) anything: the rest must be payload + CRC, exactly.
        if available < payload_len + _CRC.size:
            raise source.truncated(
                f"payload ({header.n_codebooks} x {header.n_frames} codes of {header.bits} bits) "
                "plus checksum",
                payload_len + _CRC.size,
                available,
            )
        if available > payload_len + _CRC.size:
            raise _trailing(name, available - payload_len - _CRC.size)
    payload = source.read(payload_len, "payload")
    crc = source.crc
    (stored_crc,) = _CRC.unpack(bytes(source.read(_CRC.size, "checksum", checksum=False)))
    if source.at_end():
        raise _trailing(name, source.available)
    if stored_crc != crc:
        raise TokenFormatError(
            f"{name} is corrupted: checksum mismatch (stored {stored_crc:08x}, computed {crc:08x}); "
            "re-create or re-copy the file"
        )
    return TokenFile(header, _decode_packed(payload, header, name))


def _read_coded(source: _Source, header: TokenHeader, name: str) -> CodedTokens:
    """The rest of an entropy-coded file: payload (everything up to the last 4 bytes) + CRC."""
    _check_coded(header, name)
    limit = header.max_payload_bytes + _CRC.size
    available = source.available
    if available is not None and available < _CRC.size:
        raise source.truncated("checksum", _CRC.size, available)
    if available is not None:
        most = header.max_coded_frames(available - _CRC.size)
        if header.n_codebooks * header.n_frames > most:
            raise TokenFormatError(
                f"{name}: {header.n_frames} frames cannot fit in {available - _CRC.size} bytes of coded "
                f"payload (at most {most} codes of {header.codebook_size}); the file is corrupt"
            )
    if available is not None and available > limit:
        raise TokenFormatError(
            f"{name}: {available - _CRC.size} bytes of coded payload is more than {header.n_frames} "
            f"frames can take ({header.max_payload_bytes}); the file is corrupt or two files are glued"
        )
    crc = source.crc
    rest = source.read_upto(limit + 1)  # an unmeasured stream: one byte past the limit says "too long"
    if len(rest) > limit:
        raise TokenFormatError(
            f"{name}: the coded payload is more than {header.n_frames} frames can take "
            f"({header.max_payload_bytes} bytes); the file is corrupt or two files are glued"
        )
    if len(rest) < _CRC.size:
        raise source.truncated("checksum", _CRC.size, len(rest))
    payload, (stored_crc,) = rest[: -_CRC.size], _CRC.unpack(rest[-_CRC.size :])
    crc = zlib.crc32(payload, crc)
    if stored_crc != crc:
        raise TokenFormatError(
            f"{name} is corrupted: checksum mismatch (stored {stored_crc:08x}, computed {crc:08x}); "
            "re-create or re-copy the file"
        )
    return CodedTokens(header, payload)


def _trailing(name: str, extra: int | None) -> TokenFormatError:
    amount = f"{extra} unexpected bytes" if extra is not None else "unexpected bytes"
    return TokenFormatError(
        f"{name} has {amount} after its checksum (two files glued together, or a corrupt header?)"
    )


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _parse_header(data: bytes | bytearray, name: str) -> TokenHeader:
    try:
        decoded = json.loads(
            bytes(data).decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_object
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TokenFormatError(
            f"{name}: the header is not valid UTF-8 JSON ({exc}); the file is corrupt"
        ) from None
    return TokenHeader.from_dict(decoded, name)


def _decode_packed(payload: bytes | bytearray, header: TokenHeader, name: str) -> NDArray[np.int64]:
    bits, count = header.bits, header.n_codebooks * header.n_frames
    used = (bits * count) % 8
    if used and payload[-1] >> used:
        raise TokenFormatError(
            f"{name}: the padding bits after the last code are not zero; the file is corrupt"
        )
    codes = unpack_bits(payload, bits, count).reshape(header.n_codebooks, header.n_frames)
    if count and int(codes.max()) >= header.codebook_size:
        bad = int(codes.max())
        raise TokenFormatError(
            f"{name}: code {bad} is >= codebook_size {header.codebook_size}; the file is corrupt"
        )
    return codes


def loads(data: bytes | bytearray | memoryview, max_bytes: int | None = None) -> TokenFile:
    """Read a token file from its bytes (see :func:`read_tokens`)."""
    return read_tokens(io.BytesIO(data), max_bytes, name="token data")


def loads_container(
    data: bytes | bytearray | memoryview, max_bytes: int | None = None
) -> TokenFile | CodedTokens:
    """Read a token file of any coding from its bytes (see :func:`read_container`)."""
    return read_container(io.BytesIO(data), max_bytes, name="token data")


def load_tokens(path: str | os.PathLike[str], max_bytes: int | None = None) -> TokenFile:
    """Read a token file from ``path``; OS errors become TokenFormatError ("cannot read ...")."""
    try:
        with open(path, "rb") as handle:
            return read_tokens(handle, max_bytes, name=str(path))
    except OSError as exc:
        raise TokenFormatError(f"cannot read token file {path}: {exc.strerror or exc}") from None


def load_container(path: str | os.PathLike[str], max_bytes: int | None = None) -> TokenFile | CodedTokens:
    """Read a token file of any coding from ``path`` (see :func:`read_container`)."""
    try:
        with open(path, "rb") as handle:
            return read_container(handle, max_bytes, name=str(path))
    except OSError as exc:
        raise TokenFormatError(f"cannot read token file {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# Pipeline formats: .npy, text, JSON lines


def _as_code_matrix(codes: Any, source: str) -> NDArray[Any]:
    """``[T]`` or ``[C, T]`` non-negative integers -> ``[C, T]`` (no copy when possible)."""
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise TokenFormatError(f"{source}: codes must be integers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise TokenFormatError(
            f"{source}: codes must be [n_frames] or [n_codebooks, n_frames], got {list(array.shape)}"
        )
    if array.size and int(array.min()) < 0:
        raise TokenFormatError(f"{source}: codes must be >= 0, found {int(array.min())}")
    return array


def write_npy(fileobj: BinaryIO, codes: NDArray[Any], codebook_size: int | None = None) -> None:
    """Save codes as a plain ``.npy`` array (``np.save``, no pickle).

    Shape ``[n_frames]`` for one codebook, else ``[n_codebooks, n_frames]`` (a ``[1, T]`` input is
    saved as ``[T]``). dtype int16 when ``codebook_size`` (default: the largest code + 1) is at most
    32768, else int32; codebook sizes over 2**31 are refused.
    """
    matrix = _as_code_matrix(codes, "write_npy")
    top = int(matrix.max()) + 1 if matrix.size else 1
    size = top if codebook_size is None else codebook_size
    if size < top:
        raise TokenFormatError(f"write_npy: code {top - 1} is outside [0, {codebook_size})")
    if size <= 1 << 15:
        dtype: type[np.signedinteger[Any]] = np.int16
    elif size <= 1 << 31:
        dtype = np.int32
    else:
        raise TokenFormatError(f"write_npy: codebook_size {size} does not fit int32; use a token file")
    out = matrix[0] if matrix.shape[0] == 1 else matrix
    np.save(fileobj, np.ascontiguousarray(out, dtype=dtype), allow_pickle=False)


def read_npy(fileobj: BinaryIO, max_bytes: int | None = None) -> NDArray[np.int64]:
    """Load codes saved by :func:`write_npy` (or any integer ``.npy``) -> int64 ``[n_codebooks, n_frames]``.

    Pickled (object) arrays, non-integer dtypes, other ranks, negative codes and arrays whose
    declared shape does not match the data raise TokenFormatError; nothing is allocated beyond
    what the file holds.
    """
    data = _Source(fileobj, "npy data", max_bytes).read_rest()
    buffer = io.BytesIO(data)
    try:
        # Check the declared shape against the bytes present before np.load allocates for it.
        version = np.lib.format.read_magic(buffer)
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = reader(buffer)
        if dtype.hasobject or dtype.kind not in "iu":
            raise TokenFormatError(
                f"npy data holds dtype {dtype}, not integer codes (pickled arrays are refused)"
            )
        if len(shape) not in (1, 2):
            raise TokenFormatError(
                f"npy data has shape {list(shape)}; expected [n_frames] or [n_codebooks, n_frames]"
            )
        if math.prod(shape) * dtype.itemsize != len(data) - buffer.tell():
            raise TokenFormatError(
                f"npy data: shape {list(shape)} of {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, "
                f"the file holds {len(data) - buffer.tell()}; it is truncated or corrupt"
            )
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except TokenFormatError:
        raise
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        raise TokenFormatError(f"npy data is not a readable .npy array of codes ({exc})") from None
    return np.ascontiguousarray(_as_code_matrix(array, "read_npy"), dtype=np.int64)


def format_txt(codes: NDArray[Any]) -> str:
    """Codes as text: space-separated integers, one line per codebook, each line ending in ``\\n``."""
    matrix = _as_code_matrix(codes, "format_txt")
    return "".join(" ".join(map(str, row.tolist())) + "\n" for row in matrix)


def parse_txt(text: str) -> NDArray[np.int64]:
    """Inverse of :func:`format_txt` -> int64 ``[n_codebooks, n_frames]`` (every line is a codebook)."""
    lines = text.splitlines()
    if not lines:
        raise TokenFormatError("token text is empty: expected one line of codes per codebook")
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append([int(token) for token in line.split()])
        except ValueError:
            raise TokenFormatError(f"token text line {number}: not space-separated integers") from None
    lengths = {len(row) for row in rows}
    if len(lengths) != 1:
        raise TokenFormatError(
            f"token text: lines have different lengths {sorted(lengths)}; one line per codebook"
        )
    try:
        matrix = np.array(rows, dtype=np.int64).reshape(len(rows), lengths.pop())
    except OverflowError:
        raise TokenFormatError("token text: a code does not fit in 64 bits") from None
    return np.asarray(_as_code_matrix(matrix, "parse_txt"), dtype=np.int64)


def jsonl_record(path: str, tokens: TokenFile) -> str:
    """One JSON line (no newline): ``{"path": ..., <header fields>, "codes": [...]}``.

    ``codes`` is a flat list for one codebook, else a list per codebook (as in :func:`write_npy`).
    """
    head = tokens.header.to_dict()
    clash = sorted({"path", "codes"} & set(head))
    if clash:
        raise TokenFormatError(f"jsonl_record: header extra fields {clash} clash with the record's own keys")
    codes = tokens.codes.tolist()
    record = {"path": path, **head, "codes": codes[0] if tokens.header.n_codebooks == 1 else codes}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def read_jsonl_record(line: str) -> tuple[str, TokenFile]:
    """Inverse of :func:`jsonl_record`: ``(path, tokens)``."""
    try:
        record = json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except (ValueError, RecursionError) as exc:
        raise TokenFormatError(f"token record is not valid JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("path"), str) or "codes" not in record:
        raise TokenFormatError('token record must be a JSON object with "path" (a string) and "codes"')
    path, codes = record.pop("path"), record.pop("codes")
    header = TokenHeader.from_dict(record, f"token record {path}")
    rows = [codes] if header.n_codebooks == 1 else codes
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and all(type(code) is int for code in row) for row in rows
    ):
        raise TokenFormatError(
            f"token record {path}: codes must be a list of integers (a list of lists for >1 codebook)"
        )
    if len({len(row) for row in rows}) > 1:
        raise TokenFormatError(f"token record {path}: codebooks have different lengths")
    try:
        matrix = np.array(rows, dtype=np.int64).reshape(len(rows), -1 if rows and rows[0] else 0)
    except OverflowError:
        raise TokenFormatError(f"token record {path}: a code does not fit in 64 bits") from None
    return path, TokenFile(header, _check_codes(matrix, header, f"token record {path}"))
