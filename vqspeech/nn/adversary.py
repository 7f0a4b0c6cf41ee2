"""An adversarial speaker classifier on the codes, through a gradient-reversal layer (issue #7).

The VQ-VAE's codes should say *what* was said and leave *who* said it to the speaker vector
(the paper's section 4.3). Measured on the synthetic corpora, they do not: a code histogram
names the voice (see :mod:`vqspeech.evaluation`), so a decoder can lean on the codes for the
voice, and an unseen speaker's vector then matters less than it should.

:class:`CodeSpeakerAdversary` is a small per-frame classifier, quantised latents ``[B, D, F]``
-> speaker logits ``[B, S, F]`` (batch norm, then two 1x1 convolutions: one frame, one
code, as the per-token leakage measure sees it). It is trained to name the speaker; its input passes through
:func:`reverse_gradient`, so the encoder above it receives the *negated* gradient, scaled by
``weight``, and learns to choose codes from which the speaker cannot be told (the domain-
adversarial training of Ganin and Lempitsky, ICML 2015). The codebook vectors themselves reach
the classifier through the straight-through estimator's detached branch, so only the encoder
is pushed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """Identity forward; backward multiplies the incoming gradient by ``-weight``."""
    return _ReverseGradient.apply(x, weight)  # type: ignore[no-any-return]


class CodeSpeakerAdversary(nn.Module):
    """Per-frame speaker classifier on quantised latents, behind a gradient reversal.

    ``forward(quantized [B, D, F], speaker ids [B]) -> cross-entropy`` (scalar, nats, mean over
    frames): minimising it trains the classifier and, through the reversal, pushes the encoder
    by ``-weight`` times the same gradient. Chance level is ``ln(n_speakers)``.
    """

    def __init__(self, dim: int, n_speakers: int, weight: float, hidden: int = 256) -> None:
        super().__init__()
        self.weight = weight
        # Batch normalisation first (no affine): latents can sit in a narrow range (early in
        # training, 1e-3 around an offset), and a classifier that needs weights of 1e3 to read
        # them would learn too slowly to push back. It normalises over the batch and time, so
        # differences between speakers are kept.
        self.net = nn.Sequential(
            nn.BatchNorm1d(dim, affine=False),
            nn.Conv1d(dim, hidden, 1),
            nn.ReLU(),
            nn.Conv1d(hidden, n_speakers, 1),
        )

    def forward(self, quantized: Tensor, speaker: Tensor) -> Tensor:
        logits = self.net(reverse_gradient(quantized, self.weight))  # [B, S, F]
        target = speaker[:, None].expand(-1, logits.shape[-1])
        return F.cross_entropy(logits.float(), target)
