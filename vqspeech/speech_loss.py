"""The speech VQ-VAE's training loss over one batch: what ``vqspeech train`` backpropagates.

:func:`speech_loss` is :meth:`vqspeech.train.SpeechTask.loss` without the corpus: it takes a
batch as :class:`vqspeech.data.batches.StepBatches` lays it out and returns the total loss and
the named terms the loop logs. It lives apart from :mod:`vqspeech.train` so that it imports
torch and the model only, not the audio I/O stack (soundfile, soxr) that reading a corpus
needs: ``benchmarks/bench_gpu.py`` runs the real training step on synthetic batches on a
machine that has neither.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vqspeech.errors import DataError


@contextlib.contextmanager
def encoder_hears(net: nn.Module, audio: Tensor | None) -> Iterator[None]:
    """Within the block, ``net``'s VQ-VAE encoder reads ``audio`` ``[B, T]`` instead of the audio
    the model is called with, which stays the decoders' target (``data.augment.target: clean``,
    issue 17). Nothing changes when ``audio`` is None.

    A forward pre-hook on the encoder, removed on leaving: ``VQVAE.forward`` reconstructs the
    audio it encodes, and this keeps it so (and the model unchanged) for everything else.
    """
    if audio is None:
        yield
        return
    model = getattr(net, "module", net)  # DistributedDataParallel wraps the model
    encoder = model.encoder
    assert isinstance(encoder, nn.Module)

    def swap(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if args[0].shape != audio.shape:
            raise DataError(f"encoder input {tuple(audio.shape)} does not match {tuple(args[0].shape)}")
        return (audio, *args[1:])

    handle = encoder.register_forward_pre_hook(swap)
    try:
        yield
    finally:
        handle.remove()


def speech_loss(
    net: nn.Module,
    batch: Sequence[Tensor],
    device: torch.device,
    *,
    reference: bool = False,
    encoder_input: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and named scalar terms of a VQ-VAE (``net``, possibly DDP-wrapped) on ``batch``.

    ``batch`` is ``(audio float [B, T], speaker_id int64 [B])``, then ``reference [B, T_ref]``
    when ``reference`` (the speaker encoder's crops, issue #7), then the encoder's own input
    ``[B, T]`` last when ``encoder_input`` (augmentation with a clean target, issue 17). Each
    tensor is moved to ``device`` (a no-op for tensors already there).
    """
    ref = batch[2].to(device, non_blocking=True) if reference else None
    heard = batch[-1].to(device, non_blocking=True) if encoder_input else None
    with encoder_hears(net, heard):
        out = net(batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True), ref)
    terms = {
        "reconstruction_loss": out.reconstruction_loss,
        "codebook_loss": out.codebook_loss,
        "commitment_loss": out.commitment_loss,
        "perplexity": out.perplexity,
    }
    if out.speaker_loss is not None:
        terms["speaker_loss"] = out.speaker_loss
    if out.adversary_loss is not None:
        terms["adversary_loss"] = out.adversary_loss
    return out.loss, terms
