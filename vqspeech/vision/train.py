"""Training the vision recipes: four :class:`vqspeech.loop.Task` s for the one loop.

* :class:`VQVAETask`: the image VQ-VAE (kind ``image-vqvae``) or the frame VQ-VAE of the
  video recipe (``video-vqvae``): the same model, fed images or frames.
* :class:`ImagePriorTask`: the gated PixelCNN over a trained VQ-VAE's 8x8 code maps
  (``image-prior``), optionally class-conditional.
* :class:`VideoPriorTask`: the prior over the next latent frame given the previous one and
  the action (``video-prior``).

:func:`train_vision` trains the first stage from a recipe; :func:`train_vision_prior` the
second from the first stage's checkpoint (which holds the recipe, prior settings included).
The batch of step ``s`` is a pure function of ``(train.seed, s)``, so ``--resume`` repeats
exactly the steps an uninterrupted run takes. Single process (the models are small).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import TrainConfig
from vqspeech.device import resolve_device
from vqspeech.errors import ConfigError
from vqspeech.loop import FitResult, TrainCallback, fit, training_of
from vqspeech.recipe_io import from_dict, merge, parse_override, to_dict
from vqspeech.runfolder import LAST, claim_run
from vqspeech.vision.checkpoints import (
    LoadedVQVAE,
    build_prior,
    load_prior,
    load_vqvae,
    save_prior,
    save_vqvae,
)
from vqspeech.vision.config import ImageRecipe, VideoRecipe, VisionRecipe, validate_vision
from vqspeech.vision.data import load_image_splits
from vqspeech.vision.nn import GatedPixelCNN, ImageVQVAE, LatentFramePrior
from vqspeech.vision.pictures import image_grid, write_png
from vqspeech.vision.sample import (
    VALID_EPISODE_SEED,
    bits_per_dim_from_nats,
    draw_images,
    evaluate_bits_per_dim,
    reconstruction_pairs,
    roll_out,
    rollout_strip,
)
from vqspeech.vision.video_env import ToyEnv, VideoSet, generate_episodes

__all__ = [
    "ImagePriorTask",
    "VQVAETask",
    "VideoPriorTask",
    "encode_all",
    "train_vision",
    "train_vision_prior",
]

_ENCODE_BATCH = 256


def _generator(seed: int, step: int) -> torch.Generator:
    """The RNG of one step's batch: a pure function of (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _samples_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "samples" / f"step{step:07d}"


@dataclasses.dataclass(eq=False)
class VQVAETask:
    """The 2-d VQ-VAE on images (``[N, C, H, W]`` uint8) as a :class:`vqspeech.loop.Task`."""

    model: ImageVQVAE
    recipe: VisionRecipe
    train_images: Tensor
    valid_images: Tensor
    out_dir: Path
    device: torch.device

    def batches(self, start_step: int, total_steps: int) -> Iterator[Tensor]:
        cfg = self.recipe.train
        for step in range(start_step, total_steps):
            index = torch.randint(
                len(self.train_images), (cfg.batch_size,), generator=_generator(cfg.seed, step)
            )
            yield self.train_images[index]

    def loss(self, net: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = net(batch.to(self.device, non_blocking=True))
        return out.loss, {
            "reconstruction_loss": out.reconstruction_loss,
            "codebook_loss": out.codebook_loss,
            "commitment_loss": out.commitment_loss,
            "perplexity": out.perplexity,
        }

    def items(self, batch: Tensor) -> int:
        return int(batch.shape[0])  # images (frames, for video)

    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        bpd = evaluate_bits_per_dim(self.model, self.valid_images)
        codes = torch.cat(
            [self.model.encode(chunk.to(self.device)) for chunk in self.valid_images.split(256)]
        )
        usage = torch.bincount(codes.flatten().cpu(), minlength=self.model.quantizer.codebook_size).float()
        p = usage / usage.sum()
        perplexity = float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))
        if self.recipe.train.write_samples:
            grid = reconstruction_pairs(self.model, self.valid_images[:32])
            write_png(_samples_dir(self.out_dir, step) / "reconstructions.png", image_grid(grid, 8))
        return {
            "reconstruction_bits_per_dim": bpd.reconstruction,
            "bits_per_dim_uniform_prior": bpd.total,
            "perplexity": perplexity,
            "codes_used": float((usage > 0).sum()),
            "dead_codes": float(self.model.quantizer.usage_stats().dead),
        }

    def save(self, path: Path, training: dict[str, Any]) -> None:
        save_vqvae(path, self.model, self.recipe, training)


class ImagePriorTask:
    """The gated PixelCNN over code maps ``[N, h, w]`` as a :class:`vqspeech.loop.Task`."""

    def __init__(
        self,
        prior: GatedPixelCNN,
        vqvae: LoadedVQVAE,
        train: tuple[Tensor, Tensor],
        valid: tuple[Tensor, Tensor],
        valid_reconstruction_nats: float,
        out_dir: Path,
        device: torch.device,
    ) -> None:
        self.model = prior
        self.vqvae = vqvae
        self.recipe = vqvae.recipe
        self.train_codes, self.train_labels = train
        self.valid_codes, self.valid_labels = valid
        self.valid_reconstruction_nats = valid_reconstruction_nats
        self.out_dir = out_dir
        self.device = device
        self.conditional = prior.config.n_classes > 0

    def batches(self, start_step: int, total_steps: int) -> Iterator[tuple[Tensor, Tensor]]:
        cfg = self.recipe.prior_train
        for step in range(start_step, total_steps):
            index = torch.randint(
                len(self.train_codes), (cfg.batch_size,), generator=_generator(cfg.seed, step)
            )
            yield self.train_codes[index], self.train_labels[index]

    def loss(self, net: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        codes = batch[0].to(self.device)
        labels = batch[1].to(self.device) if self.conditional else None
        logits = net(codes, labels)
        nll = F.cross_entropy(logits.float(), codes)  # nats per latent
        return nll, {"prior_nll": nll}

    def items(self, batch: tuple[Tensor, Tensor]) -> int:
        return int(batch[0].numel())  # latents

    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.valid_codes), _ENCODE_BATCH):
                codes = self.valid_codes[start : start + _ENCODE_BATCH].to(self.device)
                labels = (
                    self.valid_labels[start : start + _ENCODE_BATCH].to(self.device)
                    if self.conditional
                    else None
                )
                total += float(self.model.nll(codes, labels).double().sum())
        n = len(self.valid_codes)
        cfg = self.vqvae.model.config
        bpd = bits_per_dim_from_nats(self.valid_reconstruction_nats, total / n, cfg.dims, "pixelcnn", n)
        if self.recipe.prior_train.write_samples:
            k = self.model.config.n_classes
            labels = torch.arange(2 * max(k, 4), device=self.device) % k if k else None
            images = draw_images(self.vqvae.model, self.model, 2 * max(k, 4), labels=labels, seed=step)
            write_png(_samples_dir(self.out_dir, step) / "samples.png", image_grid(images, max(k, 4)))
        return {
            "prior_nll_per_latent": total / n / cfg.latent_size**2,
            "prior_bits_per_dim": bpd.prior,
            "reconstruction_bits_per_dim": bpd.reconstruction,
            "bits_per_dim": bpd.total,
        }

    def save(self, path: Path, training: dict[str, Any]) -> None:
        save_prior(path, self.model, self.recipe, self.vqvae.fingerprint, training)


class VideoPriorTask:
    """The latent-frame prior on encoded episodes (codes ``[N, T, h, w]``, actions ``[N, T-1]``)."""

    def __init__(
        self,
        prior: LatentFramePrior,
        vqvae: LoadedVQVAE,
        train: tuple[Tensor, Tensor],
        valid: tuple[Tensor, Tensor],
        out_dir: Path,
        device: torch.device,
    ) -> None:
        self.model = prior
        self.vqvae = vqvae
        recipe = vqvae.recipe
        assert isinstance(recipe, VideoRecipe)
        self.recipe = recipe
        self.train_codes, self.train_actions = train
        self.valid_codes, self.valid_actions = valid
        self.out_dir = out_dir
        self.device = device

    def batches(self, start_step: int, total_steps: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        cfg = self.recipe.prior_train
        n, t = self.train_actions.shape
        for step in range(start_step, total_steps):
            g = _generator(cfg.seed, step)
            episode = torch.randint(n, (cfg.batch_size,), generator=g)
            time = torch.randint(t, (cfg.batch_size,), generator=g)
            yield (
                self.train_codes[episode, time],
                self.train_actions[episode, time],
                self.train_codes[episode, time + 1],
            )

    def loss(self, net: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        previous, actions, target = (x.to(self.device) for x in batch)
        logits = net(previous, actions, target)
        nll = F.cross_entropy(logits.float(), target)  # nats per latent
        return nll, {"prior_nll": nll}

    def items(self, batch: tuple[Tensor, Tensor, Tensor]) -> int:
        return int(batch[0].shape[0])  # frame transitions

    def evaluate(self, step: int) -> dict[str, float]:
        self.model.eval()
        previous = self.valid_codes[:, :-1].flatten(0, 1)
        target = self.valid_codes[:, 1:].flatten(0, 1)
        actions = self.valid_actions.flatten()
        total, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(target), _ENCODE_BATCH):
                sl = slice(start, start + _ENCODE_BATCH)
                p, a, y = (
                    previous[sl].to(self.device),
                    actions[sl].to(self.device),
                    target[sl].to(self.device),
                )
                logits = self.model(p, a, y)
                total += float(F.cross_entropy(logits.float(), y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
        values = {
            "prior_nll_per_latent": total / target.numel(),
            "next_code_accuracy": correct / target.numel(),  # teacher-forced argmax
        }
        if self.recipe.prior_train.write_samples:
            env = ToyEnv(self.recipe.env)
            actions_0 = [int(a) for a in self.valid_actions[0]]
            rollout = roll_out(self.vqvae.model, self.model, env, actions_0, VALID_EPISODE_SEED, seed=step)
            write_png(_samples_dir(self.out_dir, step) / "rollout.png", rollout_strip(rollout))
            values["rollout_pixel_error"] = rollout.pixel_error
        return values

    def save(self, path: Path, training: dict[str, Any]) -> None:
        save_prior(path, self.model, self.recipe, self.vqvae.fingerprint, training)


# ---------------------------------------------------------------------------------------
# Entry points


def _video_sets(recipe: VideoRecipe) -> tuple[VideoSet, VideoSet]:
    env = ToyEnv(recipe.env)
    d = recipe.data
    train = generate_episodes(env, d.episodes, d.episode_length, 0)
    valid = generate_episodes(env, d.valid_episodes, d.episode_length, VALID_EPISODE_SEED)
    return train, valid


def _with_steps(config: TrainConfig, steps: int | None) -> TrainConfig:
    return config if steps is None else dataclasses.replace(config, steps=steps)


def train_vision(
    recipe: VisionRecipe,
    data: str | Path | None,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
) -> FitResult:
    """Train the VQ-VAE of an image or video recipe into ``out_dir`` (``last.pt``, ``metrics.csv``).

    ``data`` is the CIFAR-10 folder for ``cifar10``; digits and video generate their data and
    ignore it. ``steps`` is the *total* step count (default ``recipe.train.steps``); with
    ``resume`` the recipe comes from ``out_dir/last.pt`` and the ``recipe`` argument is ignored.
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    with claim_run(out_dir, resume):
        previous = None
        if resume:
            previous = load_vqvae(out_dir / LAST, dev)
            recipe = previous.recipe
        recipe = dataclasses.replace(recipe, train=_with_steps(recipe.train, steps))
        if isinstance(recipe, ImageRecipe):
            splits = load_image_splits(recipe.data.dataset, data, recipe.data.valid_images)
            train_images = splits.train.images
            valid_images = splits.valid.images[: recipe.data.eval_images]
        else:
            train_set, valid_set = _video_sets(recipe)
            train_images = train_set.frames.flatten(0, 1)
            valid_images = valid_set.frames.flatten(0, 1)[: recipe.data.eval_frames]

        torch.manual_seed(recipe.train.seed)
        model = ImageVQVAE(recipe.model).to(dev)
        if previous is not None:
            model.load_state_dict(previous.model.state_dict())
        task = VQVAETask(model, recipe, train_images, valid_images, out_dir, dev)
        return fit(task, out_dir, recipe.train, training=training_of(previous), device=dev, callback=callback)


@torch.no_grad()
def encode_all(model: ImageVQVAE, images: Tensor, batch_size: int = _ENCODE_BATCH) -> Tensor:
    """Codes ``[N, h, w]`` int64 (on CPU) of images ``[N, C, H, W]`` uint8, in batches."""
    device = next(model.parameters()).device
    model.eval()
    if len(images) == 0:
        side = model.config.latent_size
        return torch.zeros(0, side, side, dtype=torch.long)
    return torch.cat([model.encode(chunk.to(device)).cpu() for chunk in images.split(batch_size)])


def _apply_overrides(recipe: VisionRecipe, overrides: Sequence[str]) -> VisionRecipe:
    if not overrides:
        return recipe
    data = to_dict(recipe)
    for text in overrides:
        change = parse_override(text)
        if not set(change) <= {"prior", "prior_train"}:
            raise ConfigError(
                f"override {text!r}: only prior.* and prior_train.* can change once the VQ-VAE is trained"
            )
        data = merge(data, change)
    return validate_vision(from_dict(type(recipe), data))


def train_vision_prior(
    model_checkpoint: str | Path,
    data: str | Path | None,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    overrides: Sequence[str] = (),
) -> FitResult:
    """Train the prior over the codes of the VQ-VAE in ``model_checkpoint`` into ``out_dir``.

    The prior's settings come from the VQ-VAE's recipe (``prior``, ``prior_train``), changed by
    ``overrides`` such as ``prior.layers=8`` or ``prior_train.lr=1e-3``. Image recipes train
    the gated PixelCNN on the training images' code maps and evaluate bits/dim on the held-out
    images; the video recipe trains the next-latent-frame prior on encoded episodes.
    ``steps`` is the total step count (default ``prior_train.steps``).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    vq = load_vqvae(model_checkpoint, dev)
    recipe = _apply_overrides(vq.recipe, overrides)
    with claim_run(out_dir, resume):
        previous = None
        if resume:
            previous = load_prior(out_dir / LAST, dev, vq)
            recipe = previous.recipe
        recipe = dataclasses.replace(recipe, prior_train=_with_steps(recipe.prior_train, steps))
        vq = vq._replace(recipe=recipe)

        torch.manual_seed(recipe.prior_train.seed)
        prior = build_prior(recipe).to(dev)
        if previous is not None:
            prior.load_state_dict(previous.model.state_dict())
        task: ImagePriorTask | VideoPriorTask
        if isinstance(recipe, ImageRecipe):
            assert isinstance(prior, GatedPixelCNN)
            splits = load_image_splits(recipe.data.dataset, data, recipe.data.valid_images)
            valid_images = splits.valid.images[: recipe.data.eval_images]
            valid_labels = splits.valid.labels[: recipe.data.eval_images]
            rec = evaluate_bits_per_dim(vq.model, valid_images)
            rec_nats = rec.reconstruction * rec.dims * math.log(2.0)
            task = ImagePriorTask(
                prior,
                vq,
                (encode_all(vq.model, splits.train.images), splits.train.labels),
                (encode_all(vq.model, valid_images), valid_labels),
                rec_nats,
                out_dir,
                dev,
            )
        else:
            assert isinstance(prior, LatentFramePrior)
            train_set, valid_set = _video_sets(recipe)
            encoded_shape = (vq.model.config.latent_size, vq.model.config.latent_size)

            def codes_of(videos: VideoSet) -> Tensor:
                n, t = videos.frames.shape[:2]
                return encode_all(vq.model, videos.frames.flatten(0, 1)).view(n, t, *encoded_shape)

            task = VideoPriorTask(
                prior,
                vq,
                (codes_of(train_set), train_set.actions),
                (codes_of(valid_set), valid_set.actions),
                out_dir,
                dev,
            )
        return fit(
            task, out_dir, recipe.prior_train, training=training_of(previous), device=dev, callback=callback
        )
