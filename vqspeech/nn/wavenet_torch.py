"""The eager-torch backend of WaveNet generation, twin of :mod:`vqspeech.nn.wavenet_numba`.

:class:`vqspeech.nn.wavenet.WaveNetStream` runs one of two engines that compute the same
function: this one (on GPU, for non-float32 weights, or when numba is missing) and the compiled
numba one. Both step the cached "fast wavenet" recursion over :class:`FastWeights`, the
parameters re-laid out once per push; this one arranges the step to issue as few torch ops as
possible (:func:`_run_frame`), because eager torch costs microseconds per op whatever its size.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vqspeech.config import WaveNetConfig
from vqspeech.nn.wavenet_numba import NoiseSource


@dataclass(eq=False)
class FastWeights:
    """A WaveNet's parameters re-laid out as ``[in, out]`` matrices; rebuilt from the module on every
    push (by ``vqspeech.nn.wavenet``). Both engines read them: this module's, and the numba one,
    whose kernel's weight arguments are these fields, in this order.
    """

    embedding: Tensor  # [Q, R]
    w_past: Tensor  # [L, (K-1) R, G]: the K-1 past taps of every layer, oldest first
    w_cur: Tensor  # [L, R, G]: the current tap
    w_res: Tensor  # [L-1, G/2, R]
    w_skip: Tensor  # [L G/2, S]
    b_skip: Tensor
    w_1: Tensor  # [S, S]
    b_1: Tensor
    w_2: Tensor  # [S, Q]
    b_2: Tensor
    w_cond: Tensor  # [D k, C]: the conditioning conv unrolled over its k frames
    b_cond: Tensor
    w_proj: Tensor  # [C, L G]


class TorchEngine:
    """Eager-torch cached stepping. Queue ``l`` holds ``x_l`` at steps ``t - (K-1) d_l .. t - 1``."""

    def __init__(
        self, config: WaveNetConfig, hop_length: int, start_class: int, batch: int, like: Tensor
    ) -> None:
        c = config
        self.config = config
        self.hop_length = hop_length
        # zeros before the start == the forward pass's causal padding. Every slot is its own
        # tensor: the step overwrites the slot that has just left the window.
        sizes = [(c.kernel_size - 1) * d for d in c.dilations]
        slots = like.new_zeros(sum(sizes), batch, c.residual_channels)
        self.queues = [collections.deque(part.unbind(0), maxlen=len(part)) for part in slots.split(sizes)]
        self.last = torch.full((batch,), start_class, dtype=torch.long, device=like.device)

    def run(
        self,
        fw: FastWeights,
        z: Tensor,
        col0: int,
        n_frames: int,
        spk_bias: Tensor,
        temperature: float,
        noise: NoiseSource,
        forced: Tensor | None,
    ) -> Tensor:
        c = self.config
        hop, k, batch = self.hop_length, c.cond_kernel_size, z.shape[0]
        n = n_frames * hop
        if forced is not None:
            out = fw.embedding.new_empty(batch, c.quantization_channels, n)
        else:
            out = torch.empty(batch, n, dtype=torch.long, device=z.device)
        if n == 0:
            return out
        st = _StepState.start(self, fw, batch)
        with _single_thread(z.device):
            for f in range(n_frames):
                window = z[:, :, col0 + f : col0 + f + k].reshape(batch, -1)
                h = torch.addmm(fw.b_cond, window, fw.w_cond).tanh_()
                cond = torch.addmm(spk_bias, h, fw.w_proj).view(batch, c.n_layers, -1)
                cond = cond.transpose(0, 1).contiguous()  # [L, B, G]
                span = slice(f * hop, (f + 1) * hop)
                if forced is not None:
                    nxt = F.embedding(forced[:, span], fw.embedding).unbind(1)
                    out[:, :, span] = torch.stack(_run_frame(st, fw, cond, (fw.b_2,) * hop, nxt), 2)
                else:
                    if temperature > 0:
                        biases = torch.add(fw.b_2, noise.take(hop), alpha=temperature).unbind(0)
                    else:
                        biases = (fw.b_2,) * hop
                    out[:, span] = torch.stack(_run_frame(st, fw, cond, biases, None), 1)
        self.last = (forced if forced is not None else out)[:, n - 1].clone()
        return out


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on CPU while stepping: for ops this small, waking a second thread
    costs more than it saves (demo decoder, batch 8, 2 cores: 2.8x faster with one). The
    setting is process-wide, so torch work in other Python threads meanwhile runs on one too."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(eq=False)
class _StepState:
    """The torch hot loop's working set: queues, current input, preallocated buffers."""

    queues: list[collections.deque[Tensor]]
    x0: Tensor  # [B, R] embedding of the previous sample
    pre: Tensor  # [L, B, G] gate pre-activations, overwritten every step
    pre_l: list[Tensor]  # views pre[l]
    tanh_half: list[Tensor]  # views pre[l, :, :G/2]
    z: Tensor  # [B, L G/2] every layer's gate output (the skip 1x1s' input), overwritten every step
    z_l: list[Tensor]  # views z[:, l G/2 : (l+1) G/2]
    w_res: list[Tensor]
    w_cur: list[Tensor]
    h_skip: Tensor  # [B, S]
    h_1: Tensor  # [B, S]
    logits: Tensor  # [B, Q]
    tap_index: list[list[int]] | None  # per layer, queue positions of the K-1 past taps (K > 2)

    @classmethod
    def start(cls, engine: TorchEngine, fw: FastWeights, batch: int) -> _StepState:
        c = engine.config
        n_layers, gate, half = c.n_layers, c.gate_channels, c.gate_channels // 2
        pre = fw.embedding.new_empty(n_layers, batch, gate)
        z = fw.embedding.new_empty(batch, n_layers * half)
        k = c.kernel_size
        return cls(
            queues=engine.queues,
            x0=F.embedding(engine.last, fw.embedding),
            pre=pre,
            pre_l=list(pre.unbind(0)),
            tanh_half=[p[:, :half] for p in pre.unbind(0)],
            z=z,
            z_l=[z[:, i * half : (i + 1) * half] for i in range(n_layers)],
            w_res=[w.contiguous() for w in fw.w_res.unbind(0)],
            w_cur=[w.contiguous() for w in fw.w_cur.unbind(0)],
            h_skip=z.new_empty(batch, c.skip_channels),
            h_1=z.new_empty(batch, c.skip_channels),
            logits=z.new_empty(batch, c.quantization_channels),
            tap_index=None if k == 2 else [[j * d for j in range(k - 1)] for d in c.dilations],
        )


def _run_frame(
    st: _StepState,
    fw: FastWeights,
    cond: Tensor,
    biases: Sequence[Tensor],
    forced_next: Sequence[Tensor] | None,
) -> list[Tensor]:
    """``len(biases)`` cached steps of one latent frame (torch backend).

    ``cond [L, B, G]`` is the frame's per-layer gate bias; ``biases[i]`` is step ``i``'s output
    bias (``b_2``, plus ``temperature * gumbel`` when sampling). Returns per-step samples
    ``[B]``, or with ``forced_next`` (the embeddings fed as the next inputs) per-step logits
    ``[B, Q]``.

    Eager torch costs microseconds per op whatever its size, so the step is counted in ops
    (``4 L + 8`` for ``K = 2``): one ``stack`` + one ``baddbmm`` give every layer's past-tap
    term at once (the past taps are all known before the step starts), with the
    conditioning as the bias; per layer, an in-place ``addmm_`` adds the current tap,
    ``tanh_`` runs on a preallocated view of the first half and ``glu`` writes
    ``tanh * sigmoid`` into the layer's slice of one preallocated ``z``; the residual
    ``addmm`` writes into the queue slot that has just left the window (its tap was consumed
    by the ``stack``), so nothing is allocated. Then one ``addmm`` for all skip 1x1s (a sum of
    1x1s is one 1x1 over the concatenation), the head (the last ``addmm``'s bias carries the
    Gumbel noise), ``argmax`` and the embedding lookup, into another free queue slot.
    """
    queues, pre, pre_l, tanh_half, z, z_l = st.queues, st.pre, st.pre_l, st.tanh_half, st.z, st.z_l
    w_past, emb, w_skip, b_skip = fw.w_past, fw.embedding, fw.w_skip, fw.b_skip
    w_1, b_1, w_2 = fw.w_1, fw.b_1, fw.w_2
    h_skip, h_1, logits_buf = st.h_skip, st.h_1, st.logits
    q_0, pre_0, tanh_0, z_0, w_cur_0 = queues[0], pre_l[0], tanh_half[0], z_l[0], st.w_cur[0]
    # layer l >= 1 also needs layer l-1's gate output and residual weight
    body = list(
        zip(queues[1:], pre_l[1:], tanh_half[1:], z_l[1:], st.w_cur[1:], z_l[:-1], st.w_res, strict=True)
    )
    tap_index = st.tap_index
    batch, n_layers = st.x0.shape[0], len(queues)
    glu: Callable[..., Tensor] = torch._C._nn.glu
    addmm, stack, baddbmm = torch.addmm, torch.stack, torch.baddbmm
    argmax, index_select = torch.argmax, torch.index_select
    results: list[Tensor] = []
    x0 = st.x0
    for i, bias in enumerate(biases):
        if tap_index is None:
            past = stack([q[0] for q in queues])
        else:
            taps = [q[j] for q, idx in zip(queues, tap_index, strict=True) for j in idx]
            past = stack(taps, 1).view(batch, n_layers, -1).transpose(0, 1)
        baddbmm(cond, past, w_past, out=pre)
        # every queue's q[0] is dead now (the stack copied it): reuse it as an output buffer
        dead_0 = q_0[0]
        q_0.append(x0)
        pre_0.addmm_(x0, w_cur_0)
        tanh_0.tanh_()
        glu(pre_0, 1, out=z_0)
        x = x0
        for q, p, th, zv, wc, z_prev, w_res_prev in body:
            x = addmm(x, z_prev, w_res_prev, out=q[0])
            q.append(x)
            p.addmm_(x, wc)
            th.tanh_()
            glu(p, 1, out=zv)
        addmm(b_skip, z, w_skip, out=h_skip).relu_()
        addmm(b_1, h_skip, w_1, out=h_1).relu_()
        addmm(bias, h_1, w_2, out=logits_buf)
        if forced_next is None:
            sample = argmax(logits_buf, 1)
            results.append(sample)
            x0 = index_select(emb, 0, sample, out=dead_0)
        else:
            results.append(logits_buf.clone())
            x0 = forced_next[i]
    st.x0 = x0
    return results
