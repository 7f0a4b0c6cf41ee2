"""The adversarial speaker classifier on the codes (issue 7): gradient reversal, what it pushes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_checkpoint, tiny_recipe, tone

from vqspeech.codec import Codec
from vqspeech.model import VQVAE
from vqspeech.nn.adversary import CodeSpeakerAdversary, reverse_gradient


def test_reverse_gradient_is_identity_forward_and_negates_backward() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).view(3, 4)).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, -0.25 * torch.arange(12.0).view(3, 4))


def test_the_classifier_learns_while_the_encoder_is_pushed_the_other_way() -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(3, "model.code_adversary=0.5").model)
    assert isinstance(model.code_adversary, CodeSpeakerAdversary)
    audio = torch.from_numpy(np.stack([tone(0.128, f0=f0, seed=i) for i, f0 in enumerate((110, 220, 330))]))
    speaker = torch.tensor([0, 1, 2])
    out = model(audio, speaker)
    assert out.adversary_loss is not None and out.adversary_loss > 0
    encoder = list(model.encoder.parameters())
    classifier = list(model.code_adversary.parameters())
    pushed = torch.autograd.grad(out.adversary_loss, encoder + classifier, retain_graph=True)
    # the same cross-entropy without the reversal: what a plain classifier would send back
    logits = model.code_adversary.net(model.quantizer(model.encoder(audio)).quantized)
    plain_loss = torch.nn.functional.cross_entropy(logits, speaker[:, None].expand(-1, logits.shape[-1]))
    plain = torch.autograd.grad(plain_loss, encoder + classifier)
    n = len(encoder)
    for got, want in zip(pushed[:n], plain[:n], strict=True):
        torch.testing.assert_close(got, -0.5 * want)  # the encoder: reversed and scaled
    for got, want in zip(pushed[n:], plain[n:], strict=True):
        torch.testing.assert_close(got, want)  # the classifier: an ordinary classifier
    # the codebook gets nothing from the adversary (straight-through's detached branch); with
    # EMA updates (the default) it is a buffer anyway, so check a gradient-trained codebook
    by_gradient = VQVAE(tiny_recipe(3, "model.code_adversary=0.5", "model.quantizer.ema=false").model)
    codebook = list(by_gradient.quantizer.parameters())
    assert codebook
    grads = torch.autograd.grad(by_gradient(audio, speaker).adversary_loss, codebook, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    # the adversary's term is part of the training loss; 0 (the default) means no classifier at all
    assert out.loss >= out.reconstruction_loss + out.adversary_loss - 1e-4
    plain_model = VQVAE(tiny_recipe(3).model)
    assert plain_model.code_adversary is None and plain_model(audio, speaker).adversary_loss is None


def test_a_few_adversarial_steps_make_the_codes_harder_to_tell_apart() -> None:
    """Train the encoder against a frozen, already-trained classifier: its loss must rise."""
    torch.manual_seed(0)
    model = VQVAE(tiny_recipe(2, "model.code_adversary=1.0").model)
    assert model.code_adversary is not None
    audio = torch.from_numpy(np.stack([tone(0.256, f0=f0, seed=i) for i, f0 in enumerate((100, 300))]))
    speaker = torch.tensor([0, 1])
    adversary = model.code_adversary

    def classifier_loss() -> float:
        with torch.no_grad():
            return float(adversary(model.quantizer(model.encoder(audio)).quantized, speaker))

    head = torch.optim.Adam(adversary.parameters(), lr=1e-2)
    for _ in range(100):  # the classifier first learns to tell the two tones apart
        head.zero_grad()
        adversary(model.quantizer(model.encoder(audio)).quantized.detach(), speaker).backward()
        head.step()
    before = classifier_loss()
    assert before < 0.1
    body = torch.optim.Adam(model.encoder.parameters(), lr=3e-3)
    for _ in range(30):  # then only the encoder moves, through the reversal
        body.zero_grad()
        model(audio, speaker).adversary_loss.backward()
        body.step()
    assert classifier_loss() > before + 0.05, (before, classifier_loss())


def test_a_checkpoint_with_an_adversary_loads_encodes_and_keeps_its_fingerprint(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "adv.pt", extra=["model.code_adversary=0.3"])
    codec = Codec.load(path)  # the classifier's batch-norm counter is a 0-d buffer
    assert codec.model.code_adversary is not None
    assert Codec.load(path).fingerprint == codec.fingerprint and len(codec.fingerprint) == 16
    codes = codec.encode_audio(tone(0.256, f0=150))
    assert codes.shape == (1, 64)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
