"""The API the command line calls: describe models; (later) encode, decode and convert files.

Everything here takes paths and plain values and returns named results, so the CLI stays a
thin layer of argument parsing and printing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vqspeech.checkpoint import load_checkpoint
from vqspeech.config import BUILTIN_RECIPES, Recipe, load_recipe
from vqspeech.model import VQVAE


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
    decoder: str  # decoder family
    decoder_receptive_field: int  # samples
    decoder_receptive_field_ms: float
    parameters: dict[str, int]
    n_speakers: int
    speakers: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str | None = None
    step: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_recipe(target: str) -> bool:
    return target in BUILTIN_RECIPES or Path(target).suffix.lower() in (".yaml", ".yml")


def describe(target: str | Path) -> ModelInfo:
    """Describe a built-in recipe name, a recipe YAML file or a checkpoint."""
    target = str(target)
    if _is_recipe(target):
        recipe = load_recipe(target)
        # Build on the meta device: exact parameter counts without allocating the weights.
        with torch.device("meta"):
            model = VQVAE(recipe.model)
        return _info(target, "recipe", recipe, model.parameter_counts(), [], None, None)
    ckpt = load_checkpoint(target)
    model = ckpt.build_model()
    step = ckpt.training.get("step")
    return _info(target, "checkpoint", ckpt.recipe, model.parameter_counts(), ckpt.speakers,
                 ckpt.fingerprint, int(step) if step is not None else None)


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
        decoder="wavenet",
        decoder_receptive_field=m.decoder.receptive_field,
        decoder_receptive_field_ms=m.decoder.receptive_field * ms,
        parameters=parameters,
        n_speakers=m.n_speakers,
        speakers=speakers,
        fingerprint=fingerprint,
        step=step,
    )
