"""The API the command line calls: describe models and token files; encode, decode and convert files.

Everything here takes paths and plain values and returns named results, so the CLI stays a
thin layer of argument parsing and printing. The pieces, from small to large:

* :class:`Codec`: a checkpoint's model loaded once on a device, with its fingerprint and speakers.
  :meth:`Codec.encode_audio` turns float audio ``[T]`` into codes ``[1, F]`` (chunked, exact);
  :meth:`Codec.tokens` wraps them in a :class:`~vqspeech.tokens.TokenFile` with a full header.
* One file: :func:`encode_file` (audio -> tokens), :func:`write_token_output` (tokens -> a
  ``.vqt`` / ``.npy`` / ``.txt`` file or stream), :func:`decode_tokens` (tokens -> audio chunks
  at bounded memory), :func:`decode_file` and :func:`convert_file` (-> an audio file or stream).
* Entropy coding (issue 8): :func:`load_coding_prior` loads a trained prior once;
  ``encode_files(..., prior=...)`` writes token files arithmetic-coded with it
  (:mod:`vqspeech.entropy`), and ``decode_file`` / ``decode_files(..., prior=...)`` decode them.
  Plain (packed) token files decode with or without a prior (it is ignored for them), so a
  batch may mix both kinds.
* Many files: :func:`encode_files`, :func:`decode_files`, :func:`convert_files` and
  :func:`describe_files` run a list of :class:`Task` s and return one :class:`Outcome` per task.
  A failing input (missing, empty, not audio, NaN, corrupt tokens, another model's tokens,
  output exists, ...) becomes an outcome with an error message; the others still run. Errors that
  concern the whole batch (unknown target speaker, an existing jsonl output) raise before any
  input is processed.

Outputs are written to a temporary file next to the target and renamed into place, so a failure
never leaves a half-written file; an existing target is replaced only with ``overwrite=True``.
A stream target (stdout) gets exactly the bytes the file would hold (written to a temporary file
first, then copied). Decoded audio is written chunk by chunk as the WaveNet produces it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr
import torch

from vqspeech.audio import FORMATS, load_audio
from vqspeech.checkpoint import (
    KIND_DESCRIPTIONS,
    VQVAE_KIND,
    Checkpoint,
    checkpoint_from_payload,
    load_checkpoint,
    load_payload,
)
from vqspeech.config import BUILTIN_RECIPES, Recipe, load_recipe
from vqspeech.entropy import PmfSource
from vqspeech.entropy import decode_tokens as entropy_decode
from vqspeech.entropy import encode_tokens as entropy_encode
from vqspeech.errors import (
    CheckpointError,
    ConfigError,
    ModelMismatchError,
    OutputError,
    TokenFormatError,
    VQSpeechError,
)
from vqspeech.files import make_readable
from vqspeech.model import VQVAE
from vqspeech.tokens import (
    MAGIC,
    SPEAKER_VECTOR_KEY,
    CodedTokens,
    SpeakerVector,
    TokenFile,
    TokenHeader,
    format_txt,
    jsonl_record,
    load_container,
    write_npy,
    write_tokens,
)

#: File extension of vqspeech token files (format: ``docs/token-format.md``).
TOKEN_SUFFIX = ".vqt"
TokenFormat = Literal["vqt", "npy", "txt", "jsonl"]
#: Output formats of :func:`encode_files` and the file extension each one gets.
TOKEN_FORMATS: dict[str, str] = {"vqt": TOKEN_SUFFIX, "npy": ".npy", "txt": ".txt", "jsonl": ".jsonl"}
#: Latent frames per encoder pass (4096 x hop 64 = 16 s at 16 kHz): bounds encoder memory.
ENCODE_CHUNK_FRAMES = 4096
#: Latent frames per WaveNet push (250 x hop 64 = 1 s at 16 kHz): bounds decoder memory.
DECODE_CHUNK_FRAMES = 250
#: Audio samples per write when a file is copied to a stream.
_COPY_BYTES = 1 << 20


# --------------------------------------------------------------------------------------------
# Describing models and token files (``vqspeech info``)


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a model (``vqspeech info``). Times in ms, rates in Hz."""

    source: str
    kind: str  # "recipe" or "checkpoint"
    recipe: str
    sample_rate: int
    hop_length: int
    codebook_size: int
    n_codebooks: int
    token_rate: float  # tokens per second
    bitrate: float  # raw bits per second: token_rate * ceil(log2 K) * n_codebooks
    encoder_receptive_field: int  # samples
    encoder_receptive_field_ms: float
    decoder: str  # the default decoder family (config.decoders[0])
    decoders: list[str]  # every family the model can decode with
    decoder_receptive_field: int  # samples, of the default decoder
    decoder_receptive_field_ms: float
    parameters: dict[str, int]
    n_speakers: int
    speakers: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None
    step: int | None = None
    speaker_encoder: bool = False  # can take a voice from a recording (issue #7)
    speaker_vector_bits: int = 0  # bits of the quantised speaker vector each token file carries

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenInfo:
    """What a token file holds (``vqspeech info x.vqt``): its header, plus sizes and rates.

    ``duration`` is the source audio's length in seconds (``num_samples / sample_rate``);
    ``bitrate`` the bits per second of audio that decoding needs: the codes as stored (packed,
    or entropy-coded: the real payload bits) plus the quantised speaker vector
    (``speaker_vector_bits``, 0 without one); ``file_bitrate`` the whole file's (header and
    checksum included), both over ``duration`` (0 for an empty file). ``bits_per_code`` is the
    payload's bits per code (``ceil(log2 K)`` when packed; 0 for a file without codes).
    """

    source: str
    file_size: int  # bytes
    duration: float  # seconds
    bitrate: float  # bits/s of the stored codes (+ speaker vector)
    file_bitrate: float  # bits/s of the whole file
    header: TokenHeader
    kind: str = "tokens"
    speaker_vector_bits: int = 0
    bits_per_code: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            **self.header.to_dict(),
            "file_size": self.file_size,
            "duration": self.duration,
            "bitrate": self.bitrate,
            "file_bitrate": self.file_bitrate,
            "speaker_vector_bits": self.speaker_vector_bits,
            "bits_per_code": self.bits_per_code,
        }


@dataclass(frozen=True)
class RunInfo:
    """A checkpoint of another kind than the speech VQ-VAE: a prior, an image or video model.

    ``details`` holds what identifies it (fingerprints, the model it belongs to, its training
    step, parameter count, speakers) and its resolved config (``config``), as plain data.
    """

    source: str
    kind: str
    description: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "description": self.description, **self.details}


def _run_info(source: str, payload: dict[str, Any]) -> RunInfo:
    kind = str(payload["kind"])
    state = payload.get("model", {})
    details: dict[str, Any] = {
        "parameters": sum(int(t.numel()) for t in state.values() if isinstance(t, torch.Tensor)),
        "training_step": payload.get("training", {}).get("step"),
    }
    for key in ("fingerprint", "model_fingerprint", "vqvae_fingerprint"):
        if key in payload:
            details[key] = str(payload[key])
    if kind == "prior":
        from vqspeech.prior import load_prior  # the prior's own fingerprint is its integer twin's

        prior = load_prior(source)
        details["fingerprint"] = prior.fingerprint
        details["receptive_field_tokens"] = prior.config.receptive_field
    if payload.get("speakers"):
        details["speakers"] = [str(s.get("name")) for s in payload["speakers"]]
    details["config"] = payload.get("recipe", {})
    return RunInfo(source, kind, KIND_DESCRIPTIONS.get(kind, kind), details)


def _is_recipe(target: str) -> bool:
    return target in BUILTIN_RECIPES or Path(target).suffix.lower() in (".yaml", ".yml")


def is_token_file(target: str | os.PathLike[str]) -> bool:
    """True for a path ending in ``.vqt`` or a file that starts with the token-file magic."""
    path = Path(target)
    if path.suffix.lower() == TOKEN_SUFFIX:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def describe(target: str | Path) -> ModelInfo | RunInfo:
    """Describe a built-in recipe name, a recipe YAML file or a checkpoint (of any kind)."""
    target = str(target)
    if _is_recipe(target):
        recipe = load_recipe(target)
        # Build on the meta device: exact parameter counts without allocating the weights.
        with torch.device("meta"):
            model = VQVAE(recipe.model)
        return _info(target, "recipe", recipe, model.parameter_counts(), [], None, None)
    payload = load_payload(target, tuple(KIND_DESCRIPTIONS))
    if payload["kind"] != VQVAE_KIND:
        return _run_info(target, payload)
    ckpt = checkpoint_from_payload(payload, Path(target))
    model = ckpt.build_model()
    step = ckpt.training.get("step")
    return _info(
        target,
        "checkpoint",
        ckpt.recipe,
        model.parameter_counts(),
        ckpt.speakers,
        ckpt.fingerprint,
        int(step) if step is not None else None,
    )


def describe_tokens(path: str | os.PathLike[str]) -> TokenInfo:
    """Read and fully check a token file; its header, size, duration and bitrates.

    An entropy-coded file is described without its prior (its payload's real size counts).
    """
    tokens = load_container(path)
    h = tokens.header
    size = Path(path).stat().st_size
    duration = h.num_samples / h.sample_rate
    n_codes = h.n_codebooks * h.n_frames
    payload_bits = tokens.code_bits if isinstance(tokens, CodedTokens) else h.bits * n_codes
    code_bits = payload_bits + h.side_bits
    return TokenInfo(
        source=str(path),
        file_size=size,
        duration=duration,
        bitrate=code_bits / duration if duration else 0.0,
        file_bitrate=8 * size / duration if duration else 0.0,
        header=h,
        speaker_vector_bits=h.side_bits,
        bits_per_code=payload_bits / n_codes if n_codes else 0.0,
    )


def describe_any(target: str | Path) -> ModelInfo | RunInfo | TokenInfo:
    """:func:`describe_tokens` for a token file, else :func:`describe`."""
    return describe_tokens(target) if is_token_file(target) else describe(target)


def _info(
    source: str,
    kind: str,
    recipe: Recipe,
    parameters: dict[str, int],
    speakers: list[dict[str, Any]],
    fingerprint: str | None,
    step: int | None,
) -> ModelInfo:
    m = recipe.model
    ms = 1000.0 / m.sample_rate
    family = m.decoders[0]
    decoder_rf = (
        m.decoder.receptive_field if family == "wavenet" else m.spectrogram.receptive_field(m.hop_length)
    )
    return ModelInfo(
        source=source,
        kind=kind,
        recipe=recipe.name,
        sample_rate=m.sample_rate,
        hop_length=m.hop_length,
        codebook_size=m.quantizer.codebook_size,
        n_codebooks=1,
        token_rate=m.token_rate,
        bitrate=m.bitrate,
        encoder_receptive_field=m.encoder.receptive_field,
        encoder_receptive_field_ms=m.encoder.receptive_field * ms,
        decoder=family,
        decoders=list(m.decoders),
        decoder_receptive_field=decoder_rf,
        decoder_receptive_field_ms=decoder_rf * ms,
        parameters=parameters,
        n_speakers=m.n_speakers,
        speakers=speakers,
        fingerprint=fingerprint,
        step=step,
        speaker_encoder=m.speaker_encoder.enabled,
        speaker_vector_bits=m.speaker_dim * m.speaker_encoder.vector_bits if m.speaker_encoder.enabled else 0,
    )


def list_speakers(checkpoint: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The checkpoint's speaker table: ``[{"id": 0, "name": "p225", <metadata>...}, ...]`` in id order.

    Only the checkpoint's metadata is read; no model is built.
    """
    ckpt = load_checkpoint(Path(checkpoint))
    return [{**row, "id": i, "name": str(row["name"])} for i, row in enumerate(ckpt.speakers)]


# --------------------------------------------------------------------------------------------
# The loaded model


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        return torch.device("cuda")
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device("cpu")


@dataclass
class Codec:
    """A checkpoint's VQ-VAE, loaded once, in eval mode on ``device``; see :meth:`load`.

    Safe to share between threads: inference reads the weights and never changes them.
    """

    checkpoint: Checkpoint
    model: VQVAE
    device: torch.device
    fingerprint: str  # Checkpoint.fingerprint, computed once (it hashes every weight)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto") -> Codec:
        """Load checkpoint ``path`` on ``device`` (auto/cpu/cuda); CheckpointError if it is unusable."""
        target = resolve_device(device)
        ckpt = load_checkpoint(Path(path))
        model = ckpt.build_model(target)
        return cls(ckpt, model, target, ckpt.fingerprint)

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.model.hop_length

    @property
    def codebook_size(self) -> int:
        return self.model.config.quantizer.codebook_size

    @property
    def speaker_names(self) -> list[str]:
        return self.checkpoint.speaker_names

    def speaker_id(self, name: str) -> int:
        """Id of speaker ``name``; CheckpointError listing the known speakers if absent."""
        return self.checkpoint.speaker_id(name)

    @property
    def decoders(self) -> tuple[str, ...]:
        """The decoder families this model can decode with; the first is the default."""
        return tuple(self.model.config.decoders)

    def check_decoder(self, decoder: str | None) -> str:
        """``decoder`` (default: the model's first family); ConfigError if the model lacks it."""
        family = decoder or self.decoders[0]
        if family not in self.decoders:
            raise ConfigError(
                f"this model has no {family} decoder; it decodes with: {', '.join(self.decoders)}"
            )
        return family

    def encode_audio(self, audio: np.ndarray, chunk_frames: int | None = ENCODE_CHUNK_FRAMES) -> np.ndarray:
        """Mono float audio ``[T]`` at :attr:`sample_rate` -> int64 codes ``[1, ceil(T / hop_length)]``.

        Deterministic, and the same for every ``chunk_frames`` (None: the whole file in one pass);
        memory follows the chunk, not the file (see :meth:`VQVAE.encode`).
        """
        samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        codes = self.model.encode(samples[None], chunk_frames=chunk_frames)
        return codes.cpu().numpy().astype(np.int64, copy=False)

    @property
    def has_speaker_encoder(self) -> bool:
        """True when the model can take a voice from a recording (``--reference``, issue #7)."""
        return self.model.has_speaker_encoder

    def speaker_vector(self, recordings: Sequence[np.ndarray]) -> SpeakerVector:
        """Mono float recordings ``[T_i]`` of one voice -> its quantised speaker vector.

        Each recording's vector comes from the speaker encoder; several are averaged, then the
        mean goes on the ``vector_bits`` grid, exactly as a token file stores it, so converting
        with a reference and decoding a token file with the same reference sound the same.
        ConfigError for a model without a speaker encoder.
        """
        if not self.has_speaker_encoder:
            raise ConfigError(
                "this model has no speaker encoder, so it cannot take a voice from a recording; "
                "use --speaker NAME, or a model trained with --set model.speaker_encoder.enabled=true"
            )
        if not recordings:
            raise ConfigError("no reference recordings given")
        vectors = [
            self.model.encode_speaker(
                torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)[None]
            )
            for a in recordings
        ]
        mean = torch.cat(vectors).mean(dim=0).float().cpu().numpy()
        return SpeakerVector.quantize(mean, self.model.config.speaker_encoder.vector_bits)

    def reference_vector(self, paths: Sequence[str | os.PathLike[str]]) -> SpeakerVector:
        """:meth:`speaker_vector` of audio files ``paths`` (any format soundfile reads)."""
        if not self.has_speaker_encoder:
            self.speaker_vector([])  # the message about the model, before any file is read
        return self.speaker_vector([load_audio(p, self.sample_rate) for p in paths])

    def tokens(
        self,
        codes: np.ndarray,
        num_samples: int,
        speaker: str | None,
        speaker_vector: SpeakerVector | None = None,
    ) -> TokenFile:
        """Codes ``[1, F]`` from :meth:`encode_audio` plus their header (rates, sizes, fingerprint,
        and the source's quantised speaker vector when given)."""
        header = TokenHeader(
            sample_rate=self.sample_rate,
            hop_length=self.hop_length,
            codebook_size=self.codebook_size,
            n_codebooks=1,
            n_frames=int(codes.shape[1]),
            num_samples=num_samples,
            speaker=speaker,
            model_fingerprint=self.fingerprint,
            extra={SPEAKER_VECTOR_KEY: speaker_vector.to_json()} if speaker_vector is not None else {},
        )
        return TokenFile(header, codes)

    def infer_speaker(self, path: str | os.PathLike[str]) -> str | None:
        """The source speaker of audio file ``path``, if the name says so and the model knows it.

        The parent folder's name (VCTK and speaker-folder layouts: ``p225/p225_001.wav``), else
        the file name's prefix before the first ``_`` (``p225_001.wav``), else the nearest
        ancestor folder with a speaker's name (``p225/day2/take1.wav``); None otherwise.
        """
        return infer_speaker(path, self.speaker_names)


def infer_speaker(path: str | os.PathLike[str], known: Collection[str]) -> str | None:
    """See :meth:`Codec.infer_speaker`."""
    p = Path(path)
    prefix = p.name.split("_", 1)[0] if "_" in p.name else ""
    for candidate in (p.parent.name, prefix, *(a.name for a in p.parents[1:])):
        if candidate and candidate in known:
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Entropy-coding priors


@dataclass(frozen=True)
class CodingPrior:
    """A trained prior, loaded once, ready for entropy coding (:func:`load_coding_prior`).

    ``source`` is its exact integer model (:class:`~vqspeech.entropy.PmfSource`);
    ``model_fingerprint`` the VQ-VAE whose codes it models; ``speakers`` its speaker names, in
    index order. Safe to share between threads (the integer model is read-only).
    """

    source: PmfSource
    model_fingerprint: str
    speakers: tuple[str, ...]
    path: str = ""

    @property
    def fingerprint(self) -> str:
        return self.source.fingerprint

    def speaker_index(self, name: str | None) -> int:
        """The prior's index of speaker ``name``; -1 (its "unknown speaker") for None or a name
        it does not know (coding still works, only a little less well)."""
        return self.speakers.index(name) if name in self.speakers else -1

    def check_model(self, codec: Codec) -> None:
        """ModelMismatchError unless this prior models ``codec``'s codes."""
        if self.model_fingerprint != codec.fingerprint:
            raise ModelMismatchError(
                f"prior {self.path} was trained on the codes of model {self.model_fingerprint}, not on "
                f"this model's ({codec.fingerprint}); use the prior trained with this model"
            )


def load_coding_prior(path: str | os.PathLike[str]) -> CodingPrior:
    """Load a prior checkpoint (``vqspeech train`` of a prior recipe) for entropy coding;
    CheckpointError if it is missing, damaged or not a prior."""
    from vqspeech.prior import load_prior  # vqspeech.prior imports this module: import on use

    ckpt = load_prior(Path(path))
    return CodingPrior(ckpt.integer(), ckpt.model_fingerprint, tuple(ckpt.speaker_names), str(path))


def _decoded(tokens: TokenFile | CodedTokens, prior: CodingPrior | None, name: str) -> TokenFile:
    """The codes of a token file: as they are when packed, entropy-decoded with ``prior`` else."""
    if isinstance(tokens, TokenFile):
        return tokens
    return entropy_decode(tokens, prior.source if prior is not None else None, name)


# --------------------------------------------------------------------------------------------
# One file


def encode_file(
    codec: Codec,
    path: str | os.PathLike[str],
    *,
    speaker: str | None = None,
    chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
) -> TokenFile:
    """Encode an audio file (any format/rate/channels soundfile reads) to tokens.

    ``speaker`` is the source speaker written to the header (default: :meth:`Codec.infer_speaker`,
    possibly None). A model with a speaker encoder also writes the source's quantised speaker
    vector (``speaker_vector``), so decoding gives back this voice even if the model never heard
    it in training. AudioError for a missing, empty, zero-sample, non-audio or NaN/inf file; pure
    silence is fine.
    """
    audio = load_audio(path, codec.sample_rate)
    codes = codec.encode_audio(audio, chunk_frames)
    vector = codec.speaker_vector([audio]) if codec.has_speaker_encoder else None
    return codec.tokens(
        codes, int(audio.shape[0]), speaker if speaker is not None else codec.infer_speaker(path), vector
    )


def _suffix_error(target: Path, allowed: Collection[str]) -> OutputError:
    return OutputError(
        f"{target}: unknown output extension {target.suffix!r}; use one of {', '.join(sorted(allowed))}"
    )


def write_token_output(
    tokens: TokenFile | CodedTokens,
    target: str | os.PathLike[str] | BinaryIO,
    fmt: str = "vqt",
    *,
    overwrite: bool = False,
) -> None:
    """Write tokens as a token file (``vqt``), a ``.npy`` array or text (``txt``).

    A path is written atomically (temp file + rename); an existing one is replaced only with
    ``overwrite``. A binary stream gets exactly the bytes the file would hold. (For ``jsonl`` see
    :func:`encode_files`.) Entropy-coded tokens only go to a token file.
    """
    if fmt not in ("vqt", "npy", "txt"):
        raise ConfigError(
            f"unknown token output format {fmt!r}; use vqt, npy or txt (jsonl via encode_files)"
        )
    if isinstance(tokens, CodedTokens) and fmt != "vqt":
        raise ConfigError(f"entropy-coded tokens are written as token files (vqt), not {fmt}")

    def write(handle: BinaryIO) -> None:
        if fmt == "vqt" or isinstance(tokens, CodedTokens):
            write_tokens(handle, tokens)
        elif fmt == "npy":
            write_npy(handle, tokens.codes, tokens.header.codebook_size)
        else:
            handle.write(format_txt(tokens.codes).encode("utf-8"))

    with _output(target, overwrite) as path, open(path, "wb") as handle:
        write(handle)


def check_tokens(
    codec: Codec, tokens: TokenFile | CodedTokens, *, force: bool = False, name: str = "tokens"
) -> None:
    """Raise unless ``codec`` can decode ``tokens`` (only the header is read, so an entropy-coded
    file is checked before its prior decodes it).

    Rates, hop length, codebook size and codebook count must match the model (always); the
    header's ``model_fingerprint`` must equal the model's unless ``force`` (tokens of another
    model decode to noise or worse, so this is refused by default: ModelMismatchError).
    """
    h = tokens.header
    mine = (codec.sample_rate, codec.hop_length, codec.codebook_size, 1)
    theirs = (h.sample_rate, h.hop_length, h.codebook_size, h.n_codebooks)
    if theirs != mine:
        raise ModelMismatchError(
            f"{name}: tokens are {h.sample_rate} Hz, hop {h.hop_length}, {h.n_codebooks} x {h.codebook_size} "
            f"codes but the model is {mine[0]} Hz, hop {mine[1]}, 1 x {mine[2]} codes; decode them with the "
            "model that made them"
        )
    if h.model_fingerprint != codec.fingerprint and not force:
        raise ModelMismatchError(
            f"{name}: tokens were made by model {h.model_fingerprint}, not by this one "
            f"({codec.fingerprint}); decode with that model, or pass --force to decode anyway"
        )
    if h.num_samples > h.n_frames * h.hop_length:
        raise TokenFormatError(
            f"{name}: header says {h.num_samples} samples but {h.n_frames} frames hold only "
            f"{h.n_frames * h.hop_length}; the file is corrupt"
        )


#: Whom to decode as: a named speaker of the model's table, or a (quantised) speaker vector.
Voice = str | SpeakerVector


def _check_voice_choice(speaker: str | None, reference: object) -> None:
    if speaker is not None and reference:
        raise ConfigError("give a target speaker or a reference recording, not both")


def decode_speaker(
    codec: Codec,
    tokens: TokenFile,
    speaker: str | None = None,
    *,
    reference: SpeakerVector | None = None,
    name: str = "tokens",
) -> Voice:
    """The voice to decode with, first that applies:

    1. ``speaker`` (a name the model must know) or ``reference`` (a vector from
       :meth:`Codec.reference_vector`); not both;
    2. the header's ``speaker_vector`` (the source's voice, seen in training or not), when the
       model has a speaker encoder;
    3. the header's ``speaker`` (token files without a vector, e.g. from older models).

    CheckpointError when none applies: no vector, and the header names no speaker or one the
    model does not know.
    """
    _check_voice_choice(speaker, reference)
    if speaker is not None:
        codec.speaker_id(speaker)
        return speaker
    if reference is not None:
        return reference
    vector = tokens.header.speaker_vector
    if vector is not None and codec.has_speaker_encoder:
        return vector
    source = tokens.header.speaker
    known = ", ".join(codec.speaker_names)
    if source is None:
        raise CheckpointError(
            f"{name}: the tokens do not say who spoke; pass --speaker NAME (known: {known})"
        )
    if source not in codec.speaker_names:
        raise CheckpointError(
            f"{name}: source speaker {source!r} is not one this model knows; "
            f"pass --speaker NAME (known: {known})"
        )
    return source


def decode_tokens(
    codec: Codec,
    tokens: TokenFile,
    speaker: Voice,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    decoder: str | None = None,
    chunk_frames: int = DECODE_CHUNK_FRAMES,
) -> Iterator[np.ndarray]:
    """Generate audio for ``tokens`` in ``speaker``'s voice: float32 chunks ``[n]`` at the model rate.

    ``speaker`` is a name from the model's table or a :class:`~vqspeech.tokens.SpeakerVector`
    (its dequantised values are the decoders' global conditioning).

    The chunks, concatenated, are exactly ``num_samples`` long and equal one-shot decoding: the
    sampling noise comes from a generator seeded with ``seed`` (same tokens, speaker, seed and
    temperature -> the same audio, whatever ``chunk_frames`` is). ``temperature=0`` is greedy.
    ``decoder`` picks the decoder family (default: the model's first; the spectrogram family's
    Griffin-Lim phases come from the same seeded generator). Call :func:`check_tokens` first.
    Memory follows ``chunk_frames``, not the file's length.
    """
    family = codec.check_decoder(decoder)
    sid = voice_tensor(codec, speaker)
    codes = torch.from_numpy(tokens.codes).to(codec.device)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    remaining = tokens.header.num_samples
    for chunk in codec.model.iter_decode(codes, sid, temperature, generator, chunk_frames, family):
        piece = chunk[0, :remaining].float().cpu().numpy()
        remaining -= piece.shape[0]
        if piece.shape[0]:
            yield piece


def voice_tensor(codec: Codec, voice: Voice) -> torch.Tensor:
    """What the model's decoders take for ``voice``: speaker id ``[1]`` (int64) or vector ``[1, D]``."""
    if isinstance(voice, str):
        return torch.tensor([codec.speaker_id(voice)], device=codec.device)
    dim = codec.model.config.speaker_dim
    if len(voice.codes) != dim:
        raise ModelMismatchError(
            f"the speaker vector has {len(voice.codes)} values but this model's speakers have {dim}; "
            "use the model that made it"
        )
    return torch.from_numpy(voice.values).to(codec.device)[None]


ProgressFn = Callable[[float, float], None]
"""``(seconds_done, seconds_total)`` of the file in progress; called from the working thread."""


def _write_audio(
    chunks: Iterator[np.ndarray],
    target: str | os.PathLike[str] | BinaryIO,
    sample_rate: int,
    out_rate: int | None,
    total_samples: int,
    *,
    overwrite: bool,
    on_progress: ProgressFn | None,
) -> None:
    """Write float chunks at ``sample_rate`` to ``target`` progressively, resampled to ``out_rate``.

    The format comes from the target's extension (``audio.FORMATS``: 16-bit WAV/FLAC, Vorbis);
    streams get WAV. Resampling is streamed (soxr), equal to resampling the whole signal.
    """
    path = Path(os.fspath(target)) if isinstance(target, (str, os.PathLike)) else None
    suffix = path.suffix.lower() if path is not None else ".wav"
    if path is not None and suffix not in FORMATS:
        raise _suffix_error(path, FORMATS)
    fmt, subtype = FORMATS[suffix]
    rate = out_rate or sample_rate
    resampler = (
        soxr.ResampleStream(sample_rate, rate, 1, dtype="float32", quality="HQ")
        if rate != sample_rate
        else None
    )
    pcm = subtype.startswith("PCM")
    done = 0
    with _output(target, overwrite) as path:
        try:
            with sf.SoundFile(path, "w", samplerate=rate, channels=1, format=fmt, subtype=subtype) as out:
                for chunk in chunks:
                    done += chunk.shape[0]
                    piece = resampler.resample_chunk(chunk) if resampler is not None else chunk
                    # libsndfile wraps around on overflow when converting float to int: clip first.
                    out.write(np.clip(piece, -1.0, 1.0) if pcm else piece)
                    if on_progress is not None:
                        on_progress(done / sample_rate, total_samples / sample_rate)
                if resampler is not None:
                    tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                    out.write(np.clip(tail, -1.0, 1.0) if pcm else tail)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise OutputError(
                f"{_label(target)}: cannot write {fmt} audio ({' '.join(str(exc).split())}); check free space"
            ) from None


def decode_file(
    codec: Codec,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | BinaryIO,
    *,
    speaker: str | None = None,
    reference: SpeakerVector | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    sample_rate: int | None = None,
    decoder: str | None = None,
    force: bool = False,
    overwrite: bool = False,
    chunk_frames: int = DECODE_CHUNK_FRAMES,
    on_progress: ProgressFn | None = None,
    prior: CodingPrior | None = None,
) -> float:
    """Decode token file ``source`` to audio ``target`` (path or binary stream); returns seconds.

    ``speaker`` (a named speaker) or ``reference`` (a voice from :meth:`Codec.reference_vector`)
    swaps the voice (default: the header's speaker vector, else its named speaker; see
    :func:`decode_speaker`); ``sample_rate``
    resamples the output (default: the model's rate); ``decoder`` picks the decoder family;
    ``force`` decodes tokens of another model. An entropy-coded file needs ``prior``, the one it
    was coded with (ConfigError / ModelMismatchError naming it otherwise); a packed file ignores
    it. See :func:`check_tokens`, :func:`decode_speaker`, :func:`decode_tokens`.
    """
    name = str(source)
    if isinstance(target, (str, os.PathLike)):
        _refuse_existing(Path(target), overwrite)
    container = load_container(source)
    check_tokens(codec, container, force=force, name=name)
    tokens = _decoded(container, prior, name)
    voice = decode_speaker(codec, tokens, speaker, reference=reference, name=name)
    chunks = decode_tokens(
        codec, tokens, voice, seed=seed, temperature=temperature, decoder=decoder, chunk_frames=chunk_frames
    )
    n = tokens.header.num_samples
    _write_audio(
        chunks, target, codec.sample_rate, sample_rate, n, overwrite=overwrite, on_progress=on_progress
    )
    return n / codec.sample_rate


def convert_file(
    codec: Codec,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | BinaryIO,
    *,
    speaker: str | None = None,
    reference: SpeakerVector | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    sample_rate: int | None = None,
    decoder: str | None = None,
    overwrite: bool = False,
    encode_chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
    chunk_frames: int = DECODE_CHUNK_FRAMES,
    on_progress: ProgressFn | None = None,
) -> float:
    """Voice conversion: encode audio file ``source``, decode it as ``speaker`` (a named speaker)
    or as the voice of ``reference`` (from :meth:`Codec.reference_vector`) to ``target``.

    Exactly one of the two (ConfigError otherwise). Equals :func:`encode_file` then
    :func:`decode_file` with the same ``speaker`` / ``reference`` and ``seed``. Returns the
    audio's duration in seconds.
    """
    voice = _target_voice(codec, speaker, reference)
    if isinstance(target, (str, os.PathLike)):
        _refuse_existing(Path(target), overwrite)
    tokens = encode_file(codec, source, chunk_frames=encode_chunk_frames)
    chunks = decode_tokens(
        codec, tokens, voice, seed=seed, temperature=temperature, decoder=decoder, chunk_frames=chunk_frames
    )
    n = tokens.header.num_samples
    _write_audio(
        chunks, target, codec.sample_rate, sample_rate, n, overwrite=overwrite, on_progress=on_progress
    )
    return n / codec.sample_rate


def _target_voice(codec: Codec, speaker: str | None, reference: SpeakerVector | None) -> Voice:
    """The one target voice of a conversion: a known ``speaker`` or a ``reference`` vector."""
    _check_voice_choice(speaker, reference)
    if speaker is not None:
        codec.speaker_id(speaker)
        return speaker
    if reference is None:
        raise ConfigError("voice conversion needs a target: a speaker name or a reference recording")
    voice_tensor(codec, reference)  # the right size for this model
    return reference


def _batch_voice(
    codec: Codec, speaker: str | None, reference: Sequence[str | os.PathLike[str]], *, required: bool
) -> SpeakerVector | None:
    """Check a batch's voice once, before any input runs; the reference vector (read once) or None.

    ``required``: conversion needs a target (a known speaker or a reference); decoding may
    fall back on each token file's own voice.
    """
    _check_voice_choice(speaker, reference)
    vector = codec.reference_vector(reference) if reference else None
    if required:
        _target_voice(codec, speaker, vector)
    elif speaker is not None:
        codec.speaker_id(speaker)
    return vector


# --------------------------------------------------------------------------------------------
# Atomic outputs


def _label(target: str | os.PathLike[str] | BinaryIO) -> str:
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    return str(getattr(target, "name", "<stream>"))


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputError(f"{path}: output already exists; pass --overwrite to replace it")
    if path.is_dir():
        raise OutputError(f"{path}: output is a folder; give a file name")


def _temp_next_to(path: Path | None) -> Path:
    """A new empty temp file in ``path``'s folder (created if missing), or in the system temp
    folder for None; OutputError if the folder cannot be written."""
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{path.name if path else 'vqspeech'}.", suffix=".tmp", dir=path.parent if path else None
        )
        os.close(fd)
    except OSError as exc:
        folder = path.parent if path is not None else Path(tempfile.gettempdir())
        label = path if path is not None else "<stream>"
        raise OutputError(
            f"{label}: cannot write to {folder} ({exc.strerror or exc}); check that it is a writable folder"
        ) from None
    return Path(name)


@contextlib.contextmanager
def _output(target: str | os.PathLike[str] | BinaryIO, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``target``.

    For a path: the temp file is in the target's folder (created if missing) and renamed over it,
    so a reader never sees a half-written file. For a binary stream: the finished temp file is
    copied to it (so the stream gets the file's exact bytes). On failure the temp file is removed.
    """
    path = Path(os.fspath(target)) if isinstance(target, (str, os.PathLike)) else None
    stream = None if isinstance(target, (str, os.PathLike)) else target
    if path is not None:
        _refuse_existing(path, overwrite)
    tmp = _temp_next_to(path)
    try:
        yield tmp
        if path is not None:
            make_readable(tmp)
            os.replace(tmp, path)
        elif stream is not None:
            with open(tmp, "rb") as handle:
                shutil.copyfileobj(handle, stream, _COPY_BYTES)
            stream.flush()
    except OSError as exc:
        raise OutputError(
            f"{_label(target)}: cannot write the output ({exc.strerror or exc}); "
            "check free space and permissions"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


class _JsonlSink:
    """One JSON line per input, to a file (temp file, renamed at :meth:`close`) or a stream."""

    def __init__(self, target: Path | BinaryIO, overwrite: bool) -> None:
        self._count = 0
        self._path: Path | None = None
        self._tmp: Path | None = None
        if isinstance(target, Path):
            _refuse_existing(target, overwrite)
            self._path, self._tmp = target, _temp_next_to(target)
            self._handle: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 (closed in close())
        else:
            self._handle = target

    def add(self, label: str, tokens: TokenFile) -> None:
        try:
            self._handle.write(jsonl_record(label, tokens).encode("utf-8") + b"\n")
            self._handle.flush()
        except OSError as exc:
            raise OutputError(f"{self._path or '<stream>'}: cannot write ({exc.strerror or exc})") from None
        self._count += 1

    def close(self, ok: bool = True) -> None:
        """Finish: a file target appears only if ``ok`` and at least one record was written."""
        if self._path is None or self._tmp is None:
            return
        self._handle.close()
        try:
            if ok and self._count:
                make_readable(self._tmp)
                os.replace(self._tmp, self._path)
        except OSError as exc:
            raise OutputError(f"{self._path}: cannot write ({exc.strerror or exc})") from None
        finally:
            self._tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Many files


@dataclass(frozen=True)
class Task:
    """One input and where its result goes: ``target`` None means the batch's stream (stdout).

    ``label`` names the input in messages and jsonl records (default: the source path).
    """

    source: Path
    target: Path | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or str(self.source)


@dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Task`: ``error`` is None on success; ``seconds`` of audio."""

    task: Task
    error: str | None = None
    seconds: float = 0.0
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None


OutcomeFn = Callable[[Outcome], None]
TaskProgressFn = Callable[[Task, float, float], None]
"""``(task, seconds_done, seconds_total)``; called from the working thread."""


def _reason(exc: VQSpeechError, task: Task) -> str:
    """The error message, without a leading "<source>: " (callers prefix the input's name)."""
    text = " ".join(str(exc).split())
    for prefix in (f"{task.source}: ", f"{task.name}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _run(
    tasks: Sequence[Task],
    work: Callable[[Task], tuple[float, Any]],
    *,
    workers: int = 1,
    on_outcome: OutcomeFn | None = None,
    finish: Callable[[Task, Any], None] | None = None,
) -> list[Outcome]:
    """Run ``work`` on every task (``workers`` threads, results in task order); never stops early.

    A task whose target repeats an earlier task's fails without running. ``finish`` runs on the
    calling thread, in task order, after a successful ``work`` (e.g. appending a jsonl record).
    """
    owners: dict[Path, Task] = {}
    clashes: dict[int, str] = {}
    for i, task in enumerate(tasks):
        if task.target is None:
            continue
        key = Path(os.path.abspath(task.target))
        if key in owners:
            clashes[i] = (
                f"output {task.target} is also the output of {owners[key].name}; rename one, or give folders"
            )
        else:
            owners[key] = task

    def guarded(index: int) -> Outcome:
        task = tasks[index]
        if index in clashes:
            return Outcome(task, error=clashes[index])
        try:
            seconds, value = work(task)
        except VQSpeechError as exc:
            return Outcome(task, error=_reason(exc, task))
        return Outcome(task, seconds=seconds, value=value)

    outcomes: list[Outcome] = []
    executor = None
    if workers > 1 and len(tasks) > 1:
        # Parallelism comes from the files: split the intra-op threads among the workers, or
        # workers x threads oversubscribe the cores (OpenMP spin-waits then cost 10x or more).
        threads = max(1, torch.get_num_threads() // workers)
        executor = ThreadPoolExecutor(
            max_workers=workers, initializer=torch.set_num_threads, initargs=(threads,)
        )
    try:
        results = executor.map(guarded, range(len(tasks))) if executor else map(guarded, range(len(tasks)))
        for outcome in results:
            if outcome.ok and finish is not None:
                try:
                    finish(outcome.task, outcome.value)
                except VQSpeechError as exc:
                    outcome = Outcome(outcome.task, error=_reason(exc, outcome.task))
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _destination(task: Task, stream: BinaryIO | None) -> Path | BinaryIO:
    """Where ``task``'s result goes: its target file, else the batch's stream."""
    if task.target is not None:
        return task.target
    if stream is None:
        raise ValueError(f"{task.name}: a task without a target needs a stream")
    return stream


def _check_stream_tasks(tasks: Sequence[Task], stream: BinaryIO | None, what: str) -> None:
    streamed = [t for t in tasks if t.target is None]
    if streamed and stream is None:
        raise ValueError(f"{what}: tasks without a target need a stream")
    if streamed and len(tasks) > 1:
        raise ValueError(f"{what}: a stream takes exactly one result, got {len(tasks)} tasks")


def encode_files(
    codec: Codec,
    tasks: Sequence[Task],
    *,
    fmt: str = "vqt",
    overwrite: bool = False,
    stream: BinaryIO | None = None,
    jsonl: Path | None = None,
    speaker: str | None = None,
    workers: int = 1,
    chunk_frames: int | None = ENCODE_CHUNK_FRAMES,
    on_outcome: OutcomeFn | None = None,
    prior: CodingPrior | None = None,
) -> list[Outcome]:
    """Encode every task's audio file; one :class:`Outcome` per task, in order.

    ``fmt`` ``vqt`` / ``npy`` / ``txt``: each task's ``target`` file (or ``stream`` for the single
    task without one). ``jsonl``: one record per input (``path`` = the task's label) to the file
    ``jsonl`` (atomic, refused if it exists without ``overwrite``) or else to ``stream``.
    ``speaker`` sets the header's source speaker for all inputs (default: inferred per file).
    ``workers`` threads encode in parallel (outputs are written in any order, jsonl records in
    task order). ``prior``: arithmetic-code each token file with it (``vqt`` only; the prior must
    be the one trained on ``codec``'s codes, else ModelMismatchError before any input runs).
    """
    if fmt not in TOKEN_FORMATS:
        raise ConfigError(f"unknown token format {fmt!r}; use one of {', '.join(TOKEN_FORMATS)}")
    if prior is not None:
        if fmt != "vqt":
            raise ConfigError(f"--prior entropy-codes token files (vqt); it does not apply to {fmt} output")
        prior.check_model(codec)
    if speaker is not None:
        codec.speaker_id(speaker)
    sink: _JsonlSink | None = None
    if fmt == "jsonl":
        records: Path | BinaryIO | None = jsonl if jsonl is not None else stream
        if records is None:
            raise ValueError("encode_files: jsonl output needs a jsonl path or a stream")
        sink = _JsonlSink(records, overwrite)
    else:
        _check_stream_tasks(tasks, stream, "encode_files")

    def work(task: Task) -> tuple[float, Any]:
        if sink is None and task.target is not None:
            _refuse_existing(task.target, overwrite)  # before the work, not after it
        tokens = encode_file(codec, task.source, speaker=speaker, chunk_frames=chunk_frames)
        if sink is None:
            coded = (
                entropy_encode(tokens, prior.source, prior.speaker_index(tokens.header.speaker))
                if prior is not None
                else tokens
            )
            write_token_output(coded, _destination(task, stream), fmt, overwrite=overwrite)
        return tokens.header.num_samples / codec.sample_rate, tokens if sink is not None else None

    def finish(task: Task, tokens: TokenFile) -> None:
        if sink is not None:
            sink.add(task.name, tokens)

    ok = False
    try:
        outcomes = _run(tasks, work, workers=workers, on_outcome=on_outcome, finish=finish)
        ok = True
    finally:
        if sink is not None:
            sink.close(ok)
    return outcomes


def decode_files(
    codec: Codec,
    tasks: Sequence[Task],
    *,
    speaker: str | None = None,
    reference: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    temperature: float = 1.0,
    sample_rate: int | None = None,
    decoder: str | None = None,
    force: bool = False,
    overwrite: bool = False,
    stream: BinaryIO | None = None,
    workers: int = 1,
    chunk_frames: int = DECODE_CHUNK_FRAMES,
    on_outcome: OutcomeFn | None = None,
    on_progress: TaskProgressFn | None = None,
    prior: CodingPrior | None = None,
) -> list[Outcome]:
    """:func:`decode_file` on every task (token file -> audio); one :class:`Outcome` per task.

    An unknown ``speaker`` raises (CheckpointError listing the known ones) before any input runs.
    ``reference``: audio files of the voice to decode in (averaged, see
    :meth:`Codec.reference_vector`), read once before any input; not with ``speaker``.
    Each file is decoded with its own generator seeded with ``seed``, so a file's audio does not
    depend on the other inputs or on ``workers``. ``prior`` decodes entropy-coded inputs (packed
    ones ignore it).
    """
    vector = _batch_voice(codec, speaker, reference, required=False)
    codec.check_decoder(decoder)
    _check_stream_tasks(tasks, stream, "decode_files")

    def work(task: Task) -> tuple[float, Any]:
        seconds = decode_file(
            codec,
            task.source,
            _destination(task, stream),
            speaker=speaker,
            reference=vector,
            seed=seed,
            temperature=temperature,
            sample_rate=sample_rate,
            decoder=decoder,
            force=force,
            overwrite=overwrite,
            chunk_frames=chunk_frames,
            on_progress=_bind(on_progress, task),
            prior=prior,
        )
        return seconds, None

    return _run(tasks, work, workers=workers, on_outcome=on_outcome)


def convert_files(
    codec: Codec,
    tasks: Sequence[Task],
    *,
    speaker: str | None = None,
    reference: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    temperature: float = 1.0,
    sample_rate: int | None = None,
    decoder: str | None = None,
    overwrite: bool = False,
    stream: BinaryIO | None = None,
    workers: int = 1,
    chunk_frames: int = DECODE_CHUNK_FRAMES,
    on_outcome: OutcomeFn | None = None,
    on_progress: TaskProgressFn | None = None,
) -> list[Outcome]:
    """:func:`convert_file` on every task (audio -> ``speaker``'s voice, or the voice of the
    ``reference`` recordings, read and averaged once); one :class:`Outcome` each.

    Gives the same audio as :func:`encode_files` then :func:`decode_files` with the same
    ``speaker`` or ``reference`` and ``seed``.
    """
    vector = _batch_voice(codec, speaker, reference, required=True)
    codec.check_decoder(decoder)
    _check_stream_tasks(tasks, stream, "convert_files")

    def work(task: Task) -> tuple[float, Any]:
        seconds = convert_file(
            codec,
            task.source,
            _destination(task, stream),
            speaker=speaker,
            reference=vector,
            seed=seed,
            temperature=temperature,
            sample_rate=sample_rate,
            decoder=decoder,
            overwrite=overwrite,
            chunk_frames=chunk_frames,
            on_progress=_bind(on_progress, task),
        )
        return seconds, None

    return _run(tasks, work, workers=workers, on_outcome=on_outcome)


def describe_files(targets: Sequence[str]) -> list[Outcome]:
    """:func:`describe_any` on each target; ``Outcome.value`` is a ModelInfo or TokenInfo."""
    tasks = [Task(Path(t), label=t) for t in targets]
    return _run(tasks, lambda task: (0.0, describe_any(task.name)))


def _bind(on_progress: TaskProgressFn | None, task: Task) -> ProgressFn | None:
    if on_progress is None:
        return None
    return lambda done, total: on_progress(task, done, total)
