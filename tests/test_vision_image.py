"""Image recipes (issue #9): bits/dim on known distributions, PixelCNN causality and
conditioning, data readers, recipes, and a few training steps through the shared loop."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_VISION_NETWORKS, TINY_VISION_SCHEDULES

from vqspeech.checkpoint import load_payload
from vqspeech.config import QuantizerConfig
from vqspeech.errors import ConfigError, DataError, ModelMismatchError
from vqspeech.vision.config import (
    ImageModelConfig,
    ImageRecipe,
    PixelCNNConfig,
    is_vision_recipe,
    load_vision_recipe,
)
from vqspeech.vision.data import digits_images, load_image_splits, read_cifar10_batch
from vqspeech.vision.nn import PIXEL_LEVELS, GatedPixelCNN, ImageVQVAE, pixel_nll
from vqspeech.vision.sample import (
    bits_per_dim,
    evaluate_bits_per_dim,
    reconstruction_grid,
    sample_images,
    uniform_prior_nats,
)
from vqspeech.vision.train import train_vision, train_vision_prior

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    *TINY_VISION_NETWORKS,
    "data.valid_images=12",
    "data.eval_images=12",
    *TINY_VISION_SCHEDULES,
]


def _tiny_model(likelihood: str, k: int = 16) -> ImageVQVAE:
    torch.manual_seed(0)
    config = ImageModelConfig(
        channels=16,
        res_channels=8,
        n_res_blocks=1,
        likelihood=likelihood,
        quantizer=QuantizerConfig(dim=8, codebook_size=k),
    )
    return ImageVQVAE(config).eval()


def _set_output(model: ImageVQVAE, bias: torch.Tensor) -> None:
    """Make the decoder ignore its input: zero final weights, the given bias."""
    last = model.decoder.net[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.bias is not None
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)


# ---------------------------------------------------------------------------------------
# bits/dim


def test_uniform_decoder_scores_exactly_8_bits_per_dim() -> None:
    model = _tiny_model("categorical", k=16)
    _set_output(model, torch.zeros(3 * PIXEL_LEVELS))  # all logits equal: uniform over 256 values
    images = torch.randint(
        0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    bpd = evaluate_bits_per_dim(model, images)
    assert bpd.reconstruction == pytest.approx(8.0, abs=1e-6)
    # uniform prior: log2 K bits for each of the 8x8 latents, spread over 32*32*3 sub-pixels
    assert bpd.prior == pytest.approx(64 * math.log2(16) / 3072, abs=1e-12)
    assert bpd.total == pytest.approx(bpd.reconstruction + bpd.prior)
    assert (bpd.prior_kind, bpd.images, bpd.dims) == ("uniform", 5, 3072)


def test_known_categorical_distribution_gives_its_entropy() -> None:
    # p(v = 7) = 1/2, the other 255 values share 1/2: an image of 7s costs exactly 1 bit/dim,
    # and an image of 8s costs log2(510) bits/dim.
    model = _tiny_model("categorical")
    logits = torch.full((PIXEL_LEVELS,), math.log(0.5 / 255))
    logits[7] = math.log(0.5)
    _set_output(model, logits[:, None].expand(PIXEL_LEVELS, 3).reshape(-1))  # levels-first layout
    sevens = torch.full((2, 3, 32, 32), 7, dtype=torch.uint8)
    eights = torch.full((2, 3, 32, 32), 8, dtype=torch.uint8)
    assert evaluate_bits_per_dim(model, sevens).reconstruction == pytest.approx(1.0, abs=1e-4)
    assert evaluate_bits_per_dim(model, eights).reconstruction == pytest.approx(math.log2(510), abs=1e-4)


def test_discretised_logistic_is_a_distribution_over_256_values() -> None:
    torch.manual_seed(0)
    params = torch.randn(1, 6, 3, 3) * 1.5
    params[:, 3:] = params[:, 3:] - 3.0  # log-scales from wide to very sharp
    values = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1).expand(256, 3, 3, 3)
    mass = torch.exp(-pixel_nll(params.expand(256, -1, -1, -1), values, "logistic")).double().sum(0)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-4, rtol=0)


def test_uniform_pixelcnn_matches_uniform_prior_term() -> None:
    model = _tiny_model("logistic", k=16)
    prior = GatedPixelCNN(16, PixelCNNConfig(channels=8, layers=2, kernel_size=3)).eval()
    out = prior.head[-1]
    assert isinstance(out, torch.nn.Conv2d) and out.bias is not None
    with torch.no_grad():  # every code equally likely at every position
        out.weight.zero_()
        out.bias.zero_()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with_prior = evaluate_bits_per_dim(model, images, prior)
    uniform = evaluate_bits_per_dim(model, images)
    assert with_prior.prior_kind == "pixelcnn"
    assert with_prior.prior == pytest.approx(uniform.prior, rel=1e-6)
    assert with_prior.reconstruction == pytest.approx(uniform.reconstruction, rel=1e-6)
    assert uniform_prior_nats(64, 16) == pytest.approx(64 * math.log(16))


# ---------------------------------------------------------------------------------------
# Gated PixelCNN


def _raster(i: int, j: int, width: int) -> int:
    return i * width + j


def test_pixelcnn_is_causal_in_raster_order_and_has_no_blind_spot() -> None:
    torch.manual_seed(0)
    k, h, w = 8, 5, 6
    prior = GatedPixelCNN(k, PixelCNNConfig(channels=8, layers=4, kernel_size=3)).eval()
    codes = torch.randint(0, k, (1, h, w))
    base = prior(codes)
    for i in range(h):
        for j in range(w):
            changed = codes.clone()
            changed[0, i, j] = (codes[0, i, j] + 1) % k
            diff = (prior(changed) - base).abs().amax(1)[0]  # [H, W]
            p = _raster(i, j, w)
            for y in range(h):
                for x in range(w):
                    if _raster(y, x, w) <= p:
                        assert diff[y, x] == 0, f"output {(y, x)} sees input {(i, j)}"
            if j + 1 < w:
                assert diff[i, j + 1] > 0  # the next position sees the current one
            if i + 1 < h and j - 2 >= 0:
                # (i+1, j-2) sees (i, j) up and to the right: the original PixelCNN's blind spot
                assert diff[i + 1, j - 2] > 0


def test_class_conditioning_changes_the_prior() -> None:
    torch.manual_seed(0)
    prior = GatedPixelCNN(8, PixelCNNConfig(channels=8, layers=2, kernel_size=3, n_classes=3)).eval()
    codes = torch.randint(0, 8, (1, 4, 4))
    a = prior(codes, torch.tensor([0]))
    b = prior(codes, torch.tensor([2]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        prior(codes)
    samples = prior.sample((2, 4, 4), torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 4, 4) and int(samples.max()) < 8


# ---------------------------------------------------------------------------------------
# Data


def test_digits_are_coloured_32x32_and_deterministic() -> None:
    first, second = digits_images(), digits_images()
    assert first.images.shape == (1797, 3, 32, 32) and first.images.dtype == torch.uint8
    assert torch.equal(first.images, second.images)
    assert set(first.labels.tolist()) == set(range(10))
    splits = load_image_splits("digits", None, 100)
    assert len(splits.valid.images) == 100 and len(splits.train.images) == 1697


def _write_cifar(folder: Path, n: int = 6) -> None:
    """A CIFAR-10 ``cifar-10-batches-py`` folder in the dataset's own (pickle) format."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        batch = {
            b"batch_label": b"batch",
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": np.full((n, 3072), i, dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_reader(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        splits = load_image_splits("cifar10", root, 4)
        assert splits.train.images.shape == (30, 3, 32, 32)
        assert splits.valid.images.shape == (4, 3, 32, 32)
        assert int(splits.valid.images.max()) == 5  # test_batch was written sixth
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_image_splits("cifar10", tmp_path / "nowhere", 4)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.getcwd, ())  # type: ignore[return-value]


def test_cifar10_reader_refuses_foreign_pickles(tmp_path: Path) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError, match="not a CIFAR-10"):
        read_cifar10_batch(path)


# ---------------------------------------------------------------------------------------
# Recipes


def test_recipes_resolve() -> None:
    cifar = load_vision_recipe(ROOT / "recipes/image/cifar10.yaml")
    assert isinstance(cifar, ImageRecipe)
    m = cifar.model
    assert (m.image_size, m.latent_size, m.channels, m.n_downsample, m.n_res_blocks) == (32, 8, 256, 2, 2)
    assert m.quantizer.codebook_size == 512 and cifar.data.dataset == "cifar10"
    digits = load_vision_recipe(ROOT / "recipes/image/digits.yaml", ["prior.layers=3"])
    assert isinstance(digits, ImageRecipe)
    assert digits.data.dataset == "digits" and digits.prior.layers == 3 and digits.name == "digits"
    assert is_vision_recipe("digits") and is_vision_recipe(ROOT / "recipes/image/cifar10.yaml")
    assert not is_vision_recipe("demo") and not is_vision_recipe(ROOT / "recipes/speech/demo.yaml")
    assert not is_vision_recipe("no-such-recipe")
    with pytest.raises(ConfigError, match="unknown key"):
        load_vision_recipe("digits", ["model.nope=1"])
    with pytest.raises(ConfigError, match="not a vision recipe"):
        load_vision_recipe(ROOT / "recipes/speech/demo.yaml")


# ---------------------------------------------------------------------------------------
# Training through the shared loop


def test_digits_train_prior_sample_and_bits_per_dim(tmp_path: Path) -> None:
    torch.manual_seed(0)
    recipe = load_vision_recipe("digits", TINY)
    run = tmp_path / "vq"
    first = train_vision(recipe, None, run, steps=2, device="cpu")
    assert first.step == 2 and not first.interrupted
    assert load_payload(first.checkpoint, ("image-vqvae",))["kind"] == "image-vqvae"
    assert (run / "samples" / "step0000002" / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    assert first.last_eval is not None and math.isfinite(
        first.last_eval.values["reconstruction_bits_per_dim"]
    )
    with pytest.raises(ConfigError, match="--resume"):
        train_vision(recipe, None, run, steps=2, device="cpu")
    resumed = train_vision(recipe, None, run, steps=3, resume=True, device="cpu")
    assert resumed.step == 3

    prior_run = tmp_path / "prior"
    fitted = train_vision_prior(resumed.checkpoint, None, prior_run, steps=2, device="cpu")
    assert load_payload(fitted.checkpoint, ("image-prior",))["kind"] == "image-prior"
    assert fitted.last_eval is not None
    values = fitted.last_eval.values
    assert values["bits_per_dim"] == pytest.approx(
        values["reconstruction_bits_per_dim"] + values["prior_bits_per_dim"]
    )
    assert (prior_run / "samples" / "step0000002" / "samples.png").is_file()

    bpd = bits_per_dim(resumed.checkpoint, fitted.checkpoint, None, max_images=6, device="cpu")
    assert bpd.prior_kind == "pixelcnn" and bpd.images == 6
    assert bpd.total == pytest.approx(bpd.reconstruction + bpd.prior)
    uniform = bits_per_dim(resumed.checkpoint, None, None, max_images=6, device="cpu")
    assert uniform.reconstruction == pytest.approx(bpd.reconstruction)
    assert uniform.prior == pytest.approx(64 * math.log2(16) / 3072)

    images = sample_images(
        resumed.checkpoint, fitted.checkpoint, tmp_path / "s.png", n=4, seed=0, device="cpu"
    )
    assert images.shape == (4, 3, 32, 32) and (tmp_path / "s.png").is_file()
    again = sample_images(
        resumed.checkpoint, fitted.checkpoint, tmp_path / "t.png", n=4, seed=0, device="cpu"
    )
    assert torch.equal(images, again)  # seeded
    one_class = sample_images(
        resumed.checkpoint, fitted.checkpoint, tmp_path / "u.png", n=2, label=3, device="cpu"
    )
    assert one_class.shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match="label"):
        sample_images(resumed.checkpoint, fitted.checkpoint, tmp_path / "v.png", n=2, label=10, device="cpu")
    grid = reconstruction_grid(resumed.checkpoint, None, tmp_path / "r.png", n=4, device="cpu")
    assert grid.shape == (8, 3, 32, 32) and (tmp_path / "r.png").is_file()

    # a prior belongs to the VQ-VAE it was trained on
    other = train_vision(
        load_vision_recipe("digits", [*TINY, "train.seed=1"]), None, tmp_path / "o", steps=1, device="cpu"
    )
    with pytest.raises(ModelMismatchError, match="another VQ-VAE"):
        sample_images(other.checkpoint, fitted.checkpoint, tmp_path / "w.png", n=1, device="cpu")
