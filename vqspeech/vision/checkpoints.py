"""Checkpoints of the vision recipes, in the project's one container (:mod:`vqspeech.checkpoint`).

Kinds and payloads (tensors and plain data only; loaded with ``weights_only=True``)::

    image-vqvae, video-vqvae: {"kind", "family": "image"|"video", "recipe": {...},
                               "model": {state_dict}, "fingerprint": str, "training": {...}}
    image-prior, video-prior: {"kind", "family", "recipe": {...}, "model": {state_dict},
                               "vqvae_fingerprint": str, "training": {...}}

Every checkpoint holds its resolved recipe, so sampling rebuilds the model with no recipe
file. A prior stores the fingerprint of the VQ-VAE whose codes it models: pairing it with
another VQ-VAE is a :class:`~vqspeech.errors.ModelMismatchError`, not silent garbage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from vqspeech.checkpoint import load_payload, save_payload
from vqspeech.errors import CheckpointError, ConfigError, ModelMismatchError
from vqspeech.recipe_io import to_dict
from vqspeech.vision.config import VideoRecipe, VisionRecipe, recipe_family, vision_recipe_from_dict
from vqspeech.vision.nn import GatedPixelCNN, ImageVQVAE, LatentFramePrior
from vqspeech.vision.video_env import ToyEnv

VQVAE_KINDS = ("image-vqvae", "video-vqvae")
PRIOR_KINDS = ("image-prior", "video-prior")


class LoadedVQVAE(NamedTuple):
    model: ImageVQVAE  # in eval mode
    recipe: VisionRecipe
    fingerprint: str
    training: dict[str, Any]
    kind: str


class LoadedPrior(NamedTuple):
    model: GatedPixelCNN | LatentFramePrior  # in eval mode
    recipe: VisionRecipe
    vqvae_fingerprint: str
    training: dict[str, Any]
    kind: str


def fingerprint(model: nn.Module) -> str:
    """16 hex digits of SHA-256 over the model's state (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def _save(
    path: Path, role: str, model: nn.Module, recipe: VisionRecipe, training: dict[str, Any], **extra: str
) -> Path:
    """Write a ``<family>-<role>`` checkpoint: recipe, CPU weights, ``training`` and ``extra`` keys."""
    family = recipe_family(recipe)
    return save_payload(
        path,
        {
            "kind": f"{family}-{role}",
            "family": family,
            "recipe": to_dict(recipe),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            **extra,
            "training": training,
        },
    )


def save_vqvae(path: Path, model: ImageVQVAE, recipe: VisionRecipe, training: dict[str, Any]) -> Path:
    return _save(path, "vqvae", model, recipe, training, fingerprint=fingerprint(model))


def save_prior(
    path: Path, prior: nn.Module, recipe: VisionRecipe, vqvae_fingerprint: str, training: dict[str, Any]
) -> Path:
    return _save(path, "prior", prior, recipe, training, vqvae_fingerprint=vqvae_fingerprint)


def checkpoint_kind(path: str | Path) -> str:
    """The ``kind`` of any vqspeech checkpoint (CheckpointError if it is not one)."""
    kinds = ("vqvae", "prior", *VQVAE_KINDS, *PRIOR_KINDS)
    return str(load_payload(path, kinds)["kind"])


def is_vision_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a vision checkpoint (image/video VQ-VAE or prior); never raises."""
    try:
        return checkpoint_kind(path) in (*VQVAE_KINDS, *PRIOR_KINDS)
    except CheckpointError:
        return False


def _recipe(payload: dict[str, Any], path: Path) -> VisionRecipe:
    try:
        return vision_recipe_from_dict(payload["recipe"], str(payload.get("family", "image")))
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} holds an unusable recipe ({exc}); retrain with this vqspeech"
        ) from None


def load_vqvae(path: str | Path, device: torch.device | str = "cpu") -> LoadedVQVAE:
    """An image or video VQ-VAE checkpoint, rebuilt on ``device`` in eval mode."""
    path = Path(path)
    payload = load_payload(path, VQVAE_KINDS)
    recipe = _recipe(payload, path)
    model = ImageVQVAE(recipe.model)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its recipe ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return LoadedVQVAE(
        model, recipe, str(payload.get("fingerprint", "")), payload.get("training") or {}, payload["kind"]
    )


def build_prior(recipe: VisionRecipe) -> GatedPixelCNN | LatentFramePrior:
    """The prior a recipe describes (PixelCNN over image codes, or the latent-frame prior)."""
    k = recipe.model.quantizer.codebook_size
    if isinstance(recipe, VideoRecipe):
        return LatentFramePrior(k, recipe.prior, ToyEnv.n_actions)
    return GatedPixelCNN(k, recipe.prior)


def load_prior(
    path: str | Path, device: torch.device | str = "cpu", vqvae: LoadedVQVAE | None = None
) -> LoadedPrior:
    """A prior checkpoint on ``device`` in eval mode; with ``vqvae``, checks they belong together."""
    path = Path(path)
    payload = load_payload(path, PRIOR_KINDS)
    recipe = _recipe(payload, path)
    prior = build_prior(recipe)
    try:
        prior.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit its recipe ({str(exc).splitlines()[0]})") from None
    prior.to(device).eval()
    loaded = LoadedPrior(
        prior,
        recipe,
        str(payload.get("vqvae_fingerprint", "")),
        payload.get("training") or {},
        payload["kind"],
    )
    if vqvae is not None:
        check_pair(vqvae, loaded, path)
    return loaded


def check_pair(vqvae: LoadedVQVAE, prior: LoadedPrior, prior_path: str | Path) -> None:
    """ModelMismatchError unless ``prior`` was trained on ``vqvae``'s codes."""
    if prior.kind.split("-")[0] != vqvae.kind.split("-")[0]:
        raise ModelMismatchError(f"{prior_path} is an {prior.kind} but the model is a {vqvae.kind}")
    if prior.vqvae_fingerprint != vqvae.fingerprint:
        raise ModelMismatchError(
            f"{prior_path} was trained on the codes of another VQ-VAE (fingerprint "
            f"{prior.vqvae_fingerprint}, model has {vqvae.fingerprint}); pass the matching --model"
        )
