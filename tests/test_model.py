"""The wired VQ-VAE and its checkpoints: gradients, determinism, speakers, weights-only files."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_MODEL

from vqspeech.checkpoint import load_checkpoint, model_fingerprint, save_checkpoint
from vqspeech.config import Recipe, load_recipe
from vqspeech.errors import CheckpointError
from vqspeech.model import VQVAE

TINY = [
    "model.decoders=[wavenet]",
    "model.n_speakers=3",
    *TINY_MODEL,
    "model.quantizer.kmeans_init=false",
    "model.speaker_dim=8",
]


@pytest.fixture
def recipe() -> Recipe:
    return load_recipe("demo", TINY)


@pytest.fixture
def model(recipe: Recipe) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(recipe.model)


def _audio(batch: int, frames: int, hop: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * hop) / 16000
    tone = torch.sin(2 * torch.pi * 220 * t * (1 + torch.rand(batch, 1, generator=g)))
    return 0.5 * tone + 0.05 * torch.randn(batch, frames * hop, generator=g)


def test_forward_returns_named_finite_losses_that_add_up(model: VQVAE) -> None:
    out = model(_audio(2, 6), torch.tensor([0, 2]))
    for name in ("loss", "reconstruction_loss", "codebook_loss", "commitment_loss", "perplexity"):
        assert torch.isfinite(getattr(out, name)), name
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.codebook_loss + out.commitment_loss)
    assert out.codes.shape == (2, 6)
    assert out.logits.shape == (2, 256, 6 * 64)


def test_reconstruction_gradient_reaches_every_part_through_the_straight_through_path(model: VQVAE) -> None:
    out = model(_audio(2, 6), torch.tensor([0, 1]))
    out.reconstruction_loss.backward()
    for part in (model.encoder, model.wavenet, model.speaker_embedding):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), type(part).__name__


def test_encode_is_deterministic_and_pads_to_whole_frames(model: VQVAE) -> None:
    audio = _audio(1, 5)[:, :300]  # 300 samples -> ceil(300 / 64) = 5 frames
    a, b = model.encode(audio), model.encode(audio.clone())
    assert a.shape == (1, 5) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < model.config.quantizer.codebook_size


def test_speaker_embedding_changes_the_decoder_output(model: VQVAE) -> None:
    audio = _audio(1, 4).repeat(2, 1)
    out = model(audio, torch.tensor([0, 1]))
    assert not torch.allclose(out.logits[0], out.logits[1])


def test_decode_length_and_seeded_generation(model: VQVAE) -> None:
    codes = model.encode(_audio(1, 3))
    speaker = torch.tensor([1])
    a = model.decode(codes, speaker, generator=torch.Generator().manual_seed(7))
    b = model.decode(codes, speaker, generator=torch.Generator().manual_seed(7))
    assert a.shape == (1, 3 * 64)
    assert torch.equal(a, b)
    assert float(a.abs().max()) <= 1.0


def test_checkpoint_round_trip_is_weights_only_and_exact(tmp_path, model: VQVAE, recipe: Recipe) -> None:
    speakers = [{"name": n, "gender": "F"} for n in ("s1", "s2", "s3")]
    path = save_checkpoint(tmp_path / "m.pt", model, recipe, speakers, {"step": 5})
    # plain tensors and data only: loadable with weights_only=True by anyone
    torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    assert ckpt.recipe == recipe
    assert ckpt.speaker_names == ["s1", "s2", "s3"]
    assert ckpt.training["step"] == 5
    again = ckpt.build_model()
    audio = _audio(2, 4)
    assert torch.equal(again.encode(audio), model.eval().encode(audio))
    assert ckpt.fingerprint == model_fingerprint(recipe, model.state_dict())
    assert ckpt.speaker_id("s2") == 1
    with pytest.raises(CheckpointError, match="s1, s2, s3"):
        ckpt.speaker_id("nobody")
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_fingerprint_changes_with_any_weight(model: VQVAE, recipe: Recipe) -> None:
    before = model_fingerprint(recipe, model.state_dict())
    with torch.no_grad():
        next(model.wavenet.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(recipe, model.state_dict()) != before


class _Evil:
    def __reduce__(self):  # a pickle that would run code if loaded without weights_only
        return (print, ("pwned",))


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "pickle", "foreign"])
def test_bad_checkpoints_are_refused_with_a_checkpoint_error(tmp_path, model, recipe, kind) -> None:
    path = tmp_path / "bad.pt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all")
    elif kind == "truncated":
        save_checkpoint(path, model, recipe, [{"name": f"s{i}"} for i in range(3)])
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "pickle":
        torch.save({"format": "vqspeech-checkpoint", "evil": _Evil()}, path)
    elif kind == "foreign":
        torch.save({"state_dict": model.state_dict()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("chunk_frames", [1, 7, 16, 50])
def test_chunked_encoding_gives_exactly_the_whole_file_codes(model: VQVAE, chunk_frames: int) -> None:
    audio = _audio(2, 120)[:, :-17]  # not a whole number of frames
    whole = model.encode(audio)
    assert torch.equal(model.encode(audio, chunk_frames=chunk_frames), whole)


def test_chunked_decoding_equals_one_shot_with_the_same_seed(model: VQVAE) -> None:
    codes = model.encode(_audio(2, 9))
    speaker = torch.tensor([0, 2])
    whole = model.decode(codes, speaker, generator=torch.Generator().manual_seed(3))
    for chunk in (1, 4):
        chunked = model.decode(codes, speaker, generator=torch.Generator().manual_seed(3), chunk_frames=chunk)
        assert torch.equal(chunked, whole)
