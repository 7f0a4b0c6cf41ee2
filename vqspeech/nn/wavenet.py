"""WaveNet decoder: causal dilated gated residual stack with local (z_q) and global (speaker) conditioning.

The VQ-VAE paper (van den Oord et al. 2017, section 4.3) decodes speech with a WaveNet
(van den Oord et al. 2016) conditioned on the quantised latents ``z_q`` and a speaker
vector. Shapes: ``B`` batch, ``T`` samples, ``F`` latent frames (``T = F * hop_length``),
``D`` latent dim, ``Q`` mu-law classes (``quantization_channels``), ``L`` layers,
``K`` kernel size, ``R``/``G``/``S``/``C`` residual/gate/skip/conditioning channels.

Per layer ``l`` with dilation ``d_l``::

    a_l = causal_conv_K,d_l(x_l) + cond_l[t // hop_length]     # [B, G, T]
    z_l = tanh(a_l[:G/2]) * sigmoid(a_l[G/2:])                  # gated unit
    x_{l+1} = x_l + W_res_l z_l                                # residual 1x1, no bias
    skip = b_skip + sum_l W_skip_l z_l                           # skip 1x1s
    logits = W_2 relu(W_1 relu(skip) + b_1) + b_2                # [B, Q, T]

``x_0[t]`` embeds sample ``t - 1`` (position 0 sees ``Q // 2``, mu-law silence), so logits at
``t`` predict sample ``t`` from samples ``t - R .. t - 1``, ``R = 1 + (K - 1) * sum(dilations)``
(:attr:`vqspeech.config.WaveNetConfig.receptive_field`). ``cond_l`` lives at the latent rate:
a non-causal conv over frames (``cond_kernel_size``, then ``tanh``), one 1x1 per layer to
``G`` channels (its bias is the gate bias) plus the speaker vector's per-layer projection.
Repeating a frame ``hop_length`` times commutes with the 1x1s, so the sample-rate
conditioning is never materialised.

Generation is the cached "fast wavenet" recursion (Paine et al. 2016, arXiv:1611.09482):
each layer keeps a queue of its last ``(K - 1) * d_l`` inputs, so one step costs one column
of every conv. :class:`WaveNetStream` runs it chunk by chunk at bounded memory, with two
interchangeable backends that compute the same function:

* ``"numba"`` (default on CPU for float32; :mod:`vqspeech.nn.wavenet_numba`): the whole
  step loop compiled with numba (a dependency of librosa, so installed with vqspeech), one
  call per 1024 steps; a batch is split across ``torch.get_num_threads()`` threads. Eager
  torch spends microseconds per op whatever its size and a step is ~50 tiny ops; this does
  the same arithmetic without the dispatch: 4x faster at batch 1 on a 2-core CPU
  (``benchmarks/bench_generation.py``). The first use compiles for ~10 s; numba caches the
  result on disk (``__pycache__``).
* ``"torch"``: eager torch ops, arranged to issue as few as possible per step (see
  :mod:`vqspeech.nn.wavenet_torch`); used on GPU, for non-float32 weights, or when numba is missing.

:meth:`WaveNet.generate_naive` reruns the stack over the receptive field at every step: the
benchmark's baseline and a reference for the tests.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import WaveNetConfig
from vqspeech.errors import ConfigError
from vqspeech.nn.wavenet_numba import NumbaEngine, numba_available
from vqspeech.nn.wavenet_torch import FastWeights, TorchEngine

Backend = Literal["auto", "torch", "numba"]

# Gumbel noise for sampling is drawn from the generator in blocks of this many steps, at
# fixed absolute step offsets, so the samples never depend on how a file is chunked. The
# numba backend also runs this many steps (rounded to whole frames) per compiled call.
NOISE_BLOCK_STEPS = 1024


class _ResidualLayer(nn.Module):
    """One dilated causal conv (no bias: the conditioning carries it) plus residual and skip 1x1s."""

    def __init__(self, config: WaveNetConfig, dilation: int, has_residual: bool) -> None:
        super().__init__()
        half = config.gate_channels // 2
        self.dilation = dilation
        self.conv = nn.Conv1d(
            config.residual_channels, config.gate_channels, config.kernel_size, dilation=dilation, bias=False
        )
        # The last layer's residual output would feed nothing; leaving it out keeps every
        # parameter used (DistributedDataParallel insists on that).
        self.res = nn.Conv1d(half, config.residual_channels, 1, bias=False) if has_residual else None
        self.skip = nn.Conv1d(half, config.skip_channels, 1, bias=False)


class WaveNet(nn.Module):
    """Speaker- and ``z_q``-conditioned WaveNet over ``Q``-class mu-law samples.

    Args:
        config: the decoder's :class:`~vqspeech.config.WaveNetConfig`.
        cond_dim: ``D``, the size of the latent vectors ``z_q``.
        hop_length: samples per latent frame (``T = F * hop_length``).
        speaker_dim: size of the speaker vectors (the VQ-VAE's model-wide ``speaker_dim``,
            shared by all its decoders).
    """

    def __init__(self, config: WaveNetConfig, cond_dim: int, hop_length: int, speaker_dim: int) -> None:
        super().__init__()
        if config.kernel_size < 2:
            raise ConfigError("model.decoder.kernel_size must be at least 2")
        if config.gate_channels % 2:
            raise ConfigError("model.decoder.gate_channels must be even (tanh and sigmoid halves)")
        if config.n_layers < 1:
            raise ConfigError("model.decoder needs at least one layer")
        if config.cond_kernel_size < 1:
            raise ConfigError("model.decoder.cond_kernel_size must be at least 1")
        if hop_length < 1 or cond_dim < 1 or speaker_dim < 1:
            raise ConfigError("the decoder needs hop_length, cond_dim and speaker_dim >= 1")
        self.config = config
        self.cond_dim = cond_dim
        self.hop_length = hop_length
        self.speaker_dim = speaker_dim
        n_layers, gate = config.n_layers, config.gate_channels
        q, r, s = config.quantization_channels, config.residual_channels, config.skip_channels
        self.embedding = nn.Embedding(q, r)
        self.cond_net = nn.Conv1d(cond_dim, config.cond_channels, config.cond_kernel_size)
        # every layer's 1x1 conditioning projection, stacked: [L * G, C]; its bias is the
        # layer's gate bias (the dilated convs have none)
        self.cond_proj = nn.Conv1d(config.cond_channels, n_layers * gate, 1)
        self.speaker_proj = nn.Linear(speaker_dim, n_layers * gate, bias=False)
        self.layers = nn.ModuleList(
            _ResidualLayer(config, d, has_residual=i < n_layers - 1) for i, d in enumerate(config.dilations)
        )
        self.skip_bias = nn.Parameter(torch.zeros(s))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(s, s, 1), nn.ReLU(), nn.Conv1d(s, q, 1))

    # ----------------------------------------------------------------------------------
    # geometry

    @property
    def residual_layers(self) -> list[_ResidualLayer]:
        """``self.layers`` with their type (``nn.ModuleList`` iterates as plain modules)."""
        return [typing.cast(_ResidualLayer, layer) for layer in self.layers]

    @property
    def receptive_field(self) -> int:
        """``R``: logits at ``t`` depend on samples ``t - R .. t - 1`` (the config's number)."""
        return self.config.receptive_field

    @property
    def lookback_frames(self) -> int:
        """Past latent frames the conditioning conv reads for one frame: ``(cond_kernel_size - 1) // 2``."""
        return (self.config.cond_kernel_size - 1) // 2

    @property
    def lookahead_frames(self) -> int:
        """Future latent frames the conditioning conv reads for one frame: ``cond_kernel_size // 2``.

        A :class:`WaveNetStream` holds back this many frames of output until it has the
        frames after them (or is told the input is final).
        """
        return self.config.cond_kernel_size // 2

    @property
    def start_class(self) -> int:
        """The mu-law class fed as "sample -1": silence, ``Q // 2``."""
        return self.config.quantization_channels // 2

    # ----------------------------------------------------------------------------------
    # teacher-forced forward pass

    def forward(self, audio: Tensor, z_q: Tensor, speaker: Tensor) -> Tensor:
        """Teacher-forced logits: ``logits[:, :, t]`` predicts ``audio[:, t]`` from ``audio[:, :t]``.

        Args:
            audio: ``[B, T]`` int64 mu-law classes in ``[0, Q)``.
            z_q: ``[B, D, F]`` quantised latents; ``T`` must equal ``F * hop_length``.
            speaker: ``[B, speaker_dim]`` speaker vectors.

        Returns:
            ``[B, Q, T]`` unnormalised log-probabilities.
        """
        self._check_inputs(z_q, speaker)
        if audio.dim() != 2 or audio.shape[0] != z_q.shape[0]:
            raise ValueError(f"audio must be [B, T] with B={z_q.shape[0]}, got {tuple(audio.shape)}")
        if audio.shape[1] != z_q.shape[2] * self.hop_length:
            raise ValueError(
                f"audio has {audio.shape[1]} samples but z_q has {z_q.shape[2]} frames of "
                f"{self.hop_length}: T must be F * hop_length = {z_q.shape[2] * self.hop_length}"
            )
        inputs = F.pad(audio[:, :-1], (1, 0), value=self.start_class)
        return self._stack(inputs, self.latent_conditioning(z_q, speaker), self.hop_length)

    def latent_conditioning(self, z_q: Tensor, speaker: Tensor) -> Tensor:
        """Every layer's gate bias at the latent rate: ``z_q [B, D, F]``, ``speaker`` -> ``[B, L, G, F]``.

        Frame ``f`` reads ``z_q`` frames ``f - lookback_frames .. f + lookahead_frames``
        (zero-padded at the ends) and includes the speaker projection and gate biases.
        """
        self._check_inputs(z_q, speaker)
        c = self.config
        z = F.pad(z_q, (self.lookback_frames, self.lookahead_frames))
        cond = self.cond_proj(torch.tanh(self.cond_net(z))) + self.speaker_proj(speaker).unsqueeze(-1)
        return cond.view(z_q.shape[0], c.n_layers, c.gate_channels, z_q.shape[2])

    def _stack(self, inputs: Tensor, cond: Tensor, repeat: int) -> Tensor:
        """Causal stack on input classes ``[B, T]`` with ``cond [B, L, G, T // repeat]`` -> ``[B, Q, T]``."""
        batch, length = inputs.shape
        frames = cond.shape[-1]
        half = self.config.gate_channels // 2
        x = self.embedding(inputs).transpose(1, 2)  # [B, R, T]
        skip: Tensor | None = None
        for i, layer in enumerate(self.residual_layers):
            pad = (self.config.kernel_size - 1) * layer.dilation
            a = layer.conv(F.pad(x, (pad, 0)))
            # frame f broadcast over its `repeat` samples == nearest-neighbour upsampling
            a = (a.view(batch, -1, frames, repeat) + cond[:, i, :, :, None]).view(batch, -1, length)
            z = torch.tanh(a[:, :half]) * torch.sigmoid(a[:, half:])
            s = layer.skip(z)
            skip = s if skip is None else skip + s
            if layer.res is not None:
                x = x + layer.res(z)
        assert skip is not None  # at least one layer, checked in __init__
        return self.head(skip + self.skip_bias[:, None])

    def _check_inputs(self, z_q: Tensor, speaker: Tensor) -> None:
        if z_q.dim() != 3 or z_q.shape[1] != self.cond_dim:
            raise ValueError(f"z_q must be [B, {self.cond_dim}, F], got {tuple(z_q.shape)}")
        if speaker.shape != (z_q.shape[0], self.speaker_dim):
            raise ValueError(
                f"speaker must be [B, {self.speaker_dim}] with B={z_q.shape[0]}, got {tuple(speaker.shape)}"
            )

    # ----------------------------------------------------------------------------------
    # generation

    def stream(
        self, speaker: Tensor, *, generator: torch.Generator | None = None, backend: Backend = "auto"
    ) -> WaveNetStream:
        """Start cached, chunked generation for ``speaker [B, speaker_dim]``; see :class:`WaveNetStream`."""
        return WaveNetStream(self, speaker, generator=generator, backend=backend)

    def generate(
        self,
        z_q: Tensor,
        speaker: Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        backend: Backend = "auto",
    ) -> Tensor:
        """Sample ``[B, F * hop_length]`` int64 mu-law classes from ``z_q [B, D, F]`` in one call.

        ``temperature`` 0 is greedy (argmax); otherwise each sample is drawn from
        ``softmax(logits / temperature)`` with Gumbel noise from ``generator`` (default:
        torch's global generator). Equals pushing the same frames, in any chunks, through
        ``self.stream(speaker, generator=...)``.
        """
        self._check_inputs(z_q, speaker)
        return self.stream(speaker, generator=generator, backend=backend).push(
            z_q, temperature=temperature, final=True
        )

    def teacher_forced_logits(
        self, audio: Tensor, z_q: Tensor, speaker: Tensor, *, backend: Backend = "auto"
    ) -> Tensor:
        """:meth:`forward`'s logits ``[B, Q, T]``, computed by the cached generation step.

        The stepper is fed ``audio`` instead of its own samples, so this checks (and lets one
        profile) exactly the code that generates. Agrees with :meth:`forward` to float
        rounding (~1e-6).
        """
        self._check_inputs(z_q, speaker)
        if audio.shape != (z_q.shape[0], z_q.shape[2] * self.hop_length):
            raise ValueError(
                f"audio must be [B, F * hop_length] = [{z_q.shape[0]}, {z_q.shape[2] * self.hop_length}], "
                f"got {tuple(audio.shape)}"
            )
        stream = self.stream(speaker, backend=backend)
        return stream._advance(z_q, final=True, temperature=0.0, forced=audio.long())

    def generate_naive(
        self,
        z_q: Tensor,
        speaker: Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        prompt: Tensor | None = None,
    ) -> Tensor:
        """Reference sampler: every step reruns the whole stack over the receptive field.

        Same sampling scheme and noise stream as :meth:`generate`, so for one generator seed
        the two agree unless float rounding flips a near-tie. ``prompt [B, P]`` fixes the
        first ``P`` samples (copied, not computed), which lets a benchmark time only steps
        whose window is full. ``O(receptive_field)`` positions per step: benchmarks and tests only.
        """
        self._check_inputs(z_q, speaker)
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        batch, _, frames = z_q.shape
        hop, rf = self.hop_length, self.receptive_field
        length = frames * hop
        start = 0 if prompt is None else prompt.shape[1]
        if prompt is not None and (prompt.dim() != 2 or prompt.shape[0] != batch or start > length):
            raise ValueError(f"prompt must be [{batch}, P] with P <= {length}, got {tuple(prompt.shape)}")
        noise = _GumbelNoise(generator, batch, self.config.quantization_channels, z_q.device)
        if start and temperature > 0:
            noise.take(start)
        with torch.inference_mode():
            out = torch.full((batch, length), self.start_class, dtype=torch.long, device=z_q.device)
            if prompt is not None:
                out[:, :start] = prompt
            cond = self.latent_conditioning(z_q, speaker)
            inputs = F.pad(out, (1, 0), value=self.start_class)  # inputs[:, t] = sample t - 1
            for t in range(start, length):
                # The window starts on a frame boundary at least R - 1 samples back and ends
                # with t's frame: positions after t cannot reach t (causality).
                first, last = max(0, t - rf + 1) // hop, t // hop + 1
                window = inputs[:, first * hop : last * hop]
                logits = self._stack(window, cond[..., first:last], hop)[:, :, t - first * hop]
                if temperature > 0:
                    logits = logits + temperature * noise.take(1)[0]
                sample = logits.argmax(1)
                out[:, t] = sample
                inputs[:, t + 1] = sample
        return out


# --------------------------------------------------------------------------------------
# streaming generation


class WaveNetStream:
    """Cached, chunked generation for a batch of ``B`` utterances.

    Push ``z_q`` in consecutive chunks of frames; each :meth:`push` returns the samples of
    every frame whose conditioning is now known: all frames received so far except the last
    :attr:`WaveNet.lookahead_frames`, and all of them on the push that says ``final=True``.
    Everything returned, concatenated, equals ``net.generate(all_frames, ...)`` with the same
    generator and backend, bit for bit, however the frames are chunked: each frame's and each
    step's arithmetic has the same shapes either way, and the Gumbel noise is drawn in fixed
    blocks. Memory is bounded by the chunk size: the per-layer queues hold
    ``(K - 1) * sum(dilations)`` vectors of ``R`` floats per utterance.

    Every push re-reads the module's parameters (nothing is cached across pushes), so a
    stream always runs the current weights; do not change them in the middle of one.

    Args:
        net: the decoder.
        speaker: ``[B, speaker_dim]`` speaker vectors, fixed for the stream.
        generator: source of the sampling noise (default: torch's global generator).
        backend: ``"numba"``, ``"torch"`` or ``"auto"`` (numba for float32 on CPU when it
            imports, else torch); the resolved name is :attr:`backend`.
    """

    def __init__(
        self,
        net: WaveNet,
        speaker: Tensor,
        *,
        generator: torch.Generator | None = None,
        backend: Backend = "auto",
    ) -> None:
        c = net.config
        if speaker.dim() != 2 or speaker.shape[1] != net.speaker_dim:
            raise ValueError(f"speaker must be [B, {net.speaker_dim}], got {tuple(speaker.shape)}")
        param = net.embedding.weight
        self.net = net
        self.speaker = speaker.detach().to(device=param.device, dtype=param.dtype)
        self.batch_size = speaker.shape[0]
        self.backend: Literal["torch", "numba"] = _resolve_backend(backend, param)
        self._engine: TorchEngine | NumbaEngine = (
            NumbaEngine(c, net.hop_length, net.start_class, self.batch_size, NOISE_BLOCK_STEPS)
            if self.backend == "numba"
            else TorchEngine(c, net.hop_length, net.start_class, self.batch_size, param)
        )
        # z_q frames still needed, [B, D, n]; column 0 is absolute frame self._z_base
        self._z = param.new_zeros(self.batch_size, net.cond_dim, net.lookback_frames)
        self._z_base = -net.lookback_frames
        self._noise = _GumbelNoise(generator, self.batch_size, c.quantization_channels, param.device)
        self.frames_received = 0
        self.frames_done = 0
        self.finished = False

    @property
    def samples_done(self) -> int:
        """Samples returned so far, per utterance."""
        return self.frames_done * self.net.hop_length

    def push(self, z_q: Tensor, *, temperature: float = 1.0, final: bool = False) -> Tensor:
        """Feed the next ``z_q [B, D, F]`` frames (``F`` may be 0); return new ``[B, n]`` int64 classes.

        ``n`` is a multiple of ``hop_length`` and lags the frames pushed by ``lookahead_frames``
        until ``final=True``, which flushes them and ends the stream. ``temperature`` 0 is greedy.
        """
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        return self._advance(z_q, final=final, temperature=temperature, forced=None)

    def _advance(self, z_q: Tensor, *, final: bool, temperature: float, forced: Tensor | None) -> Tensor:
        """Run the frames that ``z_q`` completes: samples ``[B, n]``, or with ``forced``
        (``[B, n]`` classes fed in place of samples) logits ``[B, Q, n]``."""
        net = self.net
        if self.finished:
            raise RuntimeError("this stream was finished by a final push; start a new one")
        if z_q.dim() != 3 or z_q.shape[:2] != (self.batch_size, net.cond_dim):
            raise ValueError(f"z_q must be [{self.batch_size}, {net.cond_dim}, F], got {tuple(z_q.shape)}")
        received = self.frames_received + z_q.shape[2]
        first = self.frames_done
        end = received if final else max(first, received - net.lookahead_frames)
        n = (end - first) * net.hop_length
        if forced is not None and forced.shape != (self.batch_size, n):
            raise ValueError(f"forced samples must be [{self.batch_size}, {n}], got {tuple(forced.shape)}")
        with torch.inference_mode():
            z = torch.cat([self._z, z_q.to(self._z)], 2)
            if final:
                z = F.pad(z, (0, net.lookahead_frames))
            fw = _fast_weights(net)
            assert net.cond_proj.bias is not None
            spk_bias = torch.addmm(net.cond_proj.bias, self.speaker, net.speaker_proj.weight.t())  # [B, L G]
            col0 = first - net.lookback_frames - self._z_base  # z column of frame `first`'s window
            result = self._engine.run(fw, z, col0, end - first, spk_bias, temperature, self._noise, forced)
            self.frames_received = received
            self.frames_done = end
            self.finished = final
            keep = end - net.lookback_frames - self._z_base
            self._z = z[:, :, keep:].clone()
            self._z_base = end - net.lookback_frames
        return result


def _resolve_backend(backend: str, param: Tensor) -> Literal["torch", "numba"]:
    if backend == "torch":
        return "torch"
    if backend not in ("auto", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
    fits = param.device.type == "cpu" and param.dtype == torch.float32
    if backend == "numba":
        if not fits:
            raise ValueError("the numba backend runs float32 weights on CPU only; use backend='torch'")
        if not numba_available():
            raise ValueError("backend='numba' needs the numba package (pip install numba); or use 'torch'")
        return "numba"
    return "numba" if fits and numba_available() else "torch"


def _fast_weights(net: WaveNet) -> FastWeights:
    """``net``'s parameters re-laid out for cached stepping (see :class:`FastWeights`)."""
    k = net.config.kernel_size
    convs = [layer.conv.weight for layer in net.residual_layers]  # [G, R, K] each
    head_1, head_2 = net.head[1], net.head[3]
    assert isinstance(head_1, nn.Conv1d) and isinstance(head_2, nn.Conv1d)
    assert head_1.bias is not None and head_2.bias is not None and net.cond_net.bias is not None
    res = [layer.res.weight[:, :, 0].t() for layer in net.residual_layers if layer.res is not None]
    half, r = net.config.gate_channels // 2, net.config.residual_channels
    return FastWeights(
        embedding=net.embedding.weight.detach(),
        w_past=torch.stack([torch.cat([w[:, :, j].t() for j in range(k - 1)], 0) for w in convs]),
        w_cur=torch.stack([w[:, :, k - 1].t() for w in convs]),
        w_res=torch.stack(res) if res else convs[0].new_zeros(0, half, r),
        w_skip=torch.cat([layer.skip.weight[:, :, 0].t() for layer in net.residual_layers], 0),
        b_skip=net.skip_bias.detach(),
        w_1=head_1.weight[:, :, 0].t().contiguous(),
        b_1=head_1.bias.detach(),
        w_2=head_2.weight[:, :, 0].t().contiguous(),
        b_2=head_2.bias.detach(),
        w_cond=net.cond_net.weight.flatten(1).t().contiguous(),
        b_cond=net.cond_net.bias.detach(),
        w_proj=net.cond_proj.weight[:, :, 0].t().contiguous(),
    )


class _GumbelNoise:
    """Standard Gumbel noise ``[n, B, Q]`` seeded from ``generator``, drawn in fixed blocks of steps.

    ``argmax(logits + temperature * g)`` is a sample of ``softmax(logits / temperature)``
    (the Gumbel-max trick). Blocks start at fixed absolute steps, so ``take(a)`` then
    ``take(b)`` returns exactly what ``take(a + b)`` would. Each block takes one 63-bit seed
    from ``generator`` (torch's global one when ``None``) and fills itself with numpy's
    PCG64, about 10x faster than torch's CPU Mersenne twister, which cost 20 us per step at
    batch 8. The block is reused: a returned view is valid until the next ``take``.
    """

    def __init__(
        self, generator: torch.Generator | None, batch: int, classes: int, device: torch.device
    ) -> None:
        self.generator = generator
        self.device = device
        self.uniform = np.empty((NOISE_BLOCK_STEPS, batch, classes), np.float32)
        self.block: Tensor | None = None
        self.pos = NOISE_BLOCK_STEPS

    def _refill(self) -> Tensor:
        seed_device = self.generator.device if self.generator is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator, device=seed_device))
        np.random.default_rng(seed).random(out=self.uniform, dtype=np.float32)
        u = torch.from_numpy(self.uniform)
        if self.device.type != "cpu":
            u = u.to(self.device)
        # u = 0 (probability 2^-24) would give -inf; the clamp keeps every class possible
        self.block = u.clamp_(min=torch.finfo(u.dtype).tiny).log_().neg_().log_().neg_()
        self.pos = 0
        return self.block

    def take(self, n: int) -> Tensor:
        """The next ``n`` steps' noise, ``[n, B, Q]``."""
        if n == 0:
            return torch.empty(0, *self.uniform.shape[1:], device=self.device)
        block = self.block if self.block is not None and self.pos < NOISE_BLOCK_STEPS else self._refill()
        if self.pos + n <= NOISE_BLOCK_STEPS:
            self.pos += n
            return block[self.pos - n : self.pos]
        out = block.new_empty(n, *block.shape[1:])
        done = 0
        while done < n:
            if self.pos == NOISE_BLOCK_STEPS:
                block = self._refill()
            m = min(n - done, NOISE_BLOCK_STEPS - self.pos)
            out[done : done + m] = block[self.pos : self.pos + m]
            self.pos += m
            done += m
        return out
