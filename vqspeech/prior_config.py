"""The prior over speech codes (project issue #8): its network's and its training run's configuration.

A prior is a model of its own, trained after a VQ-VAE on that VQ-VAE's codes, saved in its own
checkpoint (:mod:`vqspeech.prior_checkpoint`) and used for sampling and entropy coding. Its
dataclasses live here, beside the speech recipe (:mod:`vqspeech.config`) whose :class:`TrainConfig`
it shares. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vqspeech.config import TrainConfig
from vqspeech.recipe_io import require


@dataclass(frozen=True)
class PriorConfig:
    """Autoregressive prior over a VQ-VAE's codes: a causal dilated conv stack (issue #8).

    Code ``t`` is predicted from codes ``< t`` and the speaker: the codes are embedded
    (``codebook_size`` -> ``channels``, plus a learned start vector at ``t = 0``), pass
    residual blocks ``x += proj(relu(causal_conv(x) + speaker_bias))`` with kernel
    ``kernel_size`` and the given ``dilations`` (in tokens), then ``relu -> linear -> relu ->
    linear`` to ``codebook_size`` logits. No gates and no normalisation: every op is exact in
    integer arithmetic, so the integer copy used for entropy coding gives the same
    probabilities on every machine. The speaker table has ``n_speakers + 1`` rows, the last
    meaning "unknown speaker". ``codebook_size`` and ``n_speakers`` are taken from the VQ-VAE
    the prior is trained for.
    """

    codebook_size: int = 512
    n_speakers: int = 109
    channels: int = 128
    kernel_size: int = 2
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8)

    @property
    def n_layers(self) -> int:
        return len(self.dilations)

    @property
    def receptive_field(self) -> int:
        """Past codes one prediction can see: code ``t`` depends on codes ``t - R .. t - 1``."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


#: Speaker id meaning "unknown speaker" to a prior (its table's last row, ``n_speakers``).
UNKNOWN_SPEAKER = -1


def check_prior_config(config: PriorConfig) -> PriorConfig:
    """ConfigError naming the first bad value of a prior's ``config`` (float and integer alike)."""
    checks = [
        (config.codebook_size >= 2, "prior codebook_size must be at least 2"),
        (config.n_speakers >= 0, "prior n_speakers must be >= 0"),
        (config.channels >= 1, "model.channels must be at least 1"),
        (config.kernel_size >= 2, "model.kernel_size must be at least 2"),
        (
            len(config.dilations) >= 1 and all(d >= 1 for d in config.dilations),
            "model.dilations must list at least one positive dilation",
        ),
    ]
    require(checks)
    return config


@dataclass(frozen=True)
class PriorRecipe:
    """Everything a prior's training run needs; saved, resolved, into its checkpoint.

    Each step draws ``train.batch_size`` crops of ``segment_tokens`` codes from the training
    utterances (the VQ-VAE recipe's own train/validation split). ``speaker_dropout`` is the
    chance that a crop's speaker is replaced by "unknown", so the prior also works without
    one. Each evaluation measures held-out bits/token of the float model on every held-out
    utterance, and of the integer model on the first ``valid_integer_utterances`` of them
    (about 0.1 s per utterance on a CPU).
    """

    name: str = "prior"
    model: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(
        # Measured on the demo corpus (8 speakers x 40 utterances, K=512, 1 CPU thread, ~1 step/s):
        # held-out 3.72 bits/token after 300 steps (unigram 8.36, raw 9); 64 channels reach 3.80
        # after 800 steps in the same time. A bigger corpus wants more steps (--steps).
        default_factory=lambda: TrainConfig(
            steps=300,
            batch_size=16,
            lr=2e-3,
            warmup_steps=50,
            eval_every=100,
            checkpoint_every=100,
            write_samples=False,
        )
    )
    segment_tokens: int = 512
    speaker_dropout: float = 0.2
    valid_integer_utterances: int = 16
