"""Vocos-style decoder, waveform losses and discriminators (issue 16): invariants, tiny sizes, CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import SPEAKERS, make_checkpoint, tiny_recipe, tone

from vqspeech.checkpoint import load_checkpoint
from vqspeech.model import VQVAE
from vqspeech.nn.audio_losses import log_mel_loss, multi_resolution_stft_loss
from vqspeech.nn.discriminators import (
    Discriminators,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    feature_matching_loss,
)
from vqspeech.nn.vocos import VocosDecoder
from vqspeech.nn.vocos_config import VocosConfig
from vqspeech.vocos_training import discriminator_step, gan_step, generator_step, reconstruction_step

HOP, DIM, SPEAKER = 64, 8, 4
#: Chunked vs one-shot decoding, max absolute difference (float32 rounding of convs over
#: different lengths; the frames are the same frames, so in practice it is ~0).
CHUNK_TOLERANCE = 1e-4


def tiny(frame_stride: int = 2, n_fft: int = 512, blocks: int = 2) -> VocosDecoder:
    torch.manual_seed(0)
    config = VocosConfig(channels=16, blocks=blocks, expansion=2, frame_stride=frame_stride, n_fft=n_fft)
    decoder = VocosDecoder(config, DIM, SPEAKER, HOP)
    for name, param in decoder.named_parameters():  # layer scale 1: every block matters
        if name.endswith("gamma"):
            param.data.fill_(1.0)
    return decoder.eval()


def speech_like(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    f0 = 120 + 40 * torch.rand(1, generator=g)
    wave = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 8))
    return (0.3 * wave * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t)))[None].float()


@pytest.mark.parametrize(("stride", "n_fft"), [(2, 512), (1, 256)])
@pytest.mark.parametrize("tokens", [1, 2, 3, 8, 51, 100])
def test_output_length_follows_token_count(stride: int, n_fft: int, tokens: int) -> None:
    decoder = tiny(stride, n_fft)
    codes, voice = torch.randn(2, DIM, tokens), torch.randn(2, SPEAKER)
    assert decoder(codes, voice).shape == (2, tokens * HOP)
    assert decoder.spectrum(codes, voice).shape == (2, n_fft // 2 + 1, decoder.num_frames(tokens))


@pytest.mark.parametrize(("stride", "n_fft"), [(2, 512), (1, 256)])
@pytest.mark.parametrize("chunk", [1, 3, 16, 63, 150])
def test_chunked_decoding_equals_one_shot(stride: int, n_fft: int, chunk: int) -> None:
    decoder = tiny(stride, n_fft)
    torch.manual_seed(1)
    codes, voice = torch.randn(2, DIM, 151), torch.randn(2, SPEAKER)
    with torch.no_grad():
        whole = decoder(codes, voice)
    chunked = decoder.decode(codes, voice, chunk_tokens=chunk)
    assert chunked.shape == whole.shape
    assert (chunked - whole).abs().max() < CHUNK_TOLERANCE


def test_chunking_needs_its_context() -> None:
    """The stated context is what makes chunks exact: claim less reach and the chunks differ."""
    decoder = tiny(blocks=3)
    codes, voice = torch.randn(1, DIM, 120), torch.randn(1, SPEAKER)
    with torch.no_grad():
        whole = decoder(codes, voice)
    decoder.config = VocosConfig(channels=16, blocks=0, expansion=2)  # claims less reach than it has
    assert (decoder.decode(codes, voice, chunk_tokens=10) - whole).abs().max() > 10 * CHUNK_TOLERANCE


def test_iter_decode_yields_one_piece_per_chunk() -> None:
    decoder = tiny()
    codes, voice = torch.randn(1, DIM, 25), torch.randn(1, SPEAKER)
    pieces = list(decoder.iter_decode(codes, voice, chunk_tokens=10))
    assert [p.shape[-1] for p in pieces] == [10 * HOP, 10 * HOP, 5 * HOP]


def test_chunked_memory_is_bounded_by_the_chunk() -> None:
    decoder = tiny()
    seen: list[int] = []
    decoder.inp.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[-1]))
    decoder.decode(torch.randn(1, DIM, 2000), torch.randn(1, SPEAKER), chunk_tokens=40)
    assert max(seen) <= 40 + 2 * decoder.context_tokens + 2 * decoder.stride + 8


def test_gradients_reach_the_codes() -> None:
    decoder = tiny().train()
    codes = torch.randn(1, DIM, 20, requires_grad=True)
    decoder(codes, torch.randn(1, SPEAKER)).square().sum().backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0


def test_speaker_vector_changes_the_output() -> None:
    decoder = tiny()
    for name, param in decoder.named_parameters():  # untrained AdaLN ignores the voice
        if name.endswith("norm.scale.weight"):
            torch.nn.init.normal_(param, std=0.3)
    codes = torch.randn(1, DIM, 30)
    with torch.no_grad():
        a = decoder(codes, torch.zeros(1, SPEAKER))
        b = decoder(codes, torch.ones(1, SPEAKER))
    assert (a - b).abs().max() > 1e-3


def test_bad_chunk_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        tiny().decode(torch.randn(1, DIM, 10), torch.randn(1, SPEAKER), chunk_tokens=0)


def test_stft_losses_are_zero_for_identical_signals_and_rise_with_noise() -> None:
    clean = speech_like(8000)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g)
    assert float(multi_resolution_stft_loss(clean, clean)) == pytest.approx(0.0, abs=1e-6)
    assert float(log_mel_loss(clean, clean)) == pytest.approx(0.0, abs=1e-6)
    losses = [float(multi_resolution_stft_loss(clean + level * noise, clean)) for level in (0.003, 0.03, 0.3)]
    mels = [float(log_mel_loss(clean + level * noise, clean)) for level in (0.003, 0.03, 0.3)]
    assert 0 < losses[0] < losses[1] < losses[2]
    assert 0 < mels[0] < mels[1] < mels[2]


def test_feature_matching_is_zero_when_real_equals_fake() -> None:
    torch.manual_seed(0)
    discriminators = Discriminators(period_channels=(4, 8), resolution_channels=4)
    audio = speech_like(4000)
    judged = discriminators(audio)
    assert float(feature_matching_loss(judged, discriminators(audio.clone()))) == 0.0
    assert float(feature_matching_loss(judged, discriminators(audio + 0.1))) > 0.0


def test_discriminators_cover_periods_and_resolutions() -> None:
    audio = speech_like(3000)
    assert len(MultiPeriodDiscriminator(channels=(4, 8))(audio)) == 5
    assert len(MultiResolutionDiscriminator(channels=4)(audio)) == 3


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_gan_steps_update_each_player_separately() -> None:
    decoder = tiny().train()
    torch.manual_seed(0)
    discriminators = Discriminators(period_channels=(4, 8), resolution_channels=4)
    g_opt = torch.optim.AdamW(decoder.parameters(), lr=1e-3)
    d_opt = torch.optim.AdamW(discriminators.parameters(), lr=1e-3)
    codes, voice = torch.randn(2, DIM, 40), torch.randn(2, SPEAKER)
    audio = torch.cat([speech_like(40 * HOP, 0), speech_like(40 * HOP, 1)])

    dec_before, disc_before = _snapshot(decoder), _snapshot(discriminators)
    discriminator_step(discriminators, d_opt, decoder(codes, voice), audio, window=1024)
    assert all(p.grad is None for p in decoder.parameters())  # the decoder is not touched
    assert not _changed(decoder, dec_before) and _changed(discriminators, disc_before)

    dec_before, disc_before = _snapshot(decoder), _snapshot(discriminators)
    disc_grads = [p.grad.clone() for p in discriminators.parameters() if p.grad is not None]
    losses = generator_step(decoder, discriminators, g_opt, decoder(codes, voice), audio, window=1024)
    assert _changed(decoder, dec_before) and not _changed(discriminators, disc_before)
    after = [p.grad for p in discriminators.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(after, disc_grads, strict=True))
    assert losses.adversarial_loss is not None and losses.feature_loss is not None
    assert all(p.requires_grad for p in discriminators.parameters())

    g, d = gan_step(decoder, discriminators, g_opt, d_opt, codes, voice, audio, window=1024)
    assert math.isfinite(g.loss) and math.isfinite(d)


def test_reconstruction_steps_learn_a_signal() -> None:
    decoder = tiny().train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=3e-3, betas=(0.8, 0.9))
    torch.manual_seed(2)
    codes, voice = torch.randn(1, DIM, 60), torch.randn(1, SPEAKER)
    audio = speech_like(60 * HOP)
    losses = [reconstruction_step(decoder, opt, codes, voice, audio).loss for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0]


def test_inference_weights_hold_no_discriminator() -> None:
    keys = tiny().state_dict().keys()
    assert not any("mpd" in k or "mrd" in k or "window" in k for k in keys)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="odd"):
        VocosConfig(kernel_size=4)
    with pytest.raises(ValueError, match="frame hop"):
        VocosDecoder(VocosConfig(n_fft=64, frame_stride=2), DIM, SPEAKER, HOP)


# --------------------------------------------------------------------------------------------
# the family in the model (vqspeech.decoders.vocos: one module + one registration line)

TINY_VOCOS = ["model.decoders=[vocos]", "model.families.vocos.channels=16", "model.families.vocos.blocks=2"]


def test_the_vocos_family_trains_and_decodes_through_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(len(SPEAKERS), *TINY_VOCOS).model)
    audio = torch.stack([torch.from_numpy(tone(0.256, f0=f0, seed=i)) for i, f0 in enumerate((110, 230))])
    speakers = torch.tensor([0, 2])
    out = model(audio, speakers)
    assert set(out.decoder_losses) == {"vocos"} and out.predictions["vocos"].shape == audio.shape
    out.loss.backward()
    assert model.encoder.out.weight.grad is not None and model.encoder.out.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # AdaLN starts as identity: one step to hear voices
    model.eval()
    codes = model.encode(audio)
    assert not torch.allclose(model.decode(codes, speakers), model.decode(codes, torch.tensor([1, 1])))

    path = make_checkpoint(tmp_path / "v.pt", extra=TINY_VOCOS)
    vq = load_checkpoint(path).build_model()
    codes = vq.encode(audio)
    whole = vq.decode(codes, speakers)
    assert whole.shape == (2, codes.shape[1] * 64)
    chunked = torch.cat(list(vq.iter_decode(codes, speakers, chunk_frames=5)), dim=1)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-4)


def test_vocos_decodes_in_bfloat16_close_to_float32(tmp_path: Path) -> None:
    """``dtype=bfloat16`` runs the backbone under autocast; the iSTFT and the audio stay float32."""
    vq = load_checkpoint(make_checkpoint(tmp_path / "v.pt", extra=TINY_VOCOS)).build_model()
    audio = torch.from_numpy(tone(0.256, f0=150, seed=0))[None]
    codes = vq.encode(audio)
    exact = torch.cat(list(vq.iter_decode(codes, torch.tensor([0]), chunk_frames=5)), dim=1)
    fast = torch.cat(
        list(vq.iter_decode(codes, torch.tensor([0]), chunk_frames=5, dtype=torch.bfloat16)), dim=1
    )
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert not torch.equal(fast, exact)  # it did compute in bfloat16
    scale = float(exact.abs().max())
    assert scale > 0 and float((fast - exact).abs().max()) < 0.05 * scale
