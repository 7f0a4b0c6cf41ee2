"""Image sets for the image recipes: CIFAR-10 from disk, digits with no download.

* ``cifar10``: the standard ``cifar-10-batches-py`` folder (``data_batch_1`` .. ``_5`` for
  training, ``test_batch`` held out), as distributed at https://www.cs.toronto.edu/~kriz/cifar.html.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, installed with
  scikit-learn, which librosa already requires), upscaled to 32x32 and coloured with a
  foreground and background colour per image, so the CIFAR-10 model runs on them unchanged.

Images are ``uint8`` tensors ``[N, 3, H, W]``; labels ``int64`` ``[N]``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vqspeech.errors import DataError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class ImageSet(NamedTuple):
    """Images ``[N, C, H, W]`` uint8 and their class labels ``[N]`` int64 in ``[0, n_classes)``."""

    images: torch.Tensor
    labels: torch.Tensor
    n_classes: int


class ImageSplits(NamedTuple):
    train: ImageSet
    valid: ImageSet


def load_image_splits(dataset: str, root: str | Path | None, valid_images: int) -> ImageSplits:
    """Training and held-out images of ``dataset`` (``digits`` or ``cifar10``).

    ``root`` is the CIFAR-10 folder (``cifar-10-batches-py`` itself or its parent); digits
    ignore it. ``valid_images`` caps the held-out set (digits: the last ones).
    """
    if dataset == "digits":
        full = digits_images()
        n_valid = min(valid_images, len(full.images) // 2)
        cut = len(full.images) - n_valid
        return ImageSplits(
            ImageSet(full.images[:cut], full.labels[:cut], full.n_classes),
            ImageSet(full.images[cut:], full.labels[cut:], full.n_classes),
        )
    if dataset == "cifar10":
        if root is None:
            raise DataError("the cifar10 recipe needs --data: the cifar-10-batches-py folder (or its parent)")
        folder = cifar10_folder(root)
        train = _concat([read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN])
        test = read_cifar10_batch(folder / CIFAR10_TEST)
        n = min(valid_images, len(test.images))
        return ImageSplits(train, ImageSet(test.images[:n], test.labels[:n], test.n_classes))
    raise DataError(f"unknown image dataset {dataset!r}; use digits or cifar10")


# ---------------------------------------------------------------------------------------
# Digits


# Dark backgrounds and bright foregrounds: every pair stays legible, and a small palette keeps
# the images' information in the strokes (continuous random colours would put several bits
# per sub-pixel into colour precision alone).
_BACKGROUNDS = ((10, 10, 40), (60, 10, 10), (10, 50, 20), (50, 40, 70), (0, 0, 0), (80, 60, 20))
_FOREGROUNDS = (
    (250, 250, 250),
    (255, 200, 40),
    (90, 220, 255),
    (255, 120, 200),
    (140, 255, 120),
    (255, 150, 60),
)


def digits_images(size: int = 32, seed: int = 0) -> ImageSet:
    """scikit-learn's 1797 digits as ``[1797, 3, size, size]`` uint8, coloured per image.

    Each 8x8 image (levels 0..16) is upscaled bilinearly to ``size`` and used as the alpha of
    a foreground colour over a background colour, each drawn (seeded by ``seed``) per image
    from a palette of six: colour gives the model something to code besides the stroke.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits image set comes with scikit-learn: pip install scikit-learn") from None
    bunch: Any = load_digits()
    alpha = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]  # [N, 1, 8, 8]
    alpha = F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    rng = np.random.default_rng(seed)
    n = alpha.shape[0]
    palette_bg = torch.tensor(_BACKGROUNDS, dtype=torch.float32)
    palette_fg = torch.tensor(_FOREGROUNDS, dtype=torch.float32)
    background = palette_bg[rng.integers(len(_BACKGROUNDS), size=n)][:, :, None, None]
    foreground = palette_fg[rng.integers(len(_FOREGROUNDS), size=n)][:, :, None, None]
    images = background * (1 - alpha) + foreground * alpha
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ImageSet(images.round().clamp(0, 255).to(torch.uint8), labels, 10)


# ---------------------------------------------------------------------------------------
# CIFAR-10


def cifar10_folder(root: str | Path) -> Path:
    """``root`` if it holds the batches, else ``root/cifar-10-batches-py``; DataError if neither."""
    root = Path(root)
    for folder in (root, root / CIFAR10_FOLDER):
        if (folder / CIFAR10_TEST).is_file():
            return folder
    raise DataError(
        f"{root} holds no {CIFAR10_FOLDER}/{CIFAR10_TEST}; download and unpack "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and pass its folder as --data"
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what a CIFAR-10 batch holds: dicts, lists, bytes, numpy arrays.

    The CIFAR-10 batches are Python pickles because that is the dataset's own published
    format; this project never writes pickles. Any other global (a function, a class from
    another module) is refused, so a tampered file cannot run code.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def read_cifar10_batch(path: str | Path) -> ImageSet:
    """One ``cifar-10-batches-py`` file -> ``[10000, 3, 32, 32]`` uint8 images and labels."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc.strerror or exc}") from None
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any malformed or foreign pickle
        raise DataError(f"{path} is not a CIFAR-10 python batch ({exc}); re-download it") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (no dict inside); re-download it")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    try:
        array = np.asarray(data, dtype=np.uint8)
        label_array = np.asarray(labels, dtype=np.int64)
        images = array.reshape(-1, 3, 32, 32)
    except (TypeError, ValueError):
        raise DataError(f"{path} does not hold 32x32x3 images with labels; re-download it") from None
    if len(images) != len(label_array) or (
        len(label_array) and not 0 <= label_array.min() <= label_array.max() < 10
    ):
        raise DataError(
            f"{path} has {len(images)} images but {len(label_array)} labels in [0, 10); re-download it"
        )
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(label_array), 10)


def _concat(sets: list[ImageSet]) -> ImageSet:
    return ImageSet(
        torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]), sets[0].n_classes
    )
