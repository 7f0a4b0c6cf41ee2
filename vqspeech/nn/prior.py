"""An autoregressive prior over speech codes (project issue #8): the float model, in torch.

:class:`CodePrior` (torch) models ``p(code_t | codes_<t, speaker)`` with a causal dilated conv
stack: embedded codes, shifted by one step behind a learned start vector, pass residual blocks
``x += proj(relu(causal_conv(x) + speaker_bias))``, then ``relu -> linear -> relu -> linear``
gives logits over the ``K`` codes. It trains teacher-forced (:meth:`CodePrior.forward`) and
samples with per-layer ring buffers (:meth:`CodePrior.sample`: O(layers) work per token).

Its exact integer twin, for entropy coding, is :class:`vqspeech.nn.prior_int.IntegerCodePrior`
(numpy only, other rules: see that module).

Speakers are ids ``0 .. n_speakers - 1``; :data:`~vqspeech.prior_config.UNKNOWN_SPEAKER` (-1) selects
the extra "unknown speaker" row that training uses for speaker dropout.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.prior_config import PriorConfig, check_prior_config

# --------------------------------------------------------------------------------------------
# The float model


class CodePrior(nn.Module):
    """Causal dilated conv prior over ``K = config.codebook_size`` codes.

    ``forward(codes [B, T] int64, speaker [B] int64) -> logits [B, T, K]``: row ``t`` depends
    only on ``codes[:, :t]`` and the speaker (row 0 on the speaker alone). Speaker ids are
    ``0 .. n_speakers - 1``, or :data:`~vqspeech.prior_config.UNKNOWN_SPEAKER` for none.
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        check_prior_config(config)
        self.config = config
        c, k = config.channels, config.kernel_size
        # Row K is the start vector: position 0's input, as there is no previous code.
        self.embedding = nn.Embedding(config.codebook_size + 1, c)
        # Each layer's additive speaker bias, for every speaker and for "unknown" (last row).
        self.speaker_bias = nn.Embedding(config.n_speakers + 1, config.n_layers * c)
        nn.init.zeros_(self.speaker_bias.weight)
        self.convs = nn.ModuleList(nn.Conv1d(c, c, k, dilation=d) for d in config.dilations)
        self.projs = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in config.dilations)
        self.head = nn.Conv1d(c, c, 1)
        self.out = nn.Conv1d(c, config.codebook_size, 1)
        with torch.no_grad():  # residual branches start small, so the stack starts near identity
            for _, proj, _ in self.blocks:
                proj.weight.mul_(1.0 / math.sqrt(config.n_layers))

    @property
    def blocks(self) -> list[tuple[nn.Conv1d, nn.Conv1d, int]]:
        """Each residual block's (dilated conv, 1x1 projection, dilation), typed."""
        convs = [typing.cast(nn.Conv1d, m) for m in self.convs]
        projs = [typing.cast(nn.Conv1d, m) for m in self.projs]
        return list(zip(convs, projs, self.config.dilations, strict=True))

    def speaker_rows(self, speaker: Tensor) -> Tensor:
        """Speaker ids ``[B]`` -> rows of the speaker table (``UNKNOWN_SPEAKER`` -> the last)."""
        n = self.config.n_speakers
        return torch.where(speaker < 0, torch.full_like(speaker, n), speaker)

    def _biases(self, speaker: Tensor) -> Tensor:
        """``[B, layers, C]`` speaker biases."""
        rows = self.speaker_bias(self.speaker_rows(speaker))
        return rows.view(speaker.shape[0], self.config.n_layers, self.config.channels)

    def _logits(self, x: Tensor) -> Tensor:
        """Residual stream ``[B, C, T]`` -> logits ``[B, K, T]``."""
        return self.out(F.relu(self.head(F.relu(x))))

    def forward(self, codes: Tensor, speaker: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, K]`` for codes ``[B, T]`` (int64) of speakers ``[B]``."""
        start = torch.full_like(codes[:, :1], self.config.codebook_size)
        x = self.embedding(torch.cat([start, codes[:, :-1]], dim=1)).transpose(1, 2)
        biases = self._biases(speaker)
        k = self.config.kernel_size
        for i, (conv, proj, d) in enumerate(self.blocks):
            h = F.relu(conv(F.pad(x, ((k - 1) * d, 0))) + biases[:, i, :, None])
            x = x + proj(h)
        return self._logits(x).transpose(1, 2)

    @torch.no_grad()
    def sample(
        self,
        speaker: Tensor,
        n_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw codes ``[B, n_tokens]`` (int64) for speakers ``[B]``, one token at a time.

        Each layer keeps a ring buffer of its last ``(kernel_size - 1) * dilation + 1`` inputs,
        so a token costs one pass through the layers, not a pass over the whole sequence.
        ``temperature`` divides the logits (0: argmax). The same ``generator`` seed gives the
        same codes. Equal to sampling from :meth:`forward`'s logits position by position.
        """
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        codes, _ = self._incremental(
            speaker, n_tokens, lambda t, logits: _draw(logits, temperature, generator)
        )
        return codes

    @torch.no_grad()
    def incremental_logits(self, codes: Tensor, speaker: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, K]`` computed as :meth:`sample` computes them, a token at
        a time with ring buffers: equal to :meth:`forward`'s up to float rounding."""
        return self._incremental(speaker, codes.shape[1], lambda t, logits: codes[:, t], keep_logits=True)[1]

    def _incremental(
        self,
        speaker: Tensor,
        n_tokens: int,
        choose: Callable[[int, Tensor], Tensor],
        keep_logits: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Run ``n_tokens`` steps; ``choose(t, logits [B, K])`` gives code ``t`` ``[B]``.

        Returns the codes ``[B, n]`` and, with ``keep_logits``, the logits ``[B, n, K]``.
        """
        cfg = self.config
        b, c, k = speaker.shape[0], cfg.channels, cfg.kernel_size
        device = self.embedding.weight.device
        biases = self._biases(speaker.to(device))
        blocks = self.blocks
        weights = [conv.weight.permute(0, 2, 1).reshape(c, k * c) for conv, _, _ in blocks]  # [C, k*C]
        sizes = [(k - 1) * d + 1 for d in cfg.dilations]
        buffers = [torch.zeros(b, size, c, device=device) for size in sizes]
        prev = torch.full((b,), cfg.codebook_size, dtype=torch.long, device=device)
        out = torch.empty(b, n_tokens, dtype=torch.long, device=device)
        kept = torch.empty(b, n_tokens if keep_logits else 0, cfg.codebook_size, device=device)
        for t in range(n_tokens):
            x = self.embedding(prev)  # [B, C]
            for i, (conv, proj, d) in enumerate(blocks):
                buf, size = buffers[i], sizes[i]
                buf[:, t % size] = x
                taps = buf[:, [(t - (k - 1 - j) * d) % size for j in range(k)]]  # [B, k, C]
                h = F.relu(F.linear(taps.reshape(b, k * c), weights[i], conv.bias) + biases[:, i])
                x = x + F.linear(h, proj.weight[:, :, 0], proj.bias)
            logits = self._logits(x[:, :, None])[:, :, 0]
            if keep_logits:
                kept[:, t] = logits
            prev = choose(t, logits).to(device)
            out[:, t] = prev
        return out, kept


def _draw(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One code per row of ``logits [B, K]``: argmax at temperature 0, else a softmax sample."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
