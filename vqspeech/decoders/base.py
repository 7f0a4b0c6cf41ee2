"""What a decoder family provides, and the registry that makes one known by name.

A *family* turns the VQ-VAE's codes plus a speaker vector back into audio. It is a plain
object (not a module): it builds its ``nn.Module`` from the model's config, and the model keeps
that module at ``decoders.<name>``, so state_dict keys are ``decoders.<name>.<...>``. For the
model, a family supplies

* :meth:`DecoderFamily.build`: its module, from the :class:`~vqspeech.config.ModelConfig`;
* :meth:`DecoderFamily.loss`: its reconstruction term under teacher forcing, and its prediction;
* :meth:`DecoderFamily.iter_decode`: codes + voice -> audio, chunk by chunk at bounded memory;
* :meth:`DecoderFamily.receptive_field`: the samples one output depends on (for ``info``);
* :meth:`DecoderFamily.describe`: plain data saying what it is, for ``vqspeech info``.

:func:`register` adds a family (and its config class, to recipes) under its ``name``; the
model builds every registered family listed in ``model.decoders``, in registration order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from vqspeech.config import ModelConfig, register_family_config
from vqspeech.errors import ConfigError
from vqspeech.recipe_io import to_dict

#: ``codes [B, F]`` (int64) -> dequantised latents ``z_q [B, D, F]``: the model's codebook lookup.
Lookup = Callable[[Tensor], Tensor]


class FamilyLoss(NamedTuple):
    """One family's part of a training forward pass."""

    loss: Tensor  # scalar reconstruction term, summed into the model's reconstruction loss
    prediction: Tensor  # what the decoder predicted (e.g. logits, log magnitudes), for inspection


class DecoderFamily(ABC):
    """A decoder family: how to build, train and run one kind of decoder. Subclass and :func:`register`.

    ``name`` is what recipes list in ``model.decoders`` and ``--decoder`` takes; ``config_class``
    is its configuration dataclass (a new family's lives at ``model.families.<name>``);
    ``summary`` is a few words for help text and ``vqspeech info``; ``chunk_frames`` is how many
    latent frames a command decodes at a time by default (memory follows it, not the file's length).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    summary: ClassVar[str]
    #: Latent frames per decoder push (250 x hop 64 = 1 s at 16 kHz): bounds decoder memory.
    chunk_frames: ClassVar[int] = 250

    @abstractmethod
    def build(self, config: ModelConfig) -> nn.Module:
        """The decoder module for a model with ``config``; its settings: ``config.family_config(name)``."""

    @abstractmethod
    def loss(self, module: nn.Module, audio: Tensor, z_q: Tensor, voice: Tensor) -> FamilyLoss:
        """Teacher-forced term: audio ``[B, T]`` (``T = F * hop_length``), latents ``z_q [B, D, F]``,
        speaker vectors ``voice [B, speaker_dim]``."""

    @abstractmethod
    def iter_decode(
        self,
        module: nn.Module,
        codes: Tensor,
        voice: Tensor,
        lookup: Lookup,
        *,
        step: int,
        temperature: float,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Iterator[Tensor]:
        """Codes ``[B, F]`` + voice ``[B, speaker_dim]`` -> audio chunks ``[B, n]``, ``step`` latent
        frames at a time (``step >= F``: one chunk); the chunks add up to ``F * hop_length`` samples.

        ``temperature`` and ``generator`` are for families that sample; a family whose output
        does not depend on them ignores them. ``dtype`` is what its network may compute in
        (:func:`vqspeech.device.autocast`; float32 exactly as trained, bfloat16 faster where
        native); the audio is float32 either way, and a family whose output would drift in it
        (the WaveNet's sampling feeds each sample back) computes in float32 regardless.
        """

    @abstractmethod
    def receptive_field(self, config: ModelConfig) -> int:
        """Input samples' worth of context one output sample depends on."""

    def describe(self, config: ModelConfig) -> dict[str, Any]:
        """Plain data about this family in a model with ``config``, for ``vqspeech info``."""
        receptive_field = self.receptive_field(config)
        return {
            "family": self.name,
            "summary": self.summary,
            "receptive_field": receptive_field,
            "receptive_field_ms": receptive_field * 1000.0 / config.sample_rate,
            "config": to_dict(config.family_config(self.name)),
        }


_REGISTRY: dict[str, DecoderFamily] = {}


def register(family: DecoderFamily) -> DecoderFamily:
    """Make ``family`` known by ``family.name``, to models and to recipes; returns it.

    Registering the same name twice is an error unless it is the same family class again
    (re-importing its module is harmless).
    """
    known = _REGISTRY.get(family.name)
    if known is not None and type(known) is not type(family):
        raise ValueError(f"decoder family {family.name!r} is already registered ({type(known).__name__})")
    register_family_config(family.name, family.config_class)
    _REGISTRY[family.name] = family
    return family


def get_family(name: str) -> DecoderFamily:
    """The registered family called ``name``; ConfigError naming the known ones otherwise."""
    family = _REGISTRY.get(name)
    if family is None:
        raise ConfigError(f"unknown decoder family {name!r}; known: {', '.join(_REGISTRY)}")
    return family


def registered() -> tuple[DecoderFamily, ...]:
    """Every registered family, in registration order."""
    return tuple(_REGISTRY.values())
