"""The harmonic-plus-noise vocoder and the pitch head behind it (issue 16)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import tiny_recipe, voiced_harmonic_model

from vqspeech.checkpoint import DIGEST_KEY, load_checkpoint, payload_digest, save_checkpoint
from vqspeech.config import Recipe, SpectrogramConfig, load_recipe
from vqspeech.errors import ConfigError
from vqspeech.model import VQVAE
from vqspeech.nn.pitch import F0_WEIGHT, PITCH_REFERENCE, pitch_loss, yin
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.train import PITCH_HEAD_KEYS, init_weights
from vqspeech.vocoder import _harmonic_sum, harmonic_plus_noise, hold_f0, stft_magnitude

N_FFT, HOP, SR = 512, 128, 16000
#: A tiny spectrogram-decoder model (tests/helpers.py's tiny demo recipe, two speakers).
SPECTROGRAM = (
    "model.decoders=[spectrogram]",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
)


def tiny(vocoder: str, *extra: str) -> Recipe:
    """The tiny recipe with the spectrogram decoder and ``vocoder`` (harmonic or griffin_lim)."""
    return tiny_recipe(2, *SPECTROGRAM, f"model.spectrogram.vocoder={vocoder}", *extra)


def tone(f0: float, seconds: float = 1.0, amplitude: float = 0.3, start: int = 0) -> torch.Tensor:
    """``[1, T]``: silence, then from sample ``start`` a sinusoid of ``f0`` Hz."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    wave = amplitude * torch.sin(2 * math.pi * f0 * t)
    wave[:start] = 0
    return wave.float()[None]


@pytest.mark.parametrize("f0", [90.0, 200.0, 333.0])
def test_yin_measures_a_tone_on_the_stft_frame_grid(f0: float) -> None:
    start = 4000  # the tone starts a quarter second in: centred frames before it are silent
    measured = yin(tone(f0, start=start), SR, HOP, centred=True)
    assert measured.voiced.shape == measured.log2_f0.shape == (1, 1 + SR // HOP)
    frames = torch.arange(measured.voiced.shape[1])
    inside = (frames * HOP > start + 300) & (frames * HOP < SR - 300)  # frames wholly in the tone
    assert measured.voiced[0, inside].all()
    assert (measured.log2_f0[0, inside] - math.log2(f0)).abs().max() < 0.01  # within 1/8 semitone
    assert not measured.voiced[0, frames * HOP < start - 300].any()  # centred: silence stays silent


def test_pitch_loss_is_zero_for_the_truth_and_counts_octaves() -> None:
    target = yin(tone(150.0), SR, HOP, centred=True)
    logit = torch.where(target.voiced, 30.0, -30.0)
    perfect = torch.stack([logit, target.log2_f0 - PITCH_REFERENCE], dim=1)
    assert float(pitch_loss(perfect, target)) < 1e-6
    octave_up = perfect.clone()
    octave_up[:, 1] += 1.0
    assert float(pitch_loss(octave_up, target)) == pytest.approx(F0_WEIGHT, abs=1e-4)


def test_hold_f0_glides_through_unvoiced_frames() -> None:
    f0 = torch.tensor([[0.0, 0.0, 100.0, 110.0, 0.0, 130.0, 0.0]])
    voiced = f0 > 0
    assert hold_f0(f0, voiced).tolist() == [[100.0, 100.0, 100.0, 110.0, 110.0, 130.0, 130.0]]
    assert hold_f0(f0, torch.zeros_like(voiced)).unique().tolist() == [120.0]


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_a_voiced_tone_is_rebuilt_at_its_pitch_and_level(f0: float) -> None:
    # the magnitudes of a sinusoid, voiced at its F0: one sinusoid of the same amplitude comes out
    wave = tone(f0, amplitude=0.3)
    magnitude = stft_magnitude(wave, N_FFT, HOP)
    frames = magnitude.shape[-1]
    out = harmonic_plus_noise(
        magnitude, torch.full((1, frames), f0), torch.ones(1, frames, dtype=torch.bool), N_FFT, HOP, SR, SR
    )
    steady = out.audio[0, 2000:-2000]
    assert float(steady.square().mean().sqrt()) == pytest.approx(0.3 / math.sqrt(2), rel=0.03)
    spectrum = torch.fft.rfft(steady * torch.hann_window(steady.shape[0])).abs()
    assert float(spectrum.argmax()) * SR / steady.shape[0] == pytest.approx(f0, abs=2.0)


def test_unvoiced_frames_are_noise_shaped_like_the_magnitudes() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, SR, generator=g) * 0.1
    lowpassed = torch.fft.irfft(torch.fft.rfft(noise) * (torch.fft.rfftfreq(SR, 1 / SR) < 2000), n=SR)
    magnitude = stft_magnitude(lowpassed, N_FFT, HOP)
    frames = magnitude.shape[-1]
    unvoiced = torch.zeros(1, frames, dtype=torch.bool)
    out = harmonic_plus_noise(magnitude, torch.full((1, frames), 150.0), unvoiced, N_FFT, HOP, SR, SR)
    heard = stft_magnitude(out.audio, N_FFT, HOP)[0, :, 4:-4].square().mean(dim=1)
    band = torch.fft.rfftfreq(N_FFT, 1 / SR)
    # the noise keeps the band and the level it was given
    assert float(heard[band > 3000].sum() / heard.sum()) < 0.01
    level = float(heard.sum() / magnitude[0, :, 4:-4].square().mean(dim=1).sum())
    assert level == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("batch", "frames", "length", "harmonics"),
    [
        (1, 20, 19 * HOP, 12),
        (3, 25, 24 * HOP + 77, 12),
        (2, 30, 30 * HOP, 12),  # a hop held past the end
        (2, 20, 19 * HOP, 80),  # the recurrence restarted four times, as high as 50-Hz voices go
    ],
)
def test_the_harmonic_sum_is_the_plain_per_sample_sum(
    batch: int, frames: int, length: int, harmonics: int
) -> None:
    """The segment-sorted sum (only voiced segments, each with its own harmonic count, cosines
    from Chebyshev's recurrence) equals the straightforward one: every harmonic's amplitude
    interpolated to every sample, times its cosine, summed; also with silent rows, silent
    harmonics inside the range and the last frame held past the end."""
    g = torch.Generator().manual_seed(5)
    amplitude = torch.rand(batch, harmonics, frames, generator=g)
    top = torch.randint(0, harmonics + 1, (batch, 1, frames), generator=g)  # 0: an unvoiced frame
    amplitude = amplitude * (torch.arange(1, harmonics + 1)[None, :, None] <= top)
    amplitude[:, 3] *= torch.rand(batch, frames, generator=g) > 0.5  # gaps below the top harmonic
    amplitude[-1] = 0.0 if batch > 1 else amplitude[-1]  # a wholly silent row
    phase = torch.rand(batch, length, generator=g) * 2 * math.pi
    position = torch.arange(length, dtype=torch.float64) / HOP
    j = position.floor().long().clamp(max=frames - 1)
    r = (position - j).where(j < frames - 1, torch.zeros_like(position))
    nxt = (j + 1).clamp(max=frames - 1)
    a = amplitude.double()
    per_sample = a[..., j] * (1 - r) + a[..., nxt] * r  # [B, K, T]
    k = torch.arange(1, harmonics + 1, dtype=torch.float64)[None, :, None]
    expected = (per_sample * torch.cos(k * phase.double()[:, None, :])).sum(dim=1)
    got = _harmonic_sum(amplitude, phase, HOP)
    assert got.shape == (batch, length)
    # float32 rounding, and the recurrence's drift: a fraction of the amplitudes' sum
    assert torch.allclose(got.double(), expected, atol=5e-5 * float(amplitude.sum(dim=1).max()))
    if batch > 1:
        assert not got[-1].any()


def test_a_long_signal_in_two_pieces_continues_its_phase() -> None:
    # the harmonics of two consecutive pieces, the second started from the first's phase at the
    # join, are the one-piece harmonics: what chunked decoding relies on
    torch.manual_seed(0)
    frames = 41
    magnitude = torch.rand(1, N_FFT // 2 + 1, frames) * 4
    magnitude[:, -1] = 0  # the Nyquist bin, the one that stays noise
    f0 = 100 + 60 * torch.rand(1, frames)
    voiced = torch.ones(1, frames, dtype=torch.bool)

    def harmonics(m: torch.Tensor, f: torch.Tensor, n: int, phase0: torch.Tensor | None = None):
        # max_hz at Nyquist: every bin but the last is harmonic, so there is no noise
        v = voiced[:, : m.shape[-1]]
        return harmonic_plus_noise(m, f, v, N_FFT, HOP, n * HOP, SR, SR / 2, None, phase0)

    whole = harmonics(magnitude, f0, frames - 1)
    cut = 20  # frame 20 starts the second piece
    first = harmonics(magnitude[..., : cut + 1], f0[:, : cut + 1], cut)
    second = harmonics(magnitude[..., cut:], f0[:, cut:], frames - 1 - cut, whole.phase[:, cut * HOP])
    joined = torch.cat([first.audio, second.audio], dim=1)
    assert joined.shape == whole.audio.shape
    torch.testing.assert_close(joined, whole.audio, atol=2e-3, rtol=0)
    torch.testing.assert_close(first.phase, whole.phase[:, : cut * HOP], atol=1e-3, rtol=0)


@pytest.mark.parametrize("frames", [1, 5, 37, 38])
def test_harmonic_decoding_follows_the_token_count_exactly(frames: int) -> None:
    model = voiced_harmonic_model(4000.0)
    codes = torch.randint(0, 16, (2, frames))
    audio = model.decode(codes, torch.tensor([0, 1]))
    assert audio.shape == (2, frames * 64)
    assert torch.isfinite(audio).all() and float(audio.abs().max()) <= 1.0


@pytest.mark.parametrize("chunk_frames", [40, 101])
def test_chunked_harmonic_decoding_equals_one_shot(chunk_frames: int) -> None:
    # voiced everywhere and harmonic up to Nyquist: no random noise, so chunks must join exactly
    model = voiced_harmonic_model(SR / 2)
    codes = torch.randint(0, 16, (1, 400))
    whole = model.decode(codes, torch.tensor([0]))
    pieces = list(model.iter_decode(codes, torch.tensor([0]), chunk_frames=chunk_frames))
    chunked = torch.cat(pieces, dim=1)
    assert max(p.shape[1] for p in pieces) <= (chunk_frames + 2 + 64) * 64  # a chunk + overlap at most
    assert float(whole.square().mean()) > 1e-4  # it made sound
    torch.testing.assert_close(chunked, whole, atol=5e-3, rtol=0)


def test_the_pitch_head_learns_from_the_training_loss() -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny("harmonic").model)
    decoder = model.spectrogram_decoder
    assert decoder.pitch is not None
    out = model(tone(150.0, 0.256).repeat(2, 1), torch.tensor([0, 1]))
    assert out.spectrogram_loss is not None
    out.spectrogram_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.pitch.parameters())
    plain = VQVAE(tiny("griffin_lim").model).spectrogram_decoder
    assert plain.pitch is None  # griffin_lim decoders have no head, and their state is as before
    assert not any(k.startswith("pitch.") for k in plain.state_dict())


@pytest.mark.parametrize("detach", [False, True])
def test_pitch_detach_keeps_the_pitch_loss_out_of_the_trunk(detach: bool) -> None:
    """The pitch loss alone: with ``pitch_detach`` it trains the head and nothing below it."""
    torch.manual_seed(0)
    model = VQVAE(tiny("harmonic", f"model.spectrogram.pitch_detach={str(detach).lower()}").model)
    decoder = model.spectrogram_decoder
    assert decoder.pitch is not None
    audio = tone(150.0, 0.256).repeat(2, 1)
    z = torch.randn(2, model.config.quantizer.dim, audio.shape[1] // model.config.hop_length)
    _, pitch = decoder.frames(z, model.speaker_vector(torch.tensor([0, 1])))
    assert pitch is not None
    decoder.pitch_loss(pitch, audio).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.pitch.parameters())
    trunk = [p for name, p in decoder.named_parameters() if name.startswith(("inp.", "blocks."))]
    reached = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trunk]
    assert not any(reached) if detach else all(reached)


def test_the_pitch_head_adds_its_reach_to_the_decoder_context() -> None:
    torch.manual_seed(0)
    config = SpectrogramConfig(channels=8, dilations=(1, 2), vocoder="harmonic")
    decoder = SpectrogramDecoder(config, 4, 4, 64, 16000).double().eval()
    ctx = decoder.context_frames
    assert ctx > SpectrogramConfig(channels=8, dilations=(1, 2)).context_frames()
    z = torch.randn(1, 4, 6 * ctx + 3, dtype=torch.float64)
    speaker = torch.randn(1, 4, dtype=torch.float64)
    j = 3 * ctx
    base = decoder.frames(z, speaker)[1]
    assert base is not None
    for offset, reaches in [(ctx, True), (-ctx, True), (ctx + 1, False), (-ctx - 1, False)]:
        bumped = z.clone()
        bumped[0, :, j + offset] += 1.0
        pitch = decoder.frames(bumped, speaker)[1]
        assert pitch is not None
        assert (not torch.allclose(pitch[0, :, j], base[0, :, j], rtol=0, atol=1e-12)) == reaches


def test_vocoder_is_a_checked_setting() -> None:
    with pytest.raises(ConfigError, match="vocoder"):
        load_recipe("demo", ["model.spectrogram.vocoder=wavenet"])
    with pytest.raises(ConfigError, match="harmonic_max_hz"):
        load_recipe("demo", ["model.spectrogram.harmonic_max_hz=9000"])


def test_a_harmonic_checkpoint_round_trips_and_init_adds_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    plain_recipe = tiny("griffin_lim")
    plain = VQVAE(plain_recipe.model)
    speakers = [{"name": "a"}, {"name": "b"}]
    source = load_checkpoint(save_checkpoint(tmp_path / "plain.pt", plain, plain_recipe, speakers))
    # --init from a Griffin-Lim model into a harmonic run: every weight copied, the head fresh
    recipe = tiny("harmonic")
    model = VQVAE(recipe.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(PITCH_HEAD_KEYS)}
    assert fresh and init_weights(model, source, speakers) == 2
    state = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key
    for key, value in fresh.items():
        assert torch.equal(state[key], value), key
    # the harmonic model saves and loads with its head and setting; it decodes the same
    path = save_checkpoint(tmp_path / "harmonic.pt", model, recipe, speakers)
    loaded = load_checkpoint(path)
    assert loaded.recipe.model.spectrogram.vocoder == "harmonic"
    assert loaded.fingerprint != source.fingerprint
    rebuilt = loaded.build_model().eval()
    codes = torch.randint(0, 16, (1, 30))
    g = torch.Generator
    torch.testing.assert_close(
        rebuilt.decode(codes, torch.tensor([1]), generator=g().manual_seed(0)),
        model.eval().decode(codes, torch.tensor([1]), generator=g().manual_seed(0)),
    )
    # other model settings still have to match
    other = VQVAE(tiny("harmonic", "model.spectrogram.channels=24").model)
    with pytest.raises(ConfigError, match="channels"):
        init_weights(other, source, speakers)
    # and a harmonic checkpoint into a Griffin-Lim run drops the head
    back = VQVAE(plain_recipe.model)
    init_weights(back, loaded, speakers)
    assert not any(k.startswith(PITCH_HEAD_KEYS) for k in back.state_dict())


def test_older_checkpoints_keep_griffin_lim_and_their_fingerprint(tmp_path) -> None:
    torch.manual_seed(0)
    recipe = tiny("griffin_lim")
    model = VQVAE(recipe.model)
    path = save_checkpoint(tmp_path / "m.pt", model, recipe, [{"name": "a"}, {"name": "b"}])
    before = load_checkpoint(path).fingerprint
    raw = torch.load(path, weights_only=True)
    for key in ("vocoder", "harmonic_max_hz"):
        del raw["recipe"]["model"]["spectrogram"][key]  # as a checkpoint from before the setting
    raw[DIGEST_KEY] = payload_digest(raw)
    torch.save(raw, path)
    loaded = load_checkpoint(path)
    assert loaded.recipe.model.spectrogram.vocoder == "griffin_lim"
    assert loaded.fingerprint == before
    assert dataclasses.asdict(loaded.recipe.model.spectrogram)["harmonic_max_hz"] == 4000.0
