"""A trained prior on disk and in memory: its recipe, checkpoint, and what entropy coding needs.

Below :mod:`vqspeech.inference` (which codes token files with it) and :mod:`vqspeech.prior`
(which trains and samples with it), so neither imports the other. :class:`PriorCheckpoint` is
the one loaded prior: the float network (:meth:`~PriorCheckpoint.build`, for training and
sampling), the exact integer twin (:meth:`~PriorCheckpoint.integer`, for coding), the VQ-VAE's
speaker table and fingerprint, so a prior is never used with another model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqspeech.checkpoint import load_payload, save_payload
from vqspeech.entropy import decode_tokens, encode_tokens
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError
from vqspeech.nn.prior import CodePrior
from vqspeech.nn.prior_int import IntegerCodePrior
from vqspeech.prior_config import UNKNOWN_SPEAKER, PriorConfig, PriorRecipe, check_prior_config
from vqspeech.recipe_io import from_dict, require, to_dict
from vqspeech.tokens import CodedTokens, TokenFile

PRIOR_KIND = "prior"


def check_prior_recipe(recipe: PriorRecipe) -> PriorRecipe:
    """ConfigError naming the first bad value of ``recipe``."""
    check_prior_config(recipe.model)
    checks = [
        (recipe.segment_tokens >= 2, "segment_tokens must be at least 2"),
        (0.0 <= recipe.speaker_dropout <= 1.0, "speaker_dropout must be in [0, 1]"),
        (recipe.valid_integer_utterances >= 0, "valid_integer_utterances must be >= 0"),
        (recipe.train.batch_size >= 1, "train.batch_size must be at least 1"),
    ]
    require(checks)
    return recipe


@dataclass
class PriorCheckpoint:
    """A loaded prior: recipe, float weights, the VQ-VAE's speaker table and fingerprint.

    The exact integer model is built once, when the checkpoint is made (it checks the weights),
    so one loaded prior is safe to share between threads for coding.
    """

    recipe: PriorRecipe
    speakers: list[dict[str, Any]]
    model_fingerprint: str  # Checkpoint.fingerprint of the VQ-VAE whose codes this prior models
    state: dict[str, Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    _integer: IntegerCodePrior = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._integer = IntegerCodePrior.from_state_dict(self.config, self.state)

    @property
    def config(self) -> PriorConfig:
        return self.recipe.model

    def build(self, device: torch.device | str = "cpu") -> CodePrior:
        """The float prior with these weights, in eval mode, on ``device``."""
        model = CodePrior(self.config)
        try:
            model.load_state_dict(self.state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(
                f"{self.path}: prior weights do not fit the saved config ({first})"
            ) from None
        return model.to(device).eval()

    def integer(self) -> IntegerCodePrior:
        """The exact integer prior: the :class:`~vqspeech.entropy.PmfSource` for coding."""
        return self._integer

    @property
    def fingerprint(self) -> str:
        """The integer prior's fingerprint (16 hex digits over its integer weights and config)."""
        return self._integer.fingerprint

    @property
    def speaker_names(self) -> list[str]:
        return [str(s["name"]) for s in self.speakers]

    def speaker_index(self, name: str | None) -> int:
        """Speaker id of ``name`` for the prior; None -> :data:`UNKNOWN_SPEAKER` (-1).

        CheckpointError for a name the prior does not know (its table is its VQ-VAE's, so a
        speaker the model knows is always known here).
        """
        if name is None:
            return UNKNOWN_SPEAKER
        names = self.speaker_names
        if name not in names:
            raise CheckpointError(f"unknown speaker {name!r}; this prior knows: {', '.join(names)}")
        return names.index(name)

    def check_model(self, fingerprint: str, model: str | os.PathLike[str] = "this model") -> None:
        """ModelMismatchError unless this prior was trained on the codes of model ``fingerprint``
        (``model`` names that model in the message)."""
        if fingerprint != self.model_fingerprint:
            raise ModelMismatchError(
                f"prior {self.path} was trained on the codes of model {self.model_fingerprint}, not on "
                f"those of {os.fspath(model)} ({fingerprint}); use a prior and a model that belong together"
            )

    def encode(self, tokens: TokenFile) -> CodedTokens:
        """``tokens`` arithmetic-coded with this prior (as the header's speaker, if it knows it)."""
        return encode_tokens(tokens, self._integer, self.speaker_index(tokens.header.speaker))


def unpack_tokens(tokens: TokenFile | CodedTokens, prior: PriorCheckpoint | None, name: str) -> TokenFile:
    """The codes of a token file: as they are when packed, entropy-decoded with ``prior`` else
    (ConfigError / ModelMismatchError naming the prior it needs when ``prior`` is None or another)."""
    if isinstance(tokens, TokenFile):
        return tokens
    return decode_tokens(tokens, prior.integer() if prior is not None else None, name)


def save_prior(
    path: str | Path,
    model: CodePrior,
    recipe: PriorRecipe,
    speakers: list[dict[str, Any]],
    model_fingerprint: str,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a prior checkpoint (kind ``"prior"``) atomically."""
    payload = {
        "kind": PRIOR_KIND,
        "recipe": to_dict(recipe),
        "speakers": speakers,
        "model_fingerprint": model_fingerprint,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
    }
    return save_payload(path, payload)


def load_prior(path: str | os.PathLike[str]) -> PriorCheckpoint:
    """Read a prior checkpoint (``vqspeech prior train``); any problem (missing, damaged, another
    kind) is a CheckpointError."""
    path = Path(path)
    payload = load_payload(path, (PRIOR_KIND,))
    try:
        recipe = check_prior_recipe(from_dict(PriorRecipe, payload["recipe"]))
        fingerprint = str(payload["model_fingerprint"])
        state = dict(payload["model"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: saved prior is invalid ({exc})") from None
    return PriorCheckpoint(
        recipe=recipe,
        speakers=list(payload.get("speakers", [])),
        model_fingerprint=fingerprint,
        state=state,
        training=payload.get("training", {}),
        path=path,
    )
