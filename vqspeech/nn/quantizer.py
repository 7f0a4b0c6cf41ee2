"""Vector quantiser of the VQ-VAE (van den Oord et al. 2017, section 3.1 and appendix A.1).

The quantiser does not care about modality: it takes encoder outputs ``z_e`` of shape
``[B, D, *spatial]`` (1-d audio ``[B, D, T]``, 2-d images ``[B, D, H, W]``, 3-d video
``[B, D, T, H, W]``), flattens them to ``N = B * prod(spatial)`` vectors of size ``D`` and
replaces each by its nearest code in a ``[K, D]`` codebook (squared L2 distance).

Two ways to learn the codebook:

* gradient (default): the codebook is an ``nn.Parameter`` trained by the codebook loss
  ``||sg[z_e] - e||^2`` (paper eq. 3, second term);
* EMA (``config.ema``, appendix A.1): the codebook is a buffer holding exponential moving
  averages of the encoder outputs assigned to each code; the codebook loss is still reported,
  for logging, but carries no gradient.

Optional extras: k-means initialisation from the first training batch
(``config.kmeans_init``) and re-seeding of codes unused for ``config.dead_code_steps``
training steps. All state (codebook, EMA statistics, "k-means done" flag, usage counters)
lives in registered buffers/parameters, so ``state_dict()`` round-trips exactly.

State changes (EMA, k-means, restarts, usage counters) happen in ``forward`` only when the
module is in training mode (``self.training``), whether or not gradients are enabled; ``eval()``
mode is read-only. Do not wrap the quantiser in activation checkpointing: a recomputed forward
would update the statistics twice.

Under ``torch.distributed`` (when initialised) every training forward is a collective: code
counts and EMA sums are all-reduced, k-means and restarts are computed on rank 0 and broadcast,
so every replica holds a bitwise identical codebook. Every rank must therefore run the same
number of training forwards (as DDP already requires); eval-mode forwards issue no collectives,
so evaluating on rank 0 alone is safe.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import QuantizerConfig
from vqspeech.recipe_io import require

# Bound on the size of one [n, K] block of the distance matrix (floats): 2**24 floats is
# 64 MiB, so N can be arbitrarily large at constant memory.
_DISTANCE_BLOCK_ELEMENTS = 2**24

# Window (training steps) used by usage_stats() when dead-code restarts are off: about one
# time constant of an EMA with decay 0.99.
_DEFAULT_USAGE_WINDOW = 100


class VQOutput(NamedTuple):
    """Result of :meth:`VectorQuantizer.forward`.

    Attributes:
        quantized: ``[B, D, *spatial]``, dtype of the input. Its value is exactly the chosen
            code vectors; its gradient flows unchanged to ``z_e`` (straight-through estimator,
            paper section 3.1): ``z_e + sg[e - z_e]``.
        codes: ``[B, *spatial]`` int64 code indices in ``[0, K)``.
        codebook_loss: scalar fp32, ``mean((sg[z_e] - e)^2)`` over all ``N * D`` elements.
            With EMA it is a logging value with no gradient (the codebook is a buffer).
        commitment_loss: scalar fp32, ``beta * mean((z_e - sg[e])^2)``. **beta is already
            applied**: add it to the total loss as it is.
        perplexity: scalar fp32, ``exp(entropy)`` of the batch's code-usage distribution
            (1 = one code used, K = uniform use of all codes).
        usage: ``[K]`` fp32 counts of each code in this batch; in training mode under
            ``torch.distributed`` they are summed over all ranks.
    """

    quantized: Tensor
    codes: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    usage: Tensor


class CodebookUsage(NamedTuple):
    """Codebook health for logging (see :meth:`VectorQuantizer.usage_stats`).

    Attributes:
        steps_since_used: ``[K]`` int64, training steps since each code was last chosen
            (0 = chosen in the latest step; codes start at 0).
        active: codes chosen within the last ``window`` training steps.
        dead: codes not chosen for ``window`` steps or more (``K - active``).
        window: the window, in training steps.
    """

    steps_since_used: Tensor
    active: int
    dead: int
    window: int


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with optional EMA, k-means init and dead-code restart.

    Args:
        config: ``dim`` (D), ``codebook_size`` (K), ``beta`` (commitment weight, paper: 0.25),
            ``ema`` / ``ema_decay`` / ``ema_eps`` (appendix A.1), ``kmeans_init`` /
            ``kmeans_iters``, ``dead_code_steps`` (0 disables restarts).

    The codebook starts uniform in ``[-1/K, 1/K]`` (as in the reference implementations);
    with ``kmeans_init`` it is replaced on the first training forward. Distances and all
    codebook updates run in fp32, even under ``torch.autocast``.

    State (``state_dict`` keys): ``embedding`` ``[K, D]`` (a parameter, or a buffer with EMA),
    ``initialized`` (bool scalar, False until k-means has run), ``steps_since_used`` ``[K]``
    int64, and with EMA ``ema_count`` ``[K]`` and ``ema_sum`` ``[K, D]``.
    """

    embedding: Tensor
    initialized: Tensor
    steps_since_used: Tensor
    ema_count: Tensor
    ema_sum: Tensor

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        k, d = config.codebook_size, config.dim
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        if config.ema:
            # A buffer, so no optimiser touches it: the EMA is its only writer.
            self.register_buffer("embedding", init)
            # Start as if each code had been chosen once at its own position, so that
            # e_i = m_i / N_i holds from the first step. Zero counts (as in Sonnet v1) would
            # divide gamma * e_i by a smoothed count of about eps for every code unused in the
            # first batch, throwing it far from the data.
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("initialized", torch.tensor(not config.kmeans_init))
        self.register_buffer("steps_since_used", torch.zeros(k, dtype=torch.long))

    # ------------------------------------------------------------------------------------
    # Public API

    @property
    def codebook(self) -> Tensor:
        """The codebook, ``[K, D]`` fp32, detached (it shares storage with the module's state)."""
        return self.embedding.detach()

    @property
    def codebook_size(self) -> int:
        """K, the number of codes."""
        return self.config.codebook_size

    def forward(self, z_e: Tensor) -> VQOutput:
        """Quantise ``z_e`` ``[B, D, *spatial]``; in training mode also update the codebook state.

        Returns a :class:`VQOutput`. Losses are means over all ``N * D`` elements, in fp32.
        """
        _check_latents(z_e, self.config.dim)
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            flat = _flatten(z_e.detach()).float()  # [N, D]
            # Checks the config first: reading the flag is a device sync.
            if self.training and self.config.kmeans_init and not bool(self.initialized):
                self._kmeans_init(flat)
            flat_codes = self._nearest(flat)  # [N]
            codes = flat_codes.view(z_e.shape[0], *z_e.shape[2:])
            # Look up before any update, so the output uses the codes that were nearest.
            e = self._lookup(codes)  # [B, D, *spatial] fp32
            counts = torch.bincount(flat_codes, minlength=self.codebook_size).float()
            if self.training:
                counts = self._training_update(flat, flat_codes, counts)
            z = z_e.float()
            codebook_loss = F.mse_loss(e, z.detach())
            commitment_loss = self.config.beta * F.mse_loss(z, e.detach())
        # Straight-through (section 3.1), written so the value is exactly e and the gradient
        # w.r.t. z_e is exactly dL/dquantized: e + (z - sg[z]) == z + sg[e - z].
        quantized = e.detach().to(z_e.dtype) + (z_e - z_e.detach())
        return VQOutput(quantized, codes, codebook_loss, commitment_loss, _perplexity(counts), counts)

    def quantize(self, z_e: Tensor) -> Tensor:
        """Codes of ``z_e`` ``[B, D, *spatial]`` -> ``[B, *spatial]`` int64. No state change, no losses."""
        _check_latents(z_e, self.config.dim)
        with torch.no_grad(), torch.autocast(device_type=z_e.device.type, enabled=False):
            flat_codes = self._nearest(_flatten(z_e).float())
        return flat_codes.view(z_e.shape[0], *z_e.shape[2:])

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors: ``codes`` ``[B, *spatial]`` (integers in ``[0, K)``) -> ``[B, D, *spatial]`` fp32."""
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.dim() < 2:
            raise ValueError(
                f"codes must be [B, *spatial] (at least one spatial dim), got {tuple(codes.shape)}"
            )
        if codes.numel():
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                raise ValueError(
                    f"codes must lie in [0, {self.codebook_size}), got values in [{low}, {high}]"
                )
        return self._lookup(codes.long())

    def usage_stats(self, window: int | None = None) -> CodebookUsage:
        """Codebook health from the usage counters (training steps only).

        Args:
            window: training steps that count as "recent"; default ``dead_code_steps``, or
                100 when restarts are off.
        """
        if window is None:
            window = self.config.dead_code_steps or _DEFAULT_USAGE_WINDOW
        if window < 1:
            raise ValueError(f"window must be at least 1 training step, got {window}")
        steps = self.steps_since_used.detach().clone()
        active = int((steps < window).sum())
        return CodebookUsage(steps, active, self.codebook_size - active, window)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"dim={c.dim}, codebook_size={c.codebook_size}, beta={c.beta}, ema={c.ema}, "
            f"kmeans_init={c.kmeans_init}, dead_code_steps={c.dead_code_steps}"
        )

    # ------------------------------------------------------------------------------------
    # Nearest neighbour

    def _distances(self, x: Tensor, codebook: Tensor) -> Tensor:
        """Squared L2 distances ``[n, K]`` between ``x`` ``[n, D]`` and ``codebook`` ``[K, D]`` (fp32).

        ``||x||^2 - 2 x e^T + ||e||^2`` as one addmm: no ``[n, K, D]`` intermediate.
        """
        x_sq = x.pow(2).sum(1, keepdim=True)  # [n, 1]
        e_sq = codebook.pow(2).sum(1)  # [K]
        return torch.addmm(x_sq + e_sq, x, codebook.t(), beta=1.0, alpha=-2.0)

    def _nearest(self, x: Tensor, codebook: Tensor | None = None) -> Tensor:
        """Index ``[N]`` int64 of the nearest code for each row of ``x`` ``[N, D]`` fp32.

        Processed in blocks of rows so memory stays bounded whatever N is.
        """
        cb = self.embedding.detach().float() if codebook is None else codebook
        block = max(1, _DISTANCE_BLOCK_ELEMENTS // cb.shape[0])
        if x.shape[0] <= block:
            return self._distances(x, cb).argmin(1)
        return torch.cat([self._distances(chunk, cb).argmin(1) for chunk in x.split(block)])

    def _lookup(self, codes: Tensor) -> Tensor:
        """``[B, *spatial]`` int64 -> ``[B, D, *spatial]`` fp32 (keeps the codebook's gradient)."""
        return F.embedding(codes, self.embedding.float()).movedim(-1, 1)

    # ------------------------------------------------------------------------------------
    # Training-time state updates (all under no_grad, all fp32)

    def _training_update(self, flat: Tensor, codes: Tensor, counts: Tensor) -> Tensor:
        """EMA, usage counters and dead-code restart for one training step; returns global counts ``[K]``."""
        with torch.no_grad():
            if self.config.ema:
                sums = torch.zeros_like(self.embedding, dtype=torch.float32).index_add_(0, codes, flat)
                # One collective for both: [K, 1 + D].
                stats = _all_reduce_sum(torch.cat([counts[:, None], sums], dim=1))
                counts, sums = stats[:, 0], stats[:, 1:]
                self._ema_update(counts, sums)
            else:
                counts = _all_reduce_sum(counts)
            used = counts > 0
            self.steps_since_used.add_(1).masked_fill_(used, 0)
            if self.config.dead_code_steps > 0:
                self._restart_dead_codes(flat)
        return counts

    def _ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """Appendix A.1 with Laplace smoothing of the counts.

        ``N_i <- g N_i + (1 - g) n_i``; ``m_i <- g m_i + (1 - g) sum_{z -> i} z``;
        ``N_i' = (N_i + eps) / (n + K eps) * n`` with ``n = sum_i N_i``; ``e_i = m_i / N_i'``.
        The smoothing keeps ``N_i' > 0`` for codes that have not been chosen for a long time.

        Args:
            counts: ``[K]`` number of vectors assigned to each code this step (all ranks).
            sums: ``[K, D]`` sum of the vectors assigned to each code this step (all ranks).
        """
        gamma, eps = self.config.ema_decay, self.config.ema_eps
        self.ema_count.mul_(gamma).add_(counts, alpha=1.0 - gamma)
        self.ema_sum.mul_(gamma).add_(sums, alpha=1.0 - gamma)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + eps) / (n + self.codebook_size * eps) * n
        self.embedding.copy_(self.ema_sum / smoothed[:, None])

    def _kmeans_init(self, flat: Tensor) -> None:
        """Replace the codebook by k-means centroids of this batch ``flat`` ``[N, D]`` (rank 0, broadcast)."""
        with torch.no_grad():
            k, d = self.embedding.shape
            # [K, 1 + D]: cluster sizes and centroids, computed on rank 0 and sent to all ranks.
            state = torch.empty(k, 1 + d, device=flat.device)
            if _rank() == 0:
                centroids, sizes = self._kmeans(flat, self.config.kmeans_iters)
                state = torch.cat([sizes[:, None], centroids], dim=1)
            state = _broadcast(state)
            sizes, centroids = state[:, 0], state[:, 1:]
            self.embedding.copy_(centroids)
            if self.config.ema:
                # Match the EMA to the centroids: m_i / N_i = e_i. Sizes are scaled by the world
                # size to the magnitude of the all-reduced counts the EMA sees next; empty
                # clusters count as 1 so N_i > 0.
                count = (sizes * _world_size()).clamp(min=1.0)
                self.ema_count.copy_(count)
                self.ema_sum.copy_(centroids * count[:, None])
            self.initialized.fill_(True)

    def _kmeans(self, x: Tensor, iters: int) -> tuple[Tensor, Tensor]:
        """Lloyd's k-means on ``x`` ``[N, D]`` fp32 with K = codebook size.

        Seeded with k-means++ (Arthur & Vassilvitskii 2007): with plain random seeding, several
        seeds often land in one cluster and Lloyd's iterations never move them out, leaving
        whole clusters without a code. An empty cluster keeps its previous centroid (a data
        point). Returns the centroids ``[K, D]`` and the sizes ``[K]`` (fp32) of their clusters.
        """
        k = self.codebook_size
        centroids = _kmeans_plus_plus(x, k)
        for _ in range(iters):
            assign = self._nearest(x, centroids)
            sizes = torch.bincount(assign, minlength=k).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            centroids = torch.where(sizes[:, None] > 0, sums / sizes.clamp(min=1.0)[:, None], centroids)
        sizes = torch.bincount(self._nearest(x, centroids), minlength=k).float()
        return centroids, sizes

    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Re-seed codes unused for ``>= dead_code_steps`` training steps from this batch's vectors.

        The dead set comes from the all-reduced counters, so every rank agrees on it; the new
        vectors are drawn on rank 0 and broadcast. Counters and EMA state of the revived codes
        restart as if the code had been chosen once at its new position. Only finite vectors
        are candidates: one non-finite encoder output (a bf16 overflow, a corrupt clip) must not
        become a NaN code that every later distance computation inherits.
        """
        dead = self.steps_since_used >= self.config.dead_code_steps
        n_dead = int(dead.sum())  # one device sync per step, only when restarts are on
        if n_dead == 0:
            return
        seeds = torch.empty(n_dead, flat.shape[1], device=flat.device)
        if _rank() == 0:
            candidates = flat[torch.isfinite(flat).all(dim=1)]
            # no finite vector at all: keep the dead codes where they are (ranks agree via broadcast)
            seeds = _sample_rows(candidates, n_dead) if candidates.shape[0] else self.embedding[dead].float()
        seeds = _broadcast(seeds).to(self.embedding.dtype)
        self.embedding[dead] = seeds
        self.steps_since_used[dead] = 0
        if self.config.ema:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = seeds


# ----------------------------------------------------------------------------------------
# Helpers


def _check_config(config: QuantizerConfig) -> None:
    checks = [
        (config.dim >= 1, "quantizer.dim must be at least 1"),
        (config.codebook_size >= 2, "quantizer.codebook_size must be at least 2"),
        (config.beta >= 0.0, "quantizer.beta must be >= 0"),
        (0.0 < config.ema_decay < 1.0, "quantizer.ema_decay must be in (0, 1)"),
        (config.ema_eps > 0.0, "quantizer.ema_eps must be positive"),
        (config.kmeans_iters >= 0, "quantizer.kmeans_iters must be >= 0"),
        (config.dead_code_steps >= 0, "quantizer.dead_code_steps must be >= 0 (0 disables restarts)"),
    ]
    require(checks)


def _check_latents(z_e: Tensor, dim: int) -> None:
    if z_e.dim() < 3:
        raise ValueError(f"z_e must be [B, D, *spatial] (at least one spatial dim), got {tuple(z_e.shape)}")
    if z_e.shape[1] != dim:
        raise ValueError(f"z_e has {z_e.shape[1]} channels in dim 1, the quantiser expects D={dim}")
    if not z_e.is_floating_point():
        raise ValueError(f"z_e must be a floating-point tensor, got dtype {z_e.dtype}")
    if z_e.numel() == 0:
        raise ValueError(f"z_e is empty: shape {tuple(z_e.shape)}")


def _flatten(z: Tensor) -> Tensor:
    """``[B, D, *spatial]`` -> ``[N, D]`` with N = B * prod(spatial), row-major over (B, *spatial)."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def _perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the distribution ``counts / sum(counts)``; ``0 log 0 = 0``."""
    probs = counts / counts.sum().clamp(min=1.0)
    entropy = -(probs * torch.log(probs.clamp(min=1e-10))).sum()
    return entropy.exp()


def _kmeans_plus_plus(x: Tensor, k: int) -> Tensor:
    """``k`` seeds ``[k, D]`` drawn from the rows of ``x`` ``[N, D]`` by D^2 sampling (k-means++).

    Each new seed is a row drawn with probability proportional to its squared distance to
    the nearest seed so far. Once every distinct row is a seed (N < k, or duplicates), all
    distances are 0 and the ``tiny`` floor makes the draw uniform, i.e. with replacement.
    """
    seeds = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = torch.randint(x.shape[0], (1,), device=x.device)
    seeds[0] = x[first[0]]
    d2 = (x - seeds[0]).pow(2).sum(1)  # [N]
    tiny = torch.finfo(d2.dtype).tiny
    for i in range(1, k):
        pick = torch.multinomial(d2 + tiny, 1)
        seeds[i] = x[pick[0]]
        d2 = torch.minimum(d2, (x - seeds[i]).pow(2).sum(1))
    return seeds


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """``n`` rows of ``x`` ``[N, D]``: distinct when ``N >= n``, with replacement otherwise."""
    if x.shape[0] >= n:
        index = torch.randperm(x.shape[0], device=x.device)[:n]
    else:
        index = torch.randint(x.shape[0], (n,), device=x.device)
    return x[index].clone()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _world_size() -> int:
    return dist.get_world_size() if _distributed() else 1


def _all_reduce_sum(t: Tensor) -> Tensor:
    if _distributed():
        t = t.contiguous()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _broadcast(t: Tensor) -> Tensor:
    """Rank 0's ``t`` on every rank (identity without torch.distributed)."""
    if _distributed():
        t = t.contiguous()
        dist.broadcast(t, src=0)
    return t


__all__ = ["CodebookUsage", "VQOutput", "VectorQuantizer"]
