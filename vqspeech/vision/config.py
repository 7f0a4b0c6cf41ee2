"""Image and video recipes: frozen dataclasses, built-in recipes and YAML loading.

The vision recipes reuse the speech core's :class:`~vqspeech.config.QuantizerConfig` (the
same :class:`~vqspeech.nn.quantizer.VectorQuantizer` serves speech, images and video) and
:class:`~vqspeech.config.TrainConfig` (the same loop, :func:`vqspeech.loop.fit`, trains them).

Three recipes are built in and accepted by name wherever a recipe path is:

* ``cifar10``: the paper's CIFAR-10 model (section 4.2: two stride-2 4x4 convs and two 3x3
  residual blocks, 256 channels; 32x32x3 -> 8x8 codes, K = 512; a mirrored decoder) with a
  gated PixelCNN prior over the 8x8 code maps; reads ``cifar-10-batches-py`` from disk;
* ``digits``: the same design, CPU-sized, on scikit-learn's bundled 8x8 digits upscaled and
  coloured to 32x32x3 (no download): the offline default;
* ``video``: the action-conditioned toy environment (:mod:`vqspeech.vision.video_env`,
  64x64 frames; a stand-in for DeepMind Lab, paper section 4.4): a frame VQ-VAE and a prior
  that predicts the next frame's codes from the previous frame's codes and the action.

A recipe file is YAML with ``base: cifar10|digits|video`` (or another vision recipe file)
and nested overrides; ``--set prior.layers=8`` style overrides apply on top. Unknown keys
are an error. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqspeech.config import QuantizerConfig, TrainConfig
from vqspeech.errors import ConfigError
from vqspeech.recipe_io import from_dict, merge, parse_override, require, resolve_base_chain

IMAGE_DATASETS = ("digits", "cifar10")
LIKELIHOODS = ("categorical", "logistic")


@dataclass(frozen=True)
class ImageModelConfig:
    """2-d VQ-VAE (paper section 4.2): strided conv encoder, quantiser, mirrored decoder.

    The encoder is ``n_downsample`` stride-2 4x4 convs (``channels`` wide), ``n_res_blocks``
    residual blocks (ReLU, 3x3 conv to ``res_channels``, ReLU, 1x1 conv back) and a 1x1 conv
    to the quantiser's ``dim``. The decoder mirrors it with 4x4 transposed convs and ends in
    an exact discrete likelihood over the 256 values of each sub-pixel, so bits/dim need no
    dequantisation: ``likelihood`` is ``categorical`` (a 256-way softmax per sub-pixel; exact
    and flexible, but its softmax dominates a CPU step) or ``logistic`` (a discretised
    logistic per sub-pixel, PixelCNN++ style: 2 numbers instead of 256, several times faster).
    """

    image_size: int = 32  # H = W, pixels
    image_channels: int = 3
    channels: int = 256
    res_channels: int = 256
    n_downsample: int = 2
    n_res_blocks: int = 2
    likelihood: str = "categorical"
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(dim=64, codebook_size=512))

    @property
    def latent_size(self) -> int:
        """Side of the code map: ``image_size / 2**n_downsample`` (32 -> 8 in the paper)."""
        return self.image_size // 2**self.n_downsample

    @property
    def dims(self) -> int:
        """Dimensions (sub-pixels) of one image: ``H * W * C``, the denominator of bits/dim."""
        return self.image_size * self.image_size * self.image_channels


@dataclass(frozen=True)
class PixelCNNConfig:
    """Gated PixelCNN prior over a code map (van den Oord et al. 2016, "Conditional Image
    Generation with PixelCNN Decoders"): vertical and horizontal stacks, no blind spot.

    ``n_classes`` > 0 makes it class-conditional (a learnt per-class bias on every gate);
    0 is unconditional. ``kernel_size`` is odd; each layer widens the view by
    ``kernel_size // 2`` rows and columns.
    """

    channels: int = 128
    layers: int = 10
    kernel_size: int = 5
    n_classes: int = 0


@dataclass(frozen=True)
class ImageDataConfig:
    """Which images: ``digits`` (bundled with scikit-learn) or ``cifar10`` (``cifar-10-batches-py``).

    ``valid_images`` are held out (the last ones of digits; CIFAR-10's ``test_batch`` is
    always its held-out set, capped at this many); ``eval_images`` bounds one evaluation.
    """

    dataset: str = "digits"
    valid_images: int = 180
    eval_images: int = 512


@dataclass(frozen=True)
class ImageRecipe:
    """Everything an image run needs; saved, resolved, into every image checkpoint."""

    name: str = "custom"
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    prior: PixelCNNConfig = field(default_factory=PixelCNNConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior_train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class ToyEnvConfig:
    """The toy environment (:mod:`vqspeech.vision.video_env`).

    A ``sprite_size`` square moves by ``step_pixels`` per action (``noop, up, down, left,
    right``) over one of ``n_backgrounds`` textures; frames are ``frame_size`` square, RGB.
    ``seed`` fixes the textures and sprite colour (the world); episodes draw their start
    from their own seeds.
    """

    frame_size: int = 64
    sprite_size: int = 12
    step_pixels: int = 4
    n_backgrounds: int = 4
    seed: int = 0


@dataclass(frozen=True)
class VideoDataConfig:
    """Episodes generated from the environment with uniformly random actions."""

    episodes: int = 256
    episode_length: int = 16  # frames per episode (episode_length - 1 actions)
    valid_episodes: int = 16
    eval_frames: int = 256  # frames per VQ-VAE evaluation


@dataclass(frozen=True)
class VideoPriorConfig:
    """Prior over the next latent frame: a gated PixelCNN over its codes, conditioned on the
    previous frame's codes (a spatial map, through ``context_layers`` 3x3 residual convs) and
    on the action (a learnt per-action bias on every gate)."""

    channels: int = 64
    layers: int = 6
    kernel_size: int = 5
    context_layers: int = 2


@dataclass(frozen=True)
class VideoRecipe:
    """Everything a video run needs; saved, resolved, into every video checkpoint."""

    name: str = "custom"
    env: ToyEnvConfig = field(default_factory=ToyEnvConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    prior: VideoPriorConfig = field(default_factory=VideoPriorConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior_train: TrainConfig = field(default_factory=TrainConfig)


VisionRecipe = ImageRecipe | VideoRecipe

# ---------------------------------------------------------------------------------------
# Built-in recipes


def _schedule(
    steps: int, batch_size: int, lr: float, warmup_steps: int, every: int, log_every: int
) -> TrainConfig:
    """A training schedule that evaluates and checkpoints at the same interval, ``every`` steps."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup_steps,
        eval_every=every,
        checkpoint_every=every,
        log_every=log_every,
    )


def _cpu_schedule(batch_size: int) -> TrainConfig:
    """The CPU-sized recipes' schedule (digits, video; VQ-VAE and prior): 300 steps at 2e-3."""
    return _schedule(steps=300, batch_size=batch_size, lr=2e-3, warmup_steps=20, every=100, log_every=10)


def _cpu_quantizer(codebook_size: int) -> QuantizerConfig:
    """The CPU-sized recipes' quantiser: 32-d EMA codebook, k-means init, dead-code restarts."""
    return QuantizerConfig(
        dim=32, codebook_size=codebook_size, beta=0.25, ema=True, kmeans_init=True, dead_code_steps=20
    )


def cifar10_recipe() -> ImageRecipe:
    """The paper's CIFAR-10 model (section 4.2) and a PixelCNN prior over its 8x8 codes.

    The paper gives the encoder/decoder and K; the code dimension (64) and the prior's size
    are ours (the paper does not state them for CIFAR-10).
    """
    model = ImageModelConfig(
        image_size=32,
        channels=256,
        res_channels=256,
        n_downsample=2,
        n_res_blocks=2,
        quantizer=QuantizerConfig(dim=64, codebook_size=512, beta=0.25),
    )
    return ImageRecipe(
        name="cifar10",
        model=model,
        prior=PixelCNNConfig(channels=128, layers=12, kernel_size=5, n_classes=10),
        data=ImageDataConfig(dataset="cifar10", valid_images=10000, eval_images=2000),
        train=_schedule(steps=100_000, batch_size=128, lr=2e-4, warmup_steps=500, every=2500, log_every=50),
        prior_train=_schedule(
            steps=100_000, batch_size=128, lr=3e-4, warmup_steps=500, every=2500, log_every=50
        ),
    )


def digits_recipe() -> ImageRecipe:
    """CPU-sized: scikit-learn's digits at 32x32x3, 64 channels, K = 128, EMA codebook.

    The discretised logistic likelihood: a step costs about 1/6 of the categorical's on a CPU
    (0.15 s vs 0.96 s for 32 images, one core).
    """
    model = ImageModelConfig(
        image_size=32,
        channels=64,
        res_channels=32,
        n_downsample=2,
        n_res_blocks=2,
        likelihood="logistic",
        quantizer=_cpu_quantizer(codebook_size=128),
    )
    return ImageRecipe(
        name="digits",
        model=model,
        prior=PixelCNNConfig(channels=64, layers=6, kernel_size=5, n_classes=10),
        data=ImageDataConfig(dataset="digits", valid_images=180, eval_images=180),
        train=_cpu_schedule(batch_size=32),
        prior_train=_cpu_schedule(batch_size=32),
    )


def video_recipe() -> VideoRecipe:
    """The toy environment's 64x64 frames -> 8x8 codes (K = 64), and an action-conditioned prior."""
    model = ImageModelConfig(
        image_size=64,
        channels=64,
        res_channels=32,
        n_downsample=3,
        n_res_blocks=2,
        likelihood="logistic",
        quantizer=_cpu_quantizer(codebook_size=64),
    )
    return VideoRecipe(
        name="video",
        model=model,
        train=_cpu_schedule(batch_size=16),
        prior_train=_cpu_schedule(batch_size=32),
    )


BUILTIN_VISION_RECIPES: dict[str, Callable[[], VisionRecipe]] = {
    "cifar10": cifar10_recipe,
    "digits": digits_recipe,
    "video": video_recipe,
}


# ---------------------------------------------------------------------------------------
# Loading


def validate_vision(recipe: VisionRecipe) -> VisionRecipe:
    """Reject values that would build a broken model, with a message that says which."""
    m = recipe.model
    checks: list[tuple[bool, str]] = [
        (m.n_downsample >= 1, "model.n_downsample must be at least 1"),
        (
            m.image_size % 2**m.n_downsample == 0,
            "model.image_size must be divisible by 2**model.n_downsample",
        ),
        (m.likelihood in LIKELIHOODS, f"model.likelihood must be one of {', '.join(LIKELIHOODS)}"),
        (m.image_channels >= 1, "model.image_channels must be at least 1"),
        (m.channels >= 1 and m.res_channels >= 1, "model.channels and model.res_channels must be positive"),
        (m.quantizer.codebook_size >= 2, "model.quantizer.codebook_size must be at least 2"),
        (0.0 < m.quantizer.ema_decay < 1.0, "model.quantizer.ema_decay must be in (0, 1)"),
        (
            recipe.prior.kernel_size >= 3 and recipe.prior.kernel_size % 2 == 1,
            "prior.kernel_size must be odd and at least 3",
        ),
        (
            recipe.prior.layers >= 1 and recipe.prior.channels >= 1,
            "prior needs at least one layer and channel",
        ),
        (
            recipe.train.batch_size >= 1 and recipe.prior_train.batch_size >= 1,
            "train.batch_size and prior_train.batch_size must be at least 1",
        ),
    ]
    if isinstance(recipe, ImageRecipe):
        checks += [
            (
                recipe.data.dataset in IMAGE_DATASETS,
                f"data.dataset must be one of {', '.join(IMAGE_DATASETS)}",
            ),
            (recipe.prior.n_classes >= 0, "prior.n_classes must be 0 (unconditional) or more"),
            (recipe.data.valid_images >= 1, "data.valid_images must be at least 1"),
        ]
    else:
        e, d = recipe.env, recipe.data
        checks += [
            (m.image_size == e.frame_size, "model.image_size must equal env.frame_size"),
            (0 < e.sprite_size < e.frame_size, "env.sprite_size must be in (0, env.frame_size)"),
            (e.step_pixels >= 1, "env.step_pixels must be at least 1"),
            (e.n_backgrounds >= 1, "env.n_backgrounds must be at least 1"),
            (d.episode_length >= 2, "data.episode_length must be at least 2 (one action)"),
            (
                d.episodes >= 1 and d.valid_episodes >= 1,
                "data.episodes and data.valid_episodes must be positive",
            ),
            (recipe.prior.context_layers >= 0, "prior.context_layers must be 0 or more"),
        ]
    require(checks)
    return recipe


def _family(name: str) -> type[ImageRecipe] | type[VideoRecipe]:
    return VideoRecipe if name == "video" else ImageRecipe


def is_vision_recipe(name_or_path: str | Path) -> bool:
    """True for a built-in vision name or a YAML file whose ``base`` chain ends at one.

    Never raises: anything unreadable is "not vision", and the speech loader reports it.
    """
    try:
        return _resolve(str(name_or_path))[0] is not None
    except ConfigError:
        return False


def load_vision_recipe(name_or_path: str | Path, overrides: Sequence[str] = ()) -> VisionRecipe:
    """Resolve a built-in (``cifar10``, ``digits``, ``video``) or a YAML file, plus overrides.

    A YAML file names its starting point with ``base:`` (a built-in, or another vision recipe
    file relative to it). Returns an :class:`ImageRecipe` or a :class:`VideoRecipe`.
    """
    builtin, data = _resolve(str(name_or_path))
    if builtin is None:
        known = ", ".join(sorted(BUILTIN_VISION_RECIPES))
        raise ConfigError(f"recipe {name_or_path!r} is not a vision recipe: its 'base' must lead to {known}")
    for text in overrides:
        data = merge(data, parse_override(text))
    return validate_vision(from_dict(_family(builtin), data))


def vision_recipe_from_dict(data: dict[str, Any], family: str) -> VisionRecipe:
    """Rebuild a recipe saved with ``to_dict`` (from a checkpoint); ``family`` is image or video."""
    return validate_vision(from_dict(_family(family), data))


def _resolve(name_or_path: str) -> tuple[str | None, dict[str, Any]]:
    """(the built-in vision recipe the ``base`` chain starts from or None, the merged recipe dict)."""
    return resolve_base_chain(name_or_path, BUILTIN_VISION_RECIPES, "vision recipe ", foreign_base_ends=True)


def recipe_family(recipe: VisionRecipe) -> str:
    """``"image"`` or ``"video"``."""
    return "video" if isinstance(recipe, VideoRecipe) else "image"


__all__ = [
    "BUILTIN_VISION_RECIPES",
    "ImageDataConfig",
    "ImageModelConfig",
    "ImageRecipe",
    "PixelCNNConfig",
    "ToyEnvConfig",
    "VideoDataConfig",
    "VideoPriorConfig",
    "VideoRecipe",
    "VisionRecipe",
    "is_vision_recipe",
    "load_vision_recipe",
    "recipe_family",
    "validate_vision",
    "vision_recipe_from_dict",
]
