"""Using trained vision models: bits/dim, sample grids, reconstruction grids, video rollouts.

Bits/dim (paper section 4.1's CIFAR-10 table) is the negative evidence lower bound per
sub-pixel, in bits. With a deterministic one-hot posterior ``q(z | x)`` the ELBO is
``log p(x | z_q(x)) - KL(q || p(z))`` and the KL is ``-log p(z_q(x))``: ``log K`` per latent
under the uniform prior the VQ-VAE is trained with, or the PixelCNN prior's NLL of the codes
once one is trained. So::

    bits/dim = (-log p(x | z_q(x)) - log p(z_q(x))) / (H * W * C * ln 2)

with both terms in nats per image. The decoder's ``p(x | z)`` is a 256-way categorical per
sub-pixel, an exact discrete likelihood: a decoder that knows nothing (uniform) scores
exactly 8 bits/dim for the reconstruction term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vqspeech.device import resolve_device
from vqspeech.errors import ConfigError
from vqspeech.vision.checkpoints import checkpoint_kind, load_prior, load_vqvae
from vqspeech.vision.config import ImageRecipe, VideoRecipe
from vqspeech.vision.data import load_image_splits
from vqspeech.vision.nn import GatedPixelCNN, ImageVQVAE, LatentFramePrior
from vqspeech.vision.pictures import image_grid, write_gif, write_png
from vqspeech.vision.video_env import ACTIONS, ToyEnv, random_actions

#: First episode seed of the held-out video episodes (training episodes use 0, 1, 2, ...).
VALID_EPISODE_SEED = 1_000_000
#: Episode seed the rollouts start from by default (disjoint from training and validation).
ROLLOUT_EPISODE_SEED = 2_000_000


class BitsPerDim(NamedTuple):
    """Negative ELBO per sub-pixel, in bits (lower is better).

    Attributes:
        reconstruction: ``-log2 p(x | z_q(x)) / dims``.
        prior: ``-log2 p(z_q(x)) / dims`` (``latents * log2 K / dims`` for the uniform prior).
        total: ``reconstruction + prior``: the number to compare with the paper's table
            (CIFAR-10: VQ-VAE 4.67, VAE 4.51, VIMCO 5.14).
        prior_kind: ``"uniform"`` or ``"pixelcnn"``.
        images: how many images were averaged.
        dims: sub-pixels per image (``H * W * C``).
    """

    reconstruction: float
    prior: float
    total: float
    prior_kind: str
    images: int
    dims: int


def bits_per_dim_from_nats(
    reconstruction_nats: float, prior_nats: float, dims: int, prior_kind: str, images: int
) -> BitsPerDim:
    """Mean per-image NLLs (nats) -> :class:`BitsPerDim`."""
    scale = 1.0 / (dims * math.log(2.0))
    rec, pri = reconstruction_nats * scale, prior_nats * scale
    return BitsPerDim(rec, pri, rec + pri, prior_kind, images, dims)


def uniform_prior_nats(latents: int, codebook_size: int) -> float:
    """``-log p(z)`` of any code map under the uniform prior: ``latents * ln K`` nats."""
    return latents * math.log(codebook_size)


@torch.no_grad()
def evaluate_bits_per_dim(
    model: ImageVQVAE,
    images: torch.Tensor,
    prior: GatedPixelCNN | None = None,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
) -> BitsPerDim:
    """Bits/dim of ``images`` ``[N, C, H, W]`` uint8 under ``model`` (and ``prior``, else uniform).

    Both models must be in eval mode on one device; ``labels`` ``[N]`` feed a class-conditional prior.
    """
    device = next(model.parameters()).device
    rec_total, prior_total, n = 0.0, 0.0, len(images)
    if n == 0:
        raise ConfigError("no images to evaluate")
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size].to(device)
        rec, codes = model.reconstruction_nll(batch)
        rec_total += float(rec.double().sum())
        if prior is not None:
            lab = None
            if prior.config.n_classes:
                if labels is None:
                    raise ConfigError("this prior is class-conditional: the images need labels")
                lab = labels[start : start + batch_size].to(device)
            prior_total += float(prior.nll(codes, lab).double().sum())
    cfg = model.config
    if prior is None:
        prior_nats = uniform_prior_nats(cfg.latent_size**2, cfg.quantizer.codebook_size)
    else:
        prior_nats = prior_total / n
    return bits_per_dim_from_nats(
        rec_total / n, prior_nats, cfg.dims, "uniform" if prior is None else "pixelcnn", n
    )


def bits_per_dim(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path | None,
    data: str | Path | None,
    *,
    max_images: int | None = None,
    device: str = "auto",
) -> BitsPerDim:
    """Bits/dim of the held-out images of the model's recipe (CIFAR-10: ``test_batch``).

    ``data`` is what training was given (the CIFAR-10 folder; ignored by digits). Without a
    prior, the uniform prior (``log K`` per latent) is used.
    """
    dev = resolve_device(device)
    vq = load_vqvae(model_checkpoint, dev)
    if not isinstance(vq.recipe, ImageRecipe):
        raise ConfigError(f"{model_checkpoint} is a video model; bits/dim is for image models")
    prior = load_prior(prior_checkpoint, dev, vq).model if prior_checkpoint is not None else None
    recipe = vq.recipe
    valid = load_image_splits(recipe.data.dataset, data, recipe.data.valid_images).valid
    n = len(valid.images) if max_images is None else min(max_images, len(valid.images))
    assert prior is None or isinstance(prior, GatedPixelCNN)
    return evaluate_bits_per_dim(vq.model, valid.images[:n], prior, valid.labels[:n])


# ---------------------------------------------------------------------------------------
# Images


@torch.no_grad()
def draw_images(
    model: ImageVQVAE,
    prior: GatedPixelCNN,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sample ``n`` code maps from ``prior`` and decode them: ``[n, C, H, W]`` uint8."""
    device = next(model.parameters()).device
    side = model.config.latent_size
    generator = torch.Generator(device).manual_seed(seed)
    codes = prior.sample((n, side, side), labels, generator=generator, temperature=temperature)
    return model.decode(codes)


def sample_images(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path,
    out_png: str | Path,
    n: int = 16,
    seed: int = 0,
    label: int | None = None,
    *,
    temperature: float = 1.0,
    device: str = "auto",
) -> torch.Tensor:
    """Sample ``n`` images from the prior, decode them, write a grid PNG; returns ``[n, C, H, W]`` uint8.

    A class-conditional prior draws every image of class ``label``, or, with ``label``
    None, cycles through the classes (one column per class).
    """
    if n < 1:
        raise ConfigError("n must be at least 1")
    dev = resolve_device(device)
    vq = load_vqvae(model_checkpoint, dev)
    pr = load_prior(prior_checkpoint, dev, vq)
    if not isinstance(pr.model, GatedPixelCNN):
        raise ConfigError(f"{prior_checkpoint} is a video prior; use rollout_video")
    n_classes = pr.model.config.n_classes
    labels: torch.Tensor | None = None
    columns = math.ceil(math.sqrt(n))
    if n_classes:
        if label is not None and not 0 <= label < n_classes:
            raise ConfigError(f"label {label} is not in [0, {n_classes})")
        if label is None:
            labels = torch.arange(n, device=dev) % n_classes
            columns = min(n, n_classes)
        else:
            labels = torch.full((n,), label, dtype=torch.long, device=dev)
    elif label is not None:
        raise ConfigError(f"{prior_checkpoint} is an unconditional prior: leave the label out")
    images = draw_images(vq.model, pr.model, n, labels=labels, seed=seed, temperature=temperature)
    write_png(out_png, image_grid(images, columns))
    return images.cpu()


def reconstruction_grid(
    model_checkpoint: str | Path,
    data: str | Path | None,
    out_png: str | Path,
    n: int = 16,
    *,
    device: str = "auto",
) -> torch.Tensor:
    """Held-out images and their reconstructions in alternating rows; returns ``[2n, C, H, W]`` uint8."""
    dev = resolve_device(device)
    vq = load_vqvae(model_checkpoint, dev)
    if not isinstance(vq.recipe, ImageRecipe):
        raise ConfigError(f"{model_checkpoint} is a video model; use rollout_video")
    valid = load_image_splits(vq.recipe.data.dataset, data, vq.recipe.data.valid_images).valid
    grid = reconstruction_pairs(vq.model, valid.images[:n])
    write_png(out_png, image_grid(grid, columns=min(n, 8)))
    return grid


@torch.no_grad()
def reconstruction_pairs(model: ImageVQVAE, images: torch.Tensor, columns: int = 8) -> torch.Tensor:
    """Originals and reconstructions interleaved by rows of ``columns``: ``[2N, C, H, W]`` uint8."""
    device = next(model.parameters()).device
    recon = model.decode(model.encode(images.to(device))).cpu()
    rows = []
    for start in range(0, len(images), columns):
        rows += [images[start : start + columns].cpu(), recon[start : start + columns]]
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------
# Video


class Rollout(NamedTuple):
    """A rollout in latent space and, for comparison, what the environment really does.

    Attributes:
        frames: ``[n_frames + 1, 3, S, S]`` uint8: the start frame's reconstruction, then the
            ``n_frames`` predicted frames (decoded from predicted codes).
        truth: ``[n_frames + 1, 3, S, S]`` uint8: the environment's frames for the same actions.
        codes: ``[n_frames + 1, h, w]`` int64: the latent frames.
        actions: the ``n_frames`` actions.
        pixel_error: mean absolute error (0..255) between predicted and true frames 1..n.
    """

    frames: torch.Tensor
    truth: torch.Tensor
    codes: torch.Tensor
    actions: list[int]
    pixel_error: float


@torch.no_grad()
def roll_out(
    model: ImageVQVAE,
    prior: LatentFramePrior,
    env: ToyEnv,
    actions: Sequence[int],
    episode_seed: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
) -> Rollout:
    """Encode the start frame of episode ``episode_seed``, then predict one latent frame per action."""
    device = next(model.parameters()).device
    truth = torch.from_numpy(env.episode(episode_seed, actions))  # validates the actions
    generator = torch.Generator(device).manual_seed(seed)
    codes = [model.encode(truth[:1].to(device))]
    for action in actions:
        act = torch.tensor([int(action)], device=device)
        codes.append(prior.sample(codes[-1], act, generator=generator, temperature=temperature))
    latent = torch.cat(codes)
    frames = model.decode(latent).cpu()
    error = float((frames[1:].float() - truth[1:].float()).abs().mean()) if len(actions) else 0.0
    return Rollout(frames, truth, latent.cpu(), [int(a) for a in actions], error)


def rollout_video(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path,
    out_gif: str | Path | None,
    out_png: str | Path | None,
    n_frames: int = 16,
    actions: Sequence[int] | None = None,
    seed: int = 0,
    *,
    temperature: float = 1.0,
    device: str = "auto",
) -> Rollout:
    """Roll ``n_frames`` frames out of a start frame entirely in latent space, then decode.

    The start frame is episode ``ROLLOUT_EPISODE_SEED + seed`` of the model's environment;
    ``actions`` (indices into ``noop, up, down, left, right``; ``n_frames`` of them) default to
    random ones drawn from ``seed``. Writes a GIF (predicted frames; needs Pillow) and a PNG
    strip (top row: the environment's true frames, bottom row: predicted), each if given.
    """
    if n_frames < 1:
        raise ConfigError("n_frames must be at least 1")
    if actions is None:
        actions = random_actions(n_frames, seed)
    elif len(actions) != n_frames:
        raise ConfigError(f"{len(actions)} actions given for {n_frames} frames; give one action per frame")
    bad = [a for a in actions if not 0 <= int(a) < len(ACTIONS)]
    if bad:
        raise ConfigError(f"action {bad[0]} is not one of 0..{len(ACTIONS) - 1} ({', '.join(ACTIONS)})")
    dev = resolve_device(device)
    vq = load_vqvae(model_checkpoint, dev)
    pr = load_prior(prior_checkpoint, dev, vq)
    if not isinstance(vq.recipe, VideoRecipe) or not isinstance(pr.model, LatentFramePrior):
        raise ConfigError(f"{model_checkpoint} is not a video model; use sample_images")
    env = ToyEnv(vq.recipe.env)
    result = roll_out(
        vq.model, pr.model, env, actions, ROLLOUT_EPISODE_SEED + seed, seed=seed, temperature=temperature
    )
    if out_png is not None:
        write_png(out_png, rollout_strip(result))
    if out_gif is not None:
        write_gif(out_gif, result.frames, fps=5.0, scale=2)
    return result


def rollout_strip(rollout: Rollout) -> np.ndarray:
    """Two rows, one column per frame: the true frames above, the predicted frames below."""
    n = len(rollout.frames)
    return image_grid(torch.cat([rollout.truth, rollout.frames]), columns=n)


class VisionSample(NamedTuple):
    """What :func:`sample_to_files` wrote: the files, and a one-line description for the user."""

    files: list[Path]
    summary: str


def sample_to_files(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path,
    output: str | Path,
    *,
    count: int = 16,
    frames: int = 16,
    label: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    device: str = "auto",
) -> VisionSample:
    """``vqspeech sample`` for the vision recipes: an image grid, or a video rollout.

    Image models: ``count`` samples from the PixelCNN (class ``label``, or one column per class)
    as a PNG grid at ``output``. Video models: a rollout of ``frames`` frames under random
    actions drawn from ``seed``; ``output`` ending in ``.gif`` gets the GIF and a frame strip
    next to it (``.png``), any other ``output`` the strip only.
    """
    out = Path(output)
    if checkpoint_kind(model_checkpoint) == "video-vqvae":
        gif = out if out.suffix.lower() == ".gif" else None
        strip = out.with_suffix(".png")
        result = rollout_video(
            model_checkpoint,
            prior_checkpoint,
            gif,
            strip,
            frames,
            seed=seed,
            temperature=temperature,
            device=device,
        )
        written = [p for p in (gif, strip) if p is not None]
        actions = " ".join(ACTIONS[a] for a in result.actions)
        return VisionSample(
            written,
            f"{frames} frames rolled out in latent space ({actions}); pixel error {result.pixel_error:.1f}",
        )
    if out.suffix.lower() != ".png":
        raise ConfigError(f"{out}: image samples are written as a .png grid")
    images = sample_images(
        model_checkpoint, prior_checkpoint, out, count, seed, label, temperature=temperature, device=device
    )
    return VisionSample([out], f"{len(images)} images sampled from the prior")
