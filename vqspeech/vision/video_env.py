"""An action-conditioned toy environment generated in code: a stand-in for DeepMind Lab.

The paper (section 4.4) trains a VQ-VAE on DeepMind Lab frames and a prior that predicts the
next latent frame from the previous ones and the agent's action. This environment keeps
what matters for that experiment and needs no download: a square sprite moves over a
textured background under five discrete actions (``noop, up, down, left, right``, by
``step_pixels``, stopping at the borders); frames are RGB ``frame_size`` x ``frame_size``.

Everything is a pure function of seeds: :class:`ToyEnv` (its textures and sprite colour)
of ``ToyEnvConfig.seed``, an episode's start state of the episode's own seed, each frame of
the state. Frames are ``uint8`` ``[3, S, S]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from vqspeech.errors import ConfigError
from vqspeech.vision.config import ToyEnvConfig

ACTIONS = ("noop", "up", "down", "left", "right")
#: (dy, dx) in units of ``step_pixels`` for each action.
_MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
_TILE = 8  # pixels per texture tile


class EnvState(NamedTuple):
    """Which background, and the sprite's top-left corner (pixels)."""

    background: int
    y: int
    x: int


class VideoSet(NamedTuple):
    """Episodes: frames ``[N, T, 3, S, S]`` uint8 and actions ``[N, T - 1]`` int64.

    ``actions[n, t]`` takes frame ``t`` to frame ``t + 1``.
    """

    frames: torch.Tensor
    actions: torch.Tensor


class ToyEnv:
    """The world of ``config``: backgrounds and sprite, and its (deterministic) dynamics."""

    n_actions = len(ACTIONS)

    def __init__(self, config: ToyEnvConfig) -> None:
        self.config = config
        rng = np.random.default_rng([config.seed, 1])
        self.backgrounds = np.stack([_texture(config.frame_size, rng) for _ in range(config.n_backgrounds)])
        self.sprite_colour = np.array([250, 40, 40], np.uint8)
        self.max_corner = config.frame_size - config.sprite_size

    def reset(self, seed: int) -> EnvState:
        """Start state of the episode with ``seed``: a background and a sprite position."""
        rng = np.random.default_rng([self.config.seed, 2, seed])
        background = int(rng.integers(self.config.n_backgrounds))
        y, x = (int(v) for v in rng.integers(0, self.max_corner + 1, size=2))
        return EnvState(background, y, x)

    def step(self, state: EnvState, action: int) -> EnvState:
        """The state after ``action`` (an index into :data:`ACTIONS`)."""
        if not 0 <= action < self.n_actions:
            raise ConfigError(f"action {action} is not one of 0..{self.n_actions - 1} ({', '.join(ACTIONS)})")
        dy, dx = _MOVES[action]
        step = self.config.step_pixels
        y = min(max(state.y + dy * step, 0), self.max_corner)
        x = min(max(state.x + dx * step, 0), self.max_corner)
        return EnvState(state.background, y, x)

    def render(self, state: EnvState) -> np.ndarray:
        """The frame of ``state``: ``[3, S, S]`` uint8."""
        frame = self.backgrounds[state.background].copy()
        s = self.config.sprite_size
        frame[:, state.y : state.y + s, state.x : state.x + s] = self.sprite_colour[:, None, None]
        # A dark outline so the sprite stands out on every texture.
        frame[:, state.y : state.y + s, [state.x, state.x + s - 1]] = 20
        frame[:, [state.y, state.y + s - 1], state.x : state.x + s] = 20
        return frame

    def episode(self, seed: int, actions: Sequence[int]) -> np.ndarray:
        """Frames ``[len(actions) + 1, 3, S, S]`` uint8 from the start state of ``seed``."""
        state = self.reset(seed)
        frames = [self.render(state)]
        for action in actions:
            state = self.step(state, int(action))
            frames.append(self.render(state))
        return np.stack(frames)


def random_actions(n: int, seed: int) -> list[int]:
    """``n`` actions drawn uniformly from :data:`ACTIONS` (seeded)."""
    rng = np.random.default_rng([seed, 3])
    return [int(a) for a in rng.integers(len(ACTIONS), size=n)]


def generate_episodes(env: ToyEnv, episodes: int, length: int, first_seed: int) -> VideoSet:
    """``episodes`` episodes of ``length`` frames, episode ``i`` seeded by ``first_seed + i``."""
    frames, actions = [], []
    for i in range(episodes):
        acts = random_actions(length - 1, first_seed + i)
        frames.append(env.episode(first_seed + i, acts))
        actions.append(acts)
    return VideoSet(
        torch.from_numpy(np.stack(frames)), torch.tensor(actions, dtype=torch.long).view(episodes, -1)
    )


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[3, size, size]`` uint8 background: two-colour tiles, jittered, with soft stripes."""
    tiles = -(-size // _TILE)
    base = rng.uniform(40, 200, size=(2, 3))
    pattern = (np.add.outer(np.arange(tiles), np.arange(tiles)) % 2)[None]  # checkerboard
    colours = np.where(pattern == 0, base[0][:, None, None], base[1][:, None, None])
    colours = colours + rng.uniform(-15, 15, size=(3, tiles, tiles))
    image = colours.repeat(_TILE, axis=1).repeat(_TILE, axis=2)[:, :size, :size]
    period = rng.uniform(10, 20)
    yy, xx = np.mgrid[:size, :size]
    stripes = 12 * np.sin(2 * np.pi * (xx + yy) / period)
    return np.clip(image + stripes[None], 0, 255).astype(np.uint8)
