"""Writing image grids (PNG) and animations (GIF) atomically.

PNG is written here with :mod:`zlib` (no dependency). GIF needs Pillow, which comes with
matplotlib (the optional ``[train]`` extra); without it :func:`write_gif` raises an
:class:`~vqspeech.errors.OutputError` that says what to install.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np
import torch

from vqspeech.errors import OutputError
from vqspeech.files import write_atomic


def image_grid(
    images: torch.Tensor | np.ndarray, columns: int, padding: int = 2, fill: int = 255
) -> np.ndarray:
    """``[N, C, H, W]`` uint8 (C = 1 or 3) -> one ``[rows*(H+p)+p, columns*(W+p)+p, 3]`` uint8 picture."""
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    array = array.astype(np.uint8)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {array.shape}")
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    n, _, h, w = array.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, 3), fill, np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = array[k].transpose(1, 2, 0)
    return grid


def png_bytes(picture: np.ndarray) -> bytes:
    """``[H, W, 3]`` uint8 -> PNG bytes (8-bit RGB, no interlace)."""
    picture = np.ascontiguousarray(picture, dtype=np.uint8)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"picture must be [H, W, 3], got {picture.shape}")
    h, w, _ = picture.shape
    # Each scanline starts with filter type 0 (none).
    raw = np.concatenate([np.zeros((h, 1), np.uint8), picture.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write ``[H, W, 3]`` uint8 as a PNG, atomically."""
    data = png_bytes(picture)
    return write_atomic(Path(path), lambda handle: handle.write(data), "PNG")


def write_gif(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float = 8.0, scale: int = 1) -> Path:
    """Write ``[T, 3, H, W]`` uint8 frames as a looping GIF (Pillow), each ``scale`` x larger."""
    try:
        from PIL import Image
    except ImportError:
        raise OutputError(
            "writing a GIF needs Pillow: pip install 'vqspeech[train]' (or pillow); PNGs need nothing"
        ) from None
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    array = array.astype(np.uint8).transpose(0, 2, 3, 1)
    if scale > 1:
        array = array.repeat(scale, axis=1).repeat(scale, axis=2)
    pictures = [Image.fromarray(np.ascontiguousarray(frame)) for frame in array]
    duration = max(20, 10 * round(100 / fps))  # GIF stores centiseconds

    def save(handle: IO[bytes]) -> None:
        pictures[0].save(
            handle, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0
        )

    return write_atomic(Path(path), save, "GIF")
