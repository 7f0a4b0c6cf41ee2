"""The spectrogram decoder family: frame-exact lengths, Griffin-Lim fidelity, one checkpoint for both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqspeech.checkpoint import load_checkpoint, save_checkpoint
from vqspeech.config import SpectrogramConfig, load_recipe
from vqspeech.errors import ConfigError
from vqspeech.evaluation import log_mel_distance, mel_cepstral_distortion, stoi
from vqspeech.model import VQVAE
from vqspeech.nn.spectrogram import SpectrogramDecoder
from vqspeech.vocoder import griffin_lim, stft_magnitude

TINY = [
    "model.n_speakers=2",
    "model.speaker_dim=8",
    "model.encoder.channels=16",
    "model.encoder.res_dilations=[1, 2]",
    "model.quantizer.dim=8",
    "model.quantizer.codebook_size=16",
    "model.quantizer.kmeans_init=false",
    "model.decoder.residual_channels=8",
    "model.decoder.gate_channels=16",
    "model.decoder.skip_channels=16",
    "model.decoder.layers_per_cycle=3",
    "model.decoder.cond_channels=8",
    "model.spectrogram.channels=16",
    "model.spectrogram.dilations=[1, 2]",
    "model.decoders=[wavenet]",
]


def _speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    """A gliding harmonic tone with a syllable-rate envelope: speech-shaped, fully known."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 30 * torch.sin(2 * torch.pi * 1.3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t)) ** 2
    return (0.15 * voiced * envelope + 0.003 * torch.randn(t.shape, generator=g)).float()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("frames", [1, 5, 37, 38])
def test_decoder_output_follows_the_token_count_exactly(frames: int, stride: int) -> None:
    torch.manual_seed(0)
    overrides = [*TINY, "model.decoders=[spectrogram]", f"model.spectrogram.frame_stride={stride}"]
    model = VQVAE(load_recipe("demo", overrides).model).eval()
    codes = torch.randint(0, 16, (2, frames))
    log_mag = model.spectrogram_decoder(
        model.quantizer.lookup(codes), model.speaker_vector(torch.tensor([0, 1]))
    )
    assert log_mag.shape == (2, 512 // 2 + 1, -(-frames // stride))
    # one target frame per predicted frame: the loss compares like with like
    assert model.spectrogram_decoder.target(torch.zeros(2, frames * 64)).shape == log_mag.shape
    audio = model.decode(codes, torch.tensor([0, 1]))
    assert audio.shape == (2, frames * 64)
    assert torch.isfinite(audio).all() and float(audio.abs().max()) <= 1.0


def test_training_target_has_one_frame_per_latent() -> None:
    decoder = SpectrogramDecoder(SpectrogramConfig(channels=8, dilations=(1,)), 4, 4, 64, 16000)
    assert decoder.target(torch.zeros(3, 64 * 11)).shape == (3, 257, 11)


def test_griffin_lim_recovers_a_known_signal() -> None:
    audio = _speech_like(1.0)[None]
    magnitude = stft_magnitude(audio, 512, 64)
    rebuilt = griffin_lim(
        magnitude, 512, 64, audio.shape[1], n_iter=32, generator=torch.Generator().manual_seed(0)
    )
    again = stft_magnitude(rebuilt, 512, 64)
    spectral_convergence = float(torch.linalg.norm(again - magnitude) / torch.linalg.norm(magnitude))
    assert spectral_convergence < 0.1
    assert stoi(audio[0].numpy(), rebuilt[0].numpy()) > 0.9
    # more iterations never hurt much, and random phases alone are far worse
    random_phase = griffin_lim(
        magnitude, 512, 64, audio.shape[1], n_iter=0, generator=torch.Generator().manual_seed(0)
    )
    worse = float(
        torch.linalg.norm(stft_magnitude(random_phase, 512, 64) - magnitude) / torch.linalg.norm(magnitude)
    )
    assert worse > 2 * spectral_convergence


def test_metrics_are_zero_for_identical_audio_and_grow_with_noise() -> None:
    clean = _speech_like(1.0).numpy()
    noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    assert log_mel_distance(clean, clean) == 0.0 and mel_cepstral_distortion(clean, clean) == 0.0
    assert log_mel_distance(clean, noisy) > 1.0 and mel_cepstral_distortion(clean, noisy) > 1.0
    assert stoi(clean, clean) > stoi(clean, noisy)


def test_both_families_load_from_one_checkpoint_and_read_the_same_codes(tmp_path) -> None:
    torch.manual_seed(0)
    recipe = load_recipe("demo", [*TINY, "model.decoders=[spectrogram, wavenet]"])
    model = VQVAE(recipe.model)
    out = model(_speech_like(0.128)[None].repeat(2, 1), torch.tensor([0, 1]))
    assert out.wavenet_loss is not None and out.spectrogram_loss is not None
    torch.testing.assert_close(out.reconstruction_loss, out.wavenet_loss + out.spectrogram_loss)
    path = save_checkpoint(tmp_path / "both.pt", model, recipe, [{"name": "a"}, {"name": "b"}])
    loaded = load_checkpoint(path).build_model()
    codes = loaded.encode(_speech_like(0.1)[None])
    speaker = torch.tensor([1])
    spectral = loaded.decode(
        codes, speaker, decoder="spectrogram", generator=torch.Generator().manual_seed(0)
    )
    sampled = loaded.decode(codes, speaker, decoder="wavenet", generator=torch.Generator().manual_seed(0))
    assert spectral.shape == sampled.shape == (1, codes.shape[1] * 64)
    assert torch.equal(
        loaded.decode(codes, speaker, generator=torch.Generator().manual_seed(0)), spectral
    )  # default
    only_wavenet = VQVAE(load_recipe("demo", TINY).model)
    with pytest.raises(ConfigError, match="no spectrogram decoder"):
        only_wavenet.decode(codes, speaker, decoder="spectrogram")


def test_speaker_changes_the_predicted_spectrum() -> None:
    torch.manual_seed(0)
    model = VQVAE(load_recipe("demo", [*TINY, "model.decoders=[spectrogram]"]).model).eval()
    z_q = model.quantizer.lookup(torch.randint(0, 16, (1, 20))).repeat(2, 1, 1)
    log_mag = model.spectrogram_decoder(z_q, model.speaker_vector(torch.tensor([0, 1])))
    assert not torch.allclose(log_mag[0], log_mag[1])


@pytest.mark.parametrize(("chunk_frames", "stride"), [(40, 1), (100, 1), (41, 2), (100, 2)])
def test_chunked_spectrogram_decoding_is_bounded_and_close_to_one_shot(
    chunk_frames: int, stride: int
) -> None:
    torch.manual_seed(0)
    overrides = [*TINY, "model.decoders=[spectrogram]", f"model.spectrogram.frame_stride={stride}"]
    model = VQVAE(load_recipe("demo", overrides).model).eval()
    codes = model.encode(_speech_like(1.5)[None])
    whole = model.decode(codes, torch.tensor([0]), generator=torch.Generator().manual_seed(0))
    pieces = list(
        model.iter_decode(
            codes, torch.tensor([0]), generator=torch.Generator().manual_seed(0), chunk_frames=chunk_frames
        )
    )
    chunked = torch.cat(pieces, dim=1)
    assert chunked.shape == whole.shape
    assert max(p.shape[1] for p in pieces) <= (chunk_frames + stride + 64) * 64  # a chunk + overlap at most
    # Griffin-Lim phases differ per chunk, but the magnitudes (what the decoder predicts) agree
    a, b = stft_magnitude(whole, 512, 64), stft_magnitude(chunked, 512, 64)
    assert float(torch.linalg.norm(a - b) / torch.linalg.norm(a)) < 0.5


@pytest.mark.parametrize("hop", [64, 128, 256])
def test_griffin_lim_frame_grid_is_torch_stft_and_istft(hop: int) -> None:
    """The loop's own STFT pair (frames-major, envelope once) is exactly torch's centred pair."""
    from vqspeech.vocoder import _FrameGrid

    audio = torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    window = torch.hann_window(512)
    reference = torch.stft(
        audio, 512, hop, window=window, center=True, pad_mode="constant", return_complex=True
    )
    grid = _FrameGrid(512, hop, reference.shape[-1], audio.shape[1], audio.device)
    forward = grid.forward(audio)
    torch.testing.assert_close(forward, reference.transpose(1, 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(grid.inverse(forward), audio, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        grid.inverse(forward),
        torch.istft(reference, 512, hop, window=window, length=audio.shape[1]),
        rtol=0,
        atol=1e-5,
    )


def test_compiled_phase_update_matches_torch() -> None:
    """On CPU the phase update is a numba loop; it must be the torch formula, zeros included."""
    from vqspeech.vocoder import _numba_phase_update, _torch_phase_update

    compiled = _numba_phase_update()
    if compiled is None:
        pytest.skip("numba is not installed")
    g = torch.Generator().manual_seed(0)
    rebuilt = torch.randn(2, 7, 257, dtype=torch.complex64, generator=g)
    previous = torch.randn(2, 7, 257, dtype=torch.complex64, generator=g)
    magnitude = torch.rand(2, 7, 257, generator=g)
    rebuilt[0, 0, :5] = previous[0, 0, :5] * 0.5  # rebuilt - alpha * previous == 0 exactly
    expected = _torch_phase_update(rebuilt, previous, magnitude, 0.5)
    torch.testing.assert_close(compiled(rebuilt, previous, magnitude, 0.5), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(expected[0, 0, :5], torch.zeros(5, dtype=torch.complex64))


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_decoder_context_is_the_documented_number(stride: int) -> None:
    """Output frame j (centred on latent j * stride) depends on latents within context_frames, no more."""
    torch.manual_seed(0)
    config = SpectrogramConfig(channels=8, dilations=(1, 2), frame_stride=stride)
    decoder = SpectrogramDecoder(config, 4, 4, 64, 16000).double().eval()
    ctx = decoder.context_frames
    z = torch.randn(1, 4, 6 * ctx + 3 * stride, dtype=torch.float64)
    speaker = torch.randn(1, 4, dtype=torch.float64)
    j = (3 * ctx) // stride
    centre = j * stride
    base = decoder(z, speaker)[0, :, j]
    for offset, reaches in [(ctx, True), (-ctx, True), (ctx + 1, False), (-ctx - 1, False)]:
        bumped = z.clone()
        bumped[0, :, centre + offset] += 1.0
        changed = not torch.allclose(decoder(bumped, speaker)[0, :, j], base, rtol=0, atol=1e-12)
        assert changed == reaches, (offset, reaches)
