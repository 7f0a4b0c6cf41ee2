"""Describing models, runs and token files for ``vqspeech info`` and ``vqspeech speakers``.

:func:`describe` takes a built-in recipe name, a recipe YAML or a checkpoint of any kind;
:func:`describe_tokens` a token file; :func:`describe_any` either. The results are plain frozen
dataclasses (:class:`ModelInfo`, :class:`RunInfo`, :class:`TokenInfo`) with ``to_json``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vqspeech import bundled
from vqspeech.checkpoint import (
    KIND_DESCRIPTIONS,
    VQVAE_KIND,
    checkpoint_from_payload,
    load_checkpoint,
    load_payload,
)
from vqspeech.config import BUILTIN_RECIPES, Recipe, load_recipe
from vqspeech.decoders import get_family
from vqspeech.errors import CheckpointError
from vqspeech.model import VQVAE
from vqspeech.prior_checkpoint import PRIOR_KIND, load_prior
from vqspeech.tokens import MAGIC, TOKEN_SUFFIX, CodedTokens, TokenHeader, load_container


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
    bundled: bool = False  # the model shipped with vqspeech (vqspeech.bundled)
    card: dict[str, Any] | None = None  # the bundled model's card: figures, good at / bad at

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
    if kind == PRIOR_KIND:
        prior = load_prior(source)  # the prior's own fingerprint is its integer twin's
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
    """Describe a built-in recipe name, a recipe YAML file or a checkpoint (of any kind).

    The bundled model's file (:func:`vqspeech.bundled.bundled_model_path`) comes with its card.
    """
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
    info = _info(
        target,
        "checkpoint",
        ckpt.recipe,
        model.parameter_counts(),
        ckpt.speakers,
        ckpt.fingerprint,
        int(step) if step is not None else None,
    )
    if not bundled.is_bundled(target):
        return info
    card = bundled.bundled_card()
    if card["fingerprint"] != info.fingerprint:
        raise CheckpointError(
            f"the bundled model's card describes model {card['fingerprint']}, but the bundled file is "
            f"model {info.fingerprint}; write both with vqspeech export --card"
        )
    return replace(info, bundled=True, card=card)


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
    decoder_rf = get_family(family).receptive_field(m)
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
