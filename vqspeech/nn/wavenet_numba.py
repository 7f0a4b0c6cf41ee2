"""The WaveNet's compiled generation backend (``backend="numba"``): its cached step loop in numba.

Another dialect from the rest of :mod:`vqspeech.nn.wavenet`: plain loops over numpy arrays
that numba compiles, with no torch inside the kernel. It computes the same function as the
eager-torch backend there (see that module's docstring for the recursion and the measured
speed-up); numba itself is imported only on first use, never at module import.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from vqspeech.config import WaveNetConfig


def numba_available() -> bool:
    """Whether the compiled ``"numba"`` generation backend can be used here."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class NoiseSource(Protocol):
    def take(self, n: int) -> Tensor:
        """The next ``n`` steps' Gumbel noise, ``[n, B, Q]``."""
        ...


class NumbaEngine:
    """Compiled cached stepping. ``hist[b, offset_l + i]`` is layer ``l``'s ring of ``(K-1) d_l``
    past inputs; ``pos[l]`` indexes its oldest entry (the same for every utterance).

    ``start_class`` is the class fed as "sample -1"; ``block_steps`` is the noise block size
    (steps), which each compiled call covers (rounded to whole frames of ``hop_length``).
    """

    def __init__(
        self, config: WaveNetConfig, hop_length: int, start_class: int, batch: int, block_steps: int
    ) -> None:
        c = config
        self.config = config
        self.hop_length = hop_length
        self.block_steps = block_steps
        sizes = [(c.kernel_size - 1) * d for d in c.dilations]
        self.hist = np.zeros((batch, sum(sizes), c.residual_channels), np.float32)
        self.offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.dilations = np.asarray(c.dilations, np.int64)
        self.pos = np.zeros(c.n_layers, np.int64)
        self.last = np.full(batch, start_class, np.int64)

    def run(
        self,
        fw: Any,
        z: Tensor,
        col0: int,
        n_frames: int,
        spk_bias: Tensor,
        temperature: float,
        noise: NoiseSource,
        forced: Tensor | None,
    ) -> Tensor:
        """One push's frames; ``fw`` is a :class:`~vqspeech.nn.wavenet_torch.FastWeights`: its fields,
        in order, are the kernel's weight arguments. Samples ``[B, n]`` int64, or with ``forced``
        logits ``[B, Q, n]``."""
        c = self.config
        hop, batch, classes = self.hop_length, z.shape[0], c.quantization_channels
        n = n_frames * hop
        weights = [getattr(fw, f.name).contiguous().numpy() for f in dataclasses.fields(fw)]
        call = _KernelCall(
            kernel=_numba_kernel(),
            weights=weights,
            spk_bias=spk_bias.contiguous().numpy(),
            z=z.contiguous().numpy(),
            col0=col0,
            cond_kernel_size=c.cond_kernel_size,
            hop=hop,
            kernel_size=c.kernel_size,
            temperature=float(temperature),
            forced=forced.contiguous().numpy() if forced is not None else np.zeros((batch, 0), np.int64),
            samples=np.zeros((batch, n if forced is None else 0), np.int64),
            logits=np.zeros((batch, n if forced is not None else 0, classes), np.float32),
        )
        # Utterances are independent: split the batch across threads (the kernel drops the
        # GIL). Each utterance's arithmetic is the same whatever the split, and so are results.
        n_threads = max(1, min(batch, torch.get_num_threads()))
        bounds = [round(i * batch / n_threads) for i in range(n_threads + 1)]
        parts = list(itertools.pairwise(bounds))
        group = max(1, self.block_steps // hop)  # frames per compiled call
        with contextlib.ExitStack() as stack:
            pool = None
            if len(parts) > 1:
                pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(len(parts)))
            for f0 in range(0, n_frames, group):
                nf = min(group, n_frames - f0)
                if forced is None and temperature > 0:
                    gumbel = noise.take(nf * hop).numpy()
                else:
                    gumbel = np.zeros((0, batch, classes), np.float32)
                jobs = [functools.partial(call, self, f0, nf, gumbel, a, b) for a, b in parts]
                positions = [job() for job in jobs] if pool is None else list(pool.map(_run_job, jobs))
                self.pos = positions[0]  # every part advanced the rings alike
        if forced is not None:
            return torch.from_numpy(call.logits).permute(0, 2, 1).to(z.device)
        return torch.from_numpy(call.samples).to(z.device)


def _run_job(job: Callable[[], np.ndarray]) -> np.ndarray:
    return job()


@dataclass(eq=False)
class _KernelCall:
    """The arrays of one push, shared by every thread; ``__call__`` runs frames for batch rows ``a:b``."""

    kernel: Callable[..., None]
    weights: list[np.ndarray]
    spk_bias: np.ndarray  # [B, L G]
    z: np.ndarray  # [B, D, n] frames of z_q (with context)
    col0: int
    cond_kernel_size: int
    hop: int
    kernel_size: int
    temperature: float
    forced: np.ndarray  # [B, n] or [B, 0]
    samples: np.ndarray  # [B, n] or [B, 0], written
    logits: np.ndarray  # [B, n, Q] or [B, 0, Q], written

    def __call__(
        self, engine: NumbaEngine, f0: int, nf: int, gumbel: np.ndarray, a: int, b: int
    ) -> np.ndarray:
        """Frames ``f0 .. f0 + nf - 1`` for rows ``a:b``; returns the advanced ring positions."""
        pos = engine.pos.copy()
        self.kernel(
            *self.weights, self.spk_bias[a:b], self.z[a:b], self.col0 + f0, self.cond_kernel_size, nf,
            self.hop, engine.hist[a:b], engine.offsets, engine.dilations, self.kernel_size, pos,
            engine.last[a:b], np.ascontiguousarray(gumbel[:, a:b]), self.temperature, self.forced[a:b],
            self.samples[a:b], self.logits[a:b], f0 * self.hop,
        )  # fmt: skip
        return pos


@functools.cache
def _numba_kernel() -> Callable[..., None]:
    """Compile (or load from numba's on-disk cache) the generation kernel; numba is imported here,
    never at module import."""
    import numba

    @numba.njit(cache=True, nogil=True, fastmath={"contract"})
    def kernel(
        emb: Any,
        w_past: Any,
        w_cur: Any,
        w_res: Any,
        w_skip: Any,
        b_skip: Any,
        w_1: Any,
        b_1: Any,
        w_2: Any,
        b_2: Any,
        w_cond: Any,
        b_cond: Any,
        w_proj: Any,
        spk_bias: Any,
        z: Any,
        col0: int,
        cond_k: int,
        n_frames: int,
        hop: int,
        hist: Any,
        offsets: Any,
        dilations: Any,
        kernel_size: int,
        pos: Any,
        last: Any,
        gumbel: Any,
        temperature: float,
        forced: Any,
        out_samples: Any,
        out_logits: Any,
        out_offset: int,
    ) -> None:
        def fast_tanh(x: Any) -> Any:
            # The 13/6-degree rational approximation of tanh that Eigen (and so TensorFlow) uses:
            # a couple of ulp in float32, and unlike libm's tanh it vectorises.
            x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
            x2 = x * x
            p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
            p = x2 * p + np.float32(-8.60467152213735e-11)
            p = x2 * p + np.float32(5.12229709037114e-08)
            p = x2 * p + np.float32(1.48572235717979e-05)
            p = x2 * p + np.float32(6.37261928875436e-04)
            p = x2 * p + np.float32(4.89352455891786e-03)
            q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
            q = x2 * q + np.float32(2.26843463243900e-03)
            q = x2 * q + np.float32(4.89352518554385e-03)
            return x * p / q

        # Matrix products are written "for input row r: for utterance b: for output g", so
        # each weight row is read once per step for the whole batch and the innermost loop is
        # a contiguous axpy that LLVM vectorises.
        batch, dim = z.shape[0], z.shape[1]
        n_layers, gate = w_cur.shape[0], w_cur.shape[2]
        res, half = emb.shape[1], gate // 2
        skip, classes, cond_ch = b_skip.shape[0], b_2.shape[0], b_cond.shape[0]
        zero, one_half = np.float32(0.0), np.float32(0.5)
        sampling = gumbel.shape[0] > 0
        teacher = forced.shape[1] > 0
        h_cond = np.empty((batch, cond_ch), np.float32)
        cond = np.empty((batch, n_layers * gate), np.float32)
        x = np.empty((batch, res), np.float32)
        a = np.empty((batch, gate), np.float32)
        zs = np.empty((batch, n_layers * half), np.float32)
        h_skip = np.empty((batch, skip), np.float32)
        h_1 = np.empty((batch, skip), np.float32)
        logits = np.empty((batch, classes), np.float32)
        step = 0
        for f in range(n_frames):
            # the frame's conditioning: tanh(conv over cond_k frames of z) -> all layers' gate bias
            for b in range(batch):
                h_cond[b, :] = b_cond
            for d in range(dim):
                for j in range(cond_k):
                    w_row = w_cond[d * cond_k + j]
                    for b in range(batch):
                        v = z[b, d, col0 + f + j]
                        for o in range(cond_ch):
                            h_cond[b, o] += v * w_row[o]
            for b in range(batch):
                for o in range(cond_ch):
                    h_cond[b, o] = fast_tanh(h_cond[b, o])
                cond[b, :] = spk_bias[b]
            for o in range(cond_ch):
                w_row = w_proj[o]
                for b in range(batch):
                    v = h_cond[b, o]
                    for m in range(n_layers * gate):
                        cond[b, m] += v * w_row[m]
            for _ in range(hop):
                for b in range(batch):
                    x[b, :] = emb[last[b]]
                for layer in range(n_layers):
                    dil, size, start = dilations[layer], (kernel_size - 1) * dilations[layer], offsets[layer]
                    oldest = pos[layer]
                    for b in range(batch):
                        a[b, :] = cond[b, layer * gate : (layer + 1) * gate]
                    for j in range(kernel_size - 1):  # past taps x[t - (K-1-j) d], oldest first
                        slot = start + (oldest + j * dil) % size
                        for r in range(res):
                            w_row = w_past[layer, j * res + r]
                            for b in range(batch):
                                v = hist[b, slot, r]
                                for g in range(gate):
                                    a[b, g] += v * w_row[g]
                    for r in range(res):
                        w_row = w_cur[layer, r]
                        for b in range(batch):
                            v = x[b, r]
                            for g in range(gate):
                                a[b, g] += v * w_row[g]
                    for b in range(batch):  # x_l[t] replaces the oldest entry, consumed above
                        hist[b, start + oldest, :] = x[b, :]
                    pos[layer] = (oldest + 1) % size
                    for b in range(batch):
                        for g in range(half):
                            sig = one_half + one_half * fast_tanh(one_half * a[b, half + g])
                            zs[b, layer * half + g] = fast_tanh(a[b, g]) * sig
                    if layer < n_layers - 1:
                        for g in range(half):
                            w_row = w_res[layer, g]
                            for b in range(batch):
                                v = zs[b, layer * half + g]
                                for r in range(res):
                                    x[b, r] += v * w_row[r]
                for b in range(batch):
                    h_skip[b, :] = b_skip
                for m in range(n_layers * half):
                    w_row = w_skip[m]
                    for b in range(batch):
                        v = zs[b, m]
                        for o in range(skip):
                            h_skip[b, o] += v * w_row[o]
                for b in range(batch):
                    for o in range(skip):
                        h_skip[b, o] = max(h_skip[b, o], zero)
                    h_1[b, :] = b_1
                for m in range(skip):
                    w_row = w_1[m]
                    for b in range(batch):
                        v = h_skip[b, m]
                        for o in range(skip):
                            h_1[b, o] += v * w_row[o]
                for b in range(batch):
                    for o in range(skip):
                        h_1[b, o] = max(h_1[b, o], zero)
                    logits[b, :] = b_2
                for m in range(skip):
                    w_row = w_2[m]
                    for b in range(batch):
                        v = h_1[b, m]
                        for o in range(classes):
                            logits[b, o] += v * w_row[o]
                t = out_offset + step
                for b in range(batch):
                    if teacher:
                        out_logits[b, t, :] = logits[b, :]
                        last[b] = forced[b, t]
                        continue
                    best, best_value = 0, -np.inf
                    for o in range(classes):
                        v = logits[b, o]
                        if sampling:
                            v += np.float32(temperature) * gumbel[step, b, o]
                        if v > best_value:
                            best, best_value = o, v
                    out_samples[b, t] = best
                    last[b] = best
                step += 1

    return kernel  # type: ignore[no-any-return]
