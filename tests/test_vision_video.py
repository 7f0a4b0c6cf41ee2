"""Video recipe (issue #9): the toy environment, the frame VQ-VAE and the action-conditioned
latent prior through the shared loop, rollouts of the requested length, and one quantiser
class serving speech, images and video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_VISION_NETWORKS, TINY_VISION_SCHEDULES

from vqspeech.checkpoint import load_payload
from vqspeech.config import demo_recipe
from vqspeech.errors import CheckpointError, ConfigError
from vqspeech.model import VQVAE
from vqspeech.nn.quantizer import VectorQuantizer
from vqspeech.vision.checkpoints import is_vision_checkpoint
from vqspeech.vision.config import ToyEnvConfig, VideoPriorConfig, VideoRecipe, load_vision_recipe
from vqspeech.vision.nn import ImageVQVAE, LatentFramePrior
from vqspeech.vision.pictures import png_bytes
from vqspeech.vision.sample import rollout_video, sample_images
from vqspeech.vision.train import train_vision, train_vision_prior
from vqspeech.vision.video_env import ACTIONS, ToyEnv, generate_episodes

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "env.frame_size=32",
    "env.sprite_size=8",
    "model.image_size=32",
    *TINY_VISION_NETWORKS,
    "prior.context_layers=1",
    "data.episodes=4",
    "data.episode_length=4",
    "data.valid_episodes=2",
    "data.eval_frames=8",
    *TINY_VISION_SCHEDULES,
]


def test_env_is_deterministic_and_actions_move_the_sprite() -> None:
    config = ToyEnvConfig(seed=3)
    env, twin = ToyEnv(config), ToyEnv(config)
    actions = [1, 4, 4, 2, 0, 3]
    frames = env.episode(7, actions)
    assert frames.shape == (7, 3, 64, 64) and frames.dtype == np.uint8
    assert np.array_equal(frames, twin.episode(7, actions))
    assert not np.array_equal(frames, ToyEnv(ToyEnvConfig(seed=4)).episode(7, actions))
    # From one state, every action but noop gives another next frame (away from the borders).
    state = env.reset(7)._replace(y=20, x=20)
    nexts = [env.render(env.step(state, a)) for a in range(len(ACTIONS))]
    assert np.array_equal(nexts[0], env.render(state))
    for a in range(1, len(ACTIONS)):
        assert not np.array_equal(nexts[a], nexts[0]), ACTIONS[a]
        assert all(not np.array_equal(nexts[a], nexts[b]) for b in range(1, a))
    # Borders stop the sprite.
    corner = state._replace(y=0, x=0)
    assert env.step(corner, 1) == corner and env.step(corner, 3) == corner
    with pytest.raises(ConfigError, match="action"):
        env.step(state, 5)
    episodes = generate_episodes(env, 3, 5, 0)
    assert episodes.frames.shape == (3, 5, 3, 64, 64) and episodes.actions.shape == (3, 4)


def test_the_same_quantiser_class_serves_speech_images_and_video() -> None:
    speech = VQVAE(demo_recipe().model)
    image = ImageVQVAE(load_vision_recipe("digits").model)
    video = ImageVQVAE(load_vision_recipe("video").model)
    for model in (speech, image, video):
        assert type(model.quantizer) is VectorQuantizer
    # ... and it quantises [B, D, T], [B, D, H, W] and [B, D, T, H, W] alike.
    q = image.quantizer.eval()
    d = q.config.dim
    for shape in ((2, d, 5), (2, d, 4, 4), (2, d, 3, 4, 4)):
        out = q(torch.randn(*shape))
        assert out.codes.shape == (shape[0], *shape[2:])
        torch.testing.assert_close(out.quantized, q.lookup(out.codes))


def test_latent_prior_depends_on_action_and_previous_frame() -> None:
    torch.manual_seed(0)
    prior = LatentFramePrior(
        8, VideoPriorConfig(channels=8, layers=2, kernel_size=3, context_layers=1), 5
    ).eval()
    previous = torch.randint(0, 8, (1, 4, 4))
    codes = torch.randint(0, 8, (1, 4, 4))
    base = prior(previous, torch.tensor([0]), codes)
    assert not torch.allclose(base, prior(previous, torch.tensor([3]), codes))
    other = previous.clone()
    other[0, 0, 1] = (other[0, 0, 1] + 1) % 8
    # The previous frame is given, not generated: even the first position, which sees no
    # codes of its own frame, sees the previous frame around it (here through one 3x3 block).
    changed = prior(other, torch.tensor([0]), codes)
    assert not torch.allclose(base[..., 0, 0], changed[..., 0, 0])


def test_video_train_prior_and_rollout(tmp_path: Path) -> None:
    recipe = load_vision_recipe(ROOT / "recipes/video/toy.yaml", TINY)
    assert isinstance(recipe, VideoRecipe)
    vq = train_vision(recipe, None, tmp_path / "vq", steps=2, device="cpu")
    assert load_payload(vq.checkpoint, ("video-vqvae",))["kind"] == "video-vqvae"
    assert vq.last_eval is not None and "reconstruction_bits_per_dim" in vq.last_eval.values
    prior = train_vision_prior(vq.checkpoint, None, tmp_path / "prior", steps=2, device="cpu")
    assert load_payload(prior.checkpoint, ("video-prior",))["kind"] == "video-prior"
    assert prior.last_eval is not None and 0 <= prior.last_eval.values["next_code_accuracy"] <= 1
    assert (tmp_path / "prior" / "samples" / "step0000002" / "rollout.png").is_file()
    assert is_vision_checkpoint(prior.checkpoint) and not is_vision_checkpoint(tmp_path / "missing.pt")

    pytest.importorskip("PIL")
    from PIL import Image

    for n in (1, 5):
        gif, png = tmp_path / f"r{n}.gif", tmp_path / f"r{n}.png"
        result = rollout_video(vq.checkpoint, prior.checkpoint, gif, png, n_frames=n, seed=1, device="cpu")
        assert result.frames.shape == (n + 1, 3, 32, 32) and result.truth.shape == (n + 1, 3, 32, 32)
        assert result.codes.shape == (n + 1, 4, 4) and len(result.actions) == n
        with Image.open(gif) as animation:
            # Pillow merges identical consecutive frames (adding their durations), so the
            # rollout's length shows in the total duration: n + 1 frames at 5 fps.
            total_ms = 0
            for index in range(getattr(animation, "n_frames", 1)):
                animation.seek(index)
                total_ms += animation.info["duration"]
            assert total_ms == (n + 1) * 200
        with Image.open(png) as strip:
            assert strip.size == (2 + (n + 1) * 34, 2 + 2 * 34)  # one column per frame, two rows

    actions = [4, 4, 2]
    first = rollout_video(vq.checkpoint, prior.checkpoint, None, None, 3, actions, seed=2, device="cpu")
    again = rollout_video(vq.checkpoint, prior.checkpoint, None, None, 3, actions, seed=2, device="cpu")
    assert first.actions == actions and torch.equal(first.codes, again.codes)  # seeded
    with pytest.raises(ConfigError, match="one action per frame"):
        rollout_video(vq.checkpoint, prior.checkpoint, None, None, 4, actions, device="cpu")
    with pytest.raises(ConfigError, match="action 9"):
        rollout_video(vq.checkpoint, prior.checkpoint, None, None, 1, [9], device="cpu")
    with pytest.raises(ConfigError, match="video prior"):
        sample_images(vq.checkpoint, prior.checkpoint, tmp_path / "x.png", n=1, device="cpu")
    with pytest.raises(CheckpointError, match="not"):
        rollout_video(prior.checkpoint, prior.checkpoint, None, None, 1, device="cpu")


def test_png_writer_writes_a_valid_png() -> None:
    pil = pytest.importorskip("PIL.Image")
    import io

    picture = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    with pil.open(io.BytesIO(png_bytes(picture))) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), picture)
