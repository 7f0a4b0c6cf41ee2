"""Padded batches of files through the encoder whose codes equal per-file encoding (issue 19).

Per-file encoding pads each file only to a multiple of ``hop_length``, and every conv of the
encoder zero-pads at the file's edges. Padding a short file inside a batch with zeros is *not*
the same: past the file's end a conv sees the previous layer's response to silence (biases,
ReLUs), not zeros, so the last ``receptive_field`` samples' codes change (the old note "batches
changed the last codes"). :func:`encode_padded` passes each row's length to the encoder,
which zeroes every conv's input past that row's end (:meth:`Encoder.forward` with
``lengths``): each row then sees exactly the zero padding it sees alone, and its codes equal
:meth:`Codec.encode_audio`'s (tested on CPU for files of different lengths).

:func:`plan_batches` groups files of similar length (sorted by length, bounded batch size and
padded samples) so little compute goes to padding; files longer than ``max_frames`` go alone,
through the chunked per-file path (bounded memory). On a CPU batches are no faster than files,
so :func:`default_batch_size` is 1 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vqspeech.codec import ENCODE_CHUNK_FRAMES, Codec

#: Files per padded batch on a GPU when the caller does not say.
GPU_BATCH_SIZE = 16
#: Padded samples per batch at most (64 x 10 s at 16 kHz): bounds the encoder's activations.
MAX_BATCH_SAMPLES = 64 * 160_000


def default_batch_size(device: torch.device) -> int:
    """Files per batch when not asked: :data:`GPU_BATCH_SIZE` on CUDA, 1 (per-file) elsewhere."""
    return GPU_BATCH_SIZE if device.type == "cuda" else 1


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    max_samples: int = MAX_BATCH_SAMPLES,
    max_length: int | None = None,
) -> list[list[int]]:
    """Group item indices into batches of similar ``lengths`` (samples).

    Items sorted by length (ties by index) fill a batch until it holds ``batch_size`` items or
    ``len(batch) x longest`` would pass ``max_samples``; items longer than ``max_length`` get a
    batch of their own. Every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if max_length is not None and lengths[i] > max_length:
            batches.append([i])
            continue
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[i] > max_samples):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def encode_padded(codec: Codec, audios: Sequence[np.ndarray], *, precision: str = "fp32") -> list[np.ndarray]:
    """Mono float audios ``[T_i]`` at the model's rate -> int64 codes ``[1, ceil(T_i / hop)]`` each,
    in one padded forward pass; each equals ``codec.encode_audio(audio)`` (fp32).

    ``precision`` ``bf16`` runs the encoder under bfloat16 autocast (the codes may then differ
    from fp32's; the benchmark measures how often); the quantiser's distances stay fp32.
    A file longer than :data:`~vqspeech.codec.ENCODE_CHUNK_FRAMES` frames is better sent alone
    through :meth:`Codec.encode_audio` (chunked, bounded memory); this pads everything to the
    longest.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if not audios:
        return []
    hop = codec.hop_length
    lengths = [-(-int(a.shape[0]) // hop) * hop for a in audios]
    batch = np.zeros((len(audios), max(lengths)), dtype=np.float32)
    for row, audio in zip(batch, audios, strict=True):
        row[: audio.shape[0]] = audio
    x = torch.from_numpy(batch).to(codec.device)
    model = codec.model
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        latents = model.encoder(x, torch.tensor(lengths, device=x.device))
    codes = model.quantizer.quantize(latents).cpu().numpy().astype(np.int64, copy=False)
    return [codes[i : i + 1, : n // hop].copy() for i, n in enumerate(lengths)]


def encode_batches(
    codec: Codec,
    audios: Sequence[np.ndarray],
    batch_size: int,
    *,
    precision: str = "fp32",
    max_frames: int = ENCODE_CHUNK_FRAMES,
) -> list[np.ndarray]:
    """Codes of every audio (as :meth:`Codec.encode_audio`), via :func:`plan_batches` batches;
    files over ``max_frames`` frames are encoded alone, chunked. Results in input order."""
    hop = codec.hop_length
    lengths = [int(a.shape[0]) for a in audios]
    out: list[np.ndarray | None] = [None] * len(audios)
    for group in plan_batches(lengths, batch_size, max_length=max_frames * hop):
        if len(group) == 1 and lengths[group[0]] > max_frames * hop:
            out[group[0]] = codec.encode_audio(audios[group[0]], max_frames)
            continue
        codes = encode_padded(codec, [audios[i] for i in group], precision=precision)
        for i, one in zip(group, codes, strict=True):
            out[i] = one
    done = [c for c in out if c is not None]
    assert len(done) == len(audios), "plan_batches placed every file"
    return done
