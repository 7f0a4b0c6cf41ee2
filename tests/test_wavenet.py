"""The WaveNet decoder: causality, the documented receptive field, conditioning reach, and
cached generation (both backends) agreeing with the teacher-forced forward pass, chunk by chunk."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vqspeech.config import WaveNetConfig, demo_recipe
from vqspeech.nn.wavenet import NOISE_BLOCK_STEPS, Backend, WaveNet
from vqspeech.nn.wavenet_numba import numba_available

HOP = 8
SMALL = WaveNetConfig(
    residual_channels=16,
    gate_channels=32,
    skip_channels=32,
    layers_per_cycle=3,
    dilation_cycles=2,
    cond_channels=16,
    cond_kernel_size=3,
)
SMALL_K3 = dataclasses.replace(SMALL, kernel_size=3, cond_kernel_size=4)

BACKENDS = [
    "torch",
    pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="numba is not installed")),
]


def make(config: WaveNetConfig = SMALL, seed: int = 0) -> WaveNet:
    torch.manual_seed(seed)
    return WaveNet(config, cond_dim=8, hop_length=HOP, speaker_dim=8).eval()


def inputs(batch: int, frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``audio [B, F * HOP]``, ``z_q [B, 8, F]``, ``speaker [B, 8]``."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randint(0, 256, (batch, frames * HOP), generator=g)
    return audio, torch.randn(batch, 8, frames, generator=g), torch.randn(batch, 8, generator=g)


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[T]`` bool: positions where logits ``[1, Q, T]`` differ at all.

    Exact comparison: outside its reach a change leaves every operand bit-identical, while
    inside it the far end's influence decays through the gates to ~1e-8 (float64 keeps it)."""
    return (a != b).any(dim=1)[0]


# ---------------------------------------------------------------------------------------
# the teacher-forced forward pass


def test_forward_shape_and_length_check() -> None:
    net = make()
    audio, z_q, speaker = inputs(2, 5)
    assert net(audio, z_q, speaker).shape == (2, 256, 5 * HOP)
    with pytest.raises(ValueError, match="F \\* hop_length"):
        net(audio[:, :-1], z_q, speaker)
    with pytest.raises(ValueError, match="speaker"):
        net(audio, z_q, speaker[:, :4])


@pytest.mark.parametrize("config", [SMALL, SMALL_K3], ids=["k2", "k3"])
def test_causal_and_receptive_field_is_the_documented_number(config: WaveNetConfig) -> None:
    net = make(config).double()
    rf = config.receptive_field
    assert net.receptive_field == rf == 1 + (config.kernel_size - 1) * sum(config.dilations)
    frames = (2 * rf + 40) // HOP + 2
    audio, z_q, speaker = inputs(1, frames)
    z_q, speaker = z_q.double(), speaker.double()
    with torch.no_grad():
        base = net(audio, z_q, speaker)
        t = rf + 20  # an output position with a full receptive field
        for s in (t - rf - 1, t - rf, t - 5, t - 1, t):
            hit = torch.zeros(frames * HOP, dtype=torch.bool)
            for offset in (37, 101):  # two different replacement classes, to be sure
                other = audio.clone()
                other[0, s] = (other[0, s] + offset) % 256
                hit |= changed(net(other, z_q, speaker), base)
            # logits[:, :, s] predicts sample s: changing sample s never reaches positions <= s
            assert not hit[: s + 1].any()
            assert hit[s + 1]  # ... and always reaches the next one
            # output t sees samples t - R .. t - 1 exactly
            assert bool(hit[t]) == (t - rf <= s <= t - 1)
            support = hit.nonzero().squeeze(1)
            assert int(support.max()) == s + rf  # the last output that sees sample s


def test_speaker_changes_the_output() -> None:
    net = make()
    audio, z_q, speaker = inputs(1, 4)
    with torch.no_grad():
        assert changed(net(audio, z_q, speaker), net(audio, z_q, speaker + 0.5)).all()


@pytest.mark.parametrize("config", [SMALL, SMALL_K3], ids=["k2", "k3"])
def test_latent_frame_reaches_only_its_conditioning_window(config: WaveNetConfig) -> None:
    net = make(config).double()
    frames, f = 14, 6
    audio, z_q, speaker = inputs(1, frames)
    z_q, speaker = z_q.double(), speaker.double()
    other = z_q.clone()
    other[:, :, f] += 1.0
    with torch.no_grad():
        hit = changed(net(audio, other, speaker), net(audio, z_q, speaker))
    # frame f feeds the conditioning of frames f - lookahead .. f + lookback; the conditioning
    # at position p reaches outputs p .. p + (K - 1) * (sum(dilations) - dilations[0])
    first = (f - net.lookahead_frames) * HOP
    last = (f + net.lookback_frames + 1) * HOP - 1 + (config.kernel_size - 1) * (sum(config.dilations) - 1)
    support = hit.nonzero().squeeze(1)
    assert (int(support.min()), int(support.max())) == (first, last)


# ---------------------------------------------------------------------------------------
# the cached step against the forward pass


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", [SMALL, SMALL_K3], ids=["k2", "k3"])
def test_incremental_teacher_forced_logits_equal_forward(config: WaveNetConfig, backend: Backend) -> None:
    net = make(config)
    audio, z_q, speaker = inputs(3, 9)
    with torch.no_grad():
        expected = net(audio, z_q, speaker)
    got = net.teacher_forced_logits(audio, z_q, speaker, backend=backend)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generation_reads_the_current_weights(backend: Backend) -> None:
    net = make()
    audio, z_q, speaker = inputs(1, 3)
    net.teacher_forced_logits(audio, z_q, speaker, backend=backend)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        expected = net(audio, z_q, speaker)
    got = net.teacher_forced_logits(audio, z_q, speaker, backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------
# generation


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_greedy_and_length(backend: Backend) -> None:
    net = make()
    _, z_q, speaker = inputs(2, 6)

    def gen(temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return net.generate(z_q, speaker, temperature=temperature, generator=generator, backend=backend)

    a = gen(generator=seeded(3))
    assert a.shape == (2, 6 * HOP) and a.dtype == torch.int64
    assert int(a.min()) >= 0 and int(a.max()) < 256
    assert torch.equal(a, gen(generator=seeded(3)))
    assert not torch.equal(a, gen(generator=seeded(4)))
    greedy = gen(temperature=0.0, generator=seeded(3))
    assert torch.equal(greedy, gen(temperature=0.0, generator=seeded(99)))
    assert not torch.equal(greedy, a)
    with pytest.raises(ValueError, match="temperature"):
        gen(temperature=-1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", [SMALL, SMALL_K3], ids=["k2", "k3"])
def test_chunked_generation_equals_one_shot(config: WaveNetConfig, backend: Backend) -> None:
    net = make(config)
    frames = 2 * NOISE_BLOCK_STEPS // HOP + 5  # crosses noise-block boundaries
    _, z_q, speaker = inputs(2, frames)
    whole = net.generate(z_q, speaker, generator=seeded(7), backend=backend)
    stream = net.stream(speaker, generator=seeded(7), backend=backend)
    pieces, at = [], 0
    for size in (1, 0, 3, 1, 130, 2, 1, 50, 0, 7):
        pieces.append(stream.push(z_q[:, :, at : at + size]))
        at += size
        # output lags the input by the conditioning's look-ahead
        assert stream.frames_done == max(0, at - net.lookahead_frames)
        assert sum(p.shape[1] for p in pieces) == stream.samples_done
    pieces.append(stream.push(z_q[:, :, at:], final=True))
    assert stream.finished
    assert torch.equal(torch.cat(pieces, 1), whole)
    with pytest.raises(RuntimeError, match="finished"):
        stream.push(z_q[:, :, :1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_naive_generator_agrees_with_cached(temperature: float, backend: Backend) -> None:
    net = make()
    _, z_q, speaker = inputs(2, 6)
    cached = net.generate(z_q, speaker, temperature=temperature, generator=seeded(5), backend=backend)
    naive = net.generate_naive(z_q, speaker, temperature=temperature, generator=seeded(5))
    assert torch.equal(cached, naive)
    # a prompt is copied and the rest continues the same noise stream
    prompted = net.generate_naive(
        z_q, speaker, temperature=temperature, generator=seeded(5), prompt=naive[:, :20]
    )
    assert torch.equal(prompted, naive)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_backends_agree_and_batch_split_is_invisible() -> None:
    net = make(SMALL_K3)
    _, z_q, speaker = inputs(3, 20)
    reference = net.generate(z_q, speaker, generator=seeded(2), backend="torch")
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):  # the numba backend splits the batch over torch.get_num_threads() threads
            torch.set_num_threads(n)
            assert torch.equal(net.generate(z_q, speaker, generator=seeded(2), backend="numba"), reference)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_sampler_matches_softmax_over_temperature(temperature: float, backend: Backend) -> None:
    """With the output layer's weights zeroed the logits are its bias whatever the input, so
    the samples are i.i.d. draws from softmax(bias / temperature)."""
    net = make()
    head = net.head[3]
    assert isinstance(head, torch.nn.Conv1d) and head.bias is not None
    logits = torch.full((256,), -40.0)
    logits[[3, 17, 100, 128, 200, 255]] = torch.tensor([0.0, 1.0, -0.5, 2.0, 0.5, -1.0])
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(logits)
    _, z_q, speaker = inputs(4, 250)
    samples = net.generate(z_q, speaker, temperature=temperature, generator=seeded(11), backend=backend)
    n = samples.numel()
    counts = torch.bincount(samples.flatten(), minlength=256).double()
    expected = torch.softmax(logits.double() / temperature, 0) * n
    support = expected > 1e-3
    assert counts[~support].sum() == 0
    chi2 = float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())
    assert chi2 < 27.0  # 5 degrees of freedom: p ~ 6e-5
    greedy = net.generate(z_q[:1, :, :4], speaker[:1], temperature=0.0, backend=backend)
    assert bool((greedy == 128).all())


def test_backend_and_shape_errors() -> None:
    net = make()
    audio, z_q, speaker = inputs(2, 3)
    with pytest.raises(ValueError, match="backend"):
        net.generate(z_q, speaker, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="z_q"):
        net.stream(speaker).push(z_q[:1])
    with pytest.raises(ValueError, match="audio"):
        net.teacher_forced_logits(audio[:, :-1], z_q, speaker)
    if numba_available():
        with pytest.raises(ValueError, match="float32"):
            make().double().stream(speaker.double(), backend="numba")
    # auto picks numba only where it applies
    assert make().double().stream(speaker.double()).backend == "torch"


def test_demo_decoder_generates() -> None:
    """The demo recipe's decoder, built as the VQ-VAE builds it (model-wide speaker_dim),
    runs a few frames with the default backend."""
    model = demo_recipe().model
    net = WaveNet(model.decoder, cond_dim=model.quantizer.dim, hop_length=model.hop_length, speaker_dim=40)
    assert net.receptive_field == model.decoder.receptive_field == 1024
    assert net.speaker_dim == 40
    z_q, speaker = torch.randn(2, model.quantizer.dim, 3), torch.randn(2, 40)
    out = net.generate(z_q, speaker, generator=seeded(0))
    assert out.shape == (2, 3 * model.hop_length)
