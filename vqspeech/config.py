"""Configuration: frozen dataclasses for the model, data and training, and recipe loading.

A *recipe* is a :class:`Recipe` (model + data + train). Two are built in and accepted by
name wherever a recipe path is: ``paper`` (the VQ-VAE paper's speech setup: 16 kHz, K=512,
64x downsampling) and ``demo`` (sized for a 2-core CPU). A recipe file is YAML holding
``base: paper|demo`` and nested overrides; ``--set model.quantizer.codebook_size=256``
style overrides apply on top. Unknown keys are an error, never silently ignored.

Every derived number (``hop_length``, receptive fields, token rate, bitrate, crop length) is computed
here from the config, so no other module hard-codes it. The generic machinery (strict
dict <-> dataclass, ``base:`` chains, ``--set`` overrides) is :mod:`vqspeech.recipe_io`, shared
with the vision recipes; the prior's configuration is :mod:`vqspeech.prior_config`. This module
imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqspeech.data.augment_config import AugmentConfig
from vqspeech.errors import ConfigError, DataError
from vqspeech.recipe_io import from_dict, merge, parse_override, require, resolve_base_chain, to_dict


@dataclass(frozen=True)
class EncoderConfig:
    """Strided 1-d conv encoder (paper section 4.3) plus non-causal dilated residual convs.

    ``n_downsample`` stride-2 convolutions of width ``kernel_size`` give
    ``hop_length = 2 ** n_downsample`` samples per latent (paper: 6 -> 64x). After them,
    residual blocks with ``res_kernel_size`` and ``res_dilations`` (in latent frames) widen
    each latent's context to a few hundred ms.
    """

    channels: int = 128
    n_downsample: int = 6
    kernel_size: int = 4
    res_kernel_size: int = 3
    res_dilations: tuple[int, ...] = (1, 2, 4, 8, 16)

    @property
    def hop_length(self) -> int:
        """Samples per latent frame."""
        return 2**self.n_downsample

    @property
    def receptive_field(self) -> int:
        """Input samples that one latent frame can see (total width, both sides)."""
        rf = 1
        stride = 1
        for _ in range(self.n_downsample):
            rf += (self.kernel_size - 1) * stride
            stride *= 2
        for d in self.res_dilations:
            rf += (self.res_kernel_size - 1) * d * stride
        return rf


@dataclass(frozen=True)
class QuantizerConfig:
    """Vector quantiser (paper section 3.1, appendix A.1 for EMA).

    ``beta`` weighs the commitment loss. With ``ema`` the codebook follows exponential
    moving averages of the assigned encoder outputs (``ema_decay``, Laplace smoothing
    ``ema_eps``) instead of the codebook loss's gradient. ``kmeans_init`` seeds the codebook
    from the first training batch; ``dead_code_steps`` > 0 re-seeds codes unused for that
    many steps from recent encoder outputs (0 disables).
    """

    dim: int = 64
    codebook_size: int = 512
    beta: float = 0.25
    ema: bool = False
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    kmeans_init: bool = False
    kmeans_iters: int = 10
    dead_code_steps: int = 0

    @property
    def bits_per_code(self) -> int:
        """Bits one code takes when packed: ceil(log2 K)."""
        return max(1, math.ceil(math.log2(self.codebook_size)))


@dataclass(frozen=True)
class WaveNetConfig:
    """WaveNet decoder: causal dilated convs in cycles, gated units, residual and skip paths.

    Dilations are ``2**i`` for ``i`` in ``range(layers_per_cycle)``, repeated
    ``dilation_cycles`` times. The output is a ``quantization_channels``-way categorical over
    mu-law samples (paper: 256, 8 bits). Local conditioning: ``z_q`` passes a latent-rate
    conditioning network (``cond_channels``, ``cond_kernel_size``) and is repeated up to
    the sample rate; global conditioning: the model's speaker vector (``ModelConfig.speaker_dim``).
    """

    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 128
    kernel_size: int = 2
    layers_per_cycle: int = 8
    dilation_cycles: int = 2
    quantization_channels: int = 256
    cond_channels: int = 128
    cond_kernel_size: int = 3

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2**i for i in range(self.layers_per_cycle)) * self.dilation_cycles

    @property
    def n_layers(self) -> int:
        return self.layers_per_cycle * self.dilation_cycles

    @property
    def receptive_field(self) -> int:
        """Past samples that one output can see: logits at t depend on samples t-R .. t-1."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)


#: The spectrogram decoder's pitch head (``vocoder: harmonic``, :class:`vqspeech.nn.pitch.PitchHead`):
#: a 3-wide input conv, then residual ``PITCH_KERNEL``-wide convs with these dilations, in output
#: frames; so it reaches ``PITCH_HEAD_REACH`` frames either side beyond the decoder's blocks.
PITCH_KERNEL = 5
PITCH_DILATIONS = (1, 2, 4, 8, 1)
PITCH_HEAD_REACH = 1 + sum(d * (PITCH_KERNEL - 1) // 2 for d in PITCH_DILATIONS)


@dataclass(frozen=True)
class SpectrogramConfig:
    """Spectrogram decoder (project issue #5): codes + speaker -> log STFT magnitudes -> Griffin-Lim.

    One STFT frame every ``frame_stride`` latent frames (STFT hop = ``frame_stride *
    hop_length``), ``n_fft``-point Hann window; a strided input conv, then non-causal dilated
    residual blocks (``kernel_size``, ``dilations`` in output frames) modulated by the
    speaker vector. Griffin-Lim runs at ``griffin_lim_hop`` samples (a multiple of the
    frame hop) for ``griffin_lim_iters`` iterations. Measured from true magnitudes on the
    demo corpus (n_fft 512): hop 64 / 16 iterations STOI 0.988; hop 128 / 16: 0.989 at 1.6x
    the speed; hop 128 / 8: 0.976 at 3x. Griffin-Lim only ever used every other frame at
    hop 64, hence ``frame_stride=2`` in the demo: half the decoder's work for the same audio.

    Loss: L1 on log magnitudes + L1 on log-mel. Measured and not kept (demo, 800 steps, same
    held-out STOI or worse): adding spectral convergence, adding an L1 on the spectral
    envelope (low-quefrency cepstrum), and a 128-channel decoder (worse per step).
    """

    channels: int = 256
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8)
    n_fft: int = 512
    n_mels: int = 80
    griffin_lim_iters: int = 16
    griffin_lim_hop: int = 128
    frame_stride: int = 1
    # "pghi": Griffin-Lim starts from phase gradient heap integration of the predicted magnitudes
    # instead of random phases (vqspeech.vocoder.pghi_phase): DNSMOS 2.11 vs 1.97, PESQ-WB 1.33 vs
    # 1.31, same STOI, on held-out-engine voices (issue 16). "random" is how older models decode.
    phase_init: str = "random"
    # "harmonic": a pitch head predicts voicing and F0 per frame (trained on YIN of the target
    # audio) and vqspeech.vocoder.harmonic_plus_noise makes harmonics below harmonic_max_hz at
    # that F0, with the predicted magnitudes' band energies, and noise elsewhere: coherent
    # harmonics instead of Griffin-Lim's phases for blurred magnitudes (issue 16).
    # "griffin_lim" is how older models decode (phase_init, griffin_lim_iters).
    vocoder: str = "griffin_lim"
    harmonic_max_hz: float = 4000.0
    # true: the pitch head reads a detached copy of the blocks' output, so the pitch loss trains
    # the head alone and the magnitudes' trunk learns exactly as without it. For short runs from
    # scratch (the demo), where the shared trunk otherwise splits its few steps between the two.
    pitch_detach: bool = False

    @property
    def harmonic(self) -> bool:
        """Whether the decoder has a pitch head and decodes with the harmonic-plus-noise vocoder."""
        return self.vocoder == "harmonic"

    @property
    def input_kernel(self) -> int:
        """Width in latent frames of the strided input conv: centred on every ``frame_stride``-th."""
        return self.kernel_size + 2 * (self.frame_stride - 1)

    def context_frames(self) -> int:
        """Latent frames either side of its centre that one output frame depends on."""
        blocks = sum(d * (self.kernel_size - 1) // 2 for d in self.dilations)
        if self.harmonic:  # the pitch head reads the blocks' output with a reach of its own
            blocks += PITCH_HEAD_REACH
        return (self.input_kernel - 1) // 2 + self.frame_stride * blocks

    def receptive_field(self, hop_length: int) -> int:
        """Samples one output frame depends on: the conv stack's frames, plus one STFT window."""
        return 2 * self.context_frames() * hop_length + self.n_fft


#: Decoder families whose configuration is a field of :class:`ModelConfig` of its own, under
#: the name recipes have always used (``model.decoder`` is the WaveNet's). A family registered
#: later (:func:`register_family_config`, called by ``vqspeech.decoders.register``) reads its
#: configuration from ``model.families.<name>`` instead, so adding one does not touch this file.
BUILTIN_FAMILY_SECTIONS: dict[str, str] = {"wavenet": "decoder", "spectrogram": "spectrogram"}

_FAMILY_CONFIGS: dict[str, type] = {"wavenet": WaveNetConfig, "spectrogram": SpectrogramConfig}


def register_family_config(name: str, config_class: type) -> None:
    """Make decoder family ``name`` known to recipes, configured by dataclass ``config_class``.

    Its settings live in ``model.families.<name>`` (e.g. ``--set model.families.<name>.x=1``);
    a family already registered under ``name`` with another class is an error.
    """
    known = _FAMILY_CONFIGS.get(name)
    if known is not None and known is not config_class:
        raise ValueError(f"decoder family {name!r} is already registered with {known.__name__}")
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"decoder family {name!r}: its config must be a dataclass, got {config_class!r}")
    _FAMILY_CONFIGS[name] = config_class


def decoder_families() -> tuple[str, ...]:
    """Every decoder family name a recipe may list in ``model.decoders``, in registration order."""
    return tuple(_FAMILY_CONFIGS)


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """Speaker encoder (project issue #7): an utterance -> a bounded ``speaker_dim`` voice vector.

    Off by default (``enabled``), so older checkpoints and recipes are unchanged. When on, the
    decoders' global conditioning comes from this vector or from the speaker table, and every
    speaker vector, table rows included, is squashed by ``tanh`` into [-1, 1], so a vector
    quantises to a fixed grid of ``vector_bits`` bits per dimension for token files.

    Network: ``n_mels``-band log-mel (``n_fft``-point, ``hop_length_ms`` hop) -> ``layers``
    1-d convs of ``channels`` (width ``kernel_size``) -> mean + standard deviation over the
    speech frames -> linear -> tanh. Training feeds it a ``reference_seconds`` crop of *another*
    utterance of the same speaker, so it can only carry what the two share: the voice, not the
    words. Each item's decoder gets the table's vector with probability ``table_prob`` (named
    speakers keep working) and the encoder's otherwise; ``pull_weight`` weighs a mean-square
    loss that pulls the encoder's vector toward its speaker's table row (the rows themselves
    learn from the decoders only), so the encoder learns the table's space of voices and places
    new voices in it.

    ``envelope`` (on by default since it was measured): the last entries of the vector are the
    reference's measured long-term spectral envelope (cepstral coefficients of its mean
    log-mel, not learned; see :mod:`vqspeech.nn.speaker`), and the spectrogram decoder adds
    that envelope, mapped to its STFT bins by a fixed matrix and a learned per-bin gain, to its
    log magnitudes, so it predicts the speaker-normalised residual and an unseen voice keeps
    its own envelope. Measured on 48 synthetic voices (40 trained, 8 never heard), 600 steps:
    unseen speakers' reconstructions heard as themselves 0 % without it, 60-65 % with it (two
    seeds, 48 each), zero-shot conversions heard as the target 0 % -> 62-65 %, same STOI.
    Models trained before the option existed load with it off.

    ``pitch`` (an experiment): one more measured entry, just before the envelope: the
    reference's mean log2 F0 over voiced frames (YIN; see :mod:`vqspeech.nn.speaker`).
    """

    enabled: bool = False
    channels: int = 128
    layers: int = 3
    kernel_size: int = 5
    n_mels: int = 40
    n_fft: int = 512
    hop_length_ms: float = 10.0
    reference_seconds: float = 2.0
    table_prob: float = 0.5
    pull_weight: float = 1.0
    vector_bits: int = 8
    envelope: bool = True
    pitch: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """The whole VQ-VAE: encoder -> quantiser -> speaker-conditioned decoder(s).

    ``decoders`` lists the decoder families the model trains and can decode with, the first
    being the default: ``wavenet`` (the paper's, configured by ``decoder``) and/or
    ``spectrogram`` (configured by ``spectrogram``), or any family registered since
    (:mod:`vqspeech.decoders`; configured by ``families.<name>``, see :meth:`family_config`).
    All read the same codes and the same ``speaker_dim``-sized speaker vectors, so one token
    file decodes with any of them. Those come
    from the speaker table (``n_speakers`` rows) or, with ``speaker_encoder.enabled``, from a
    speaker encoder that hears a recording of the voice, seen in training or not (issue #7).
    """

    sample_rate: int = 16000
    n_speakers: int = 109
    speaker_dim: int = 64
    decoders: tuple[str, ...] = ("wavenet",)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: WaveNetConfig = field(default_factory=WaveNetConfig)
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    speaker_encoder: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)
    # Weight of an adversarial per-frame speaker classifier on the quantised latents, through
    # gradient reversal (vqspeech.nn.adversary): pushes speaker identity out of the codes.
    # 0 (the default): no classifier, the model is as before.
    code_adversary: float = 0.0
    # Settings of registered decoder families that have no field above, by family name:
    # ``{"name": {"key": value}}``, read through family_config. Empty (the default) for the
    # built-in families, so older checkpoints and fingerprints are unchanged.
    families: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    def family_config(self, name: str) -> Any:
        """The configuration dataclass of decoder family ``name``.

        ``wavenet`` -> :attr:`decoder`, ``spectrogram`` -> :attr:`spectrogram`; any other
        registered family -> its config class built from ``families[name]`` (defaults for
        keys left out). ConfigError for a family nobody registered or a bad setting.
        """
        if name in BUILTIN_FAMILY_SECTIONS:
            return getattr(self, BUILTIN_FAMILY_SECTIONS[name])
        if name not in _FAMILY_CONFIGS:
            raise ConfigError(f"unknown decoder family {name!r}; known: {', '.join(decoder_families())}")
        return from_dict(_FAMILY_CONFIGS[name], self.families.get(name, {}), f"model.families.{name}")

    @property
    def token_rate(self) -> float:
        """Latent frames (tokens) per second."""
        return self.sample_rate / self.hop_length

    @property
    def bitrate(self) -> float:
        """Raw bitrate of the token stream in bits/s: token_rate * ceil(log2 K)."""
        return self.token_rate * self.quantizer.bits_per_code


@dataclass(frozen=True)
class DataConfig:
    """How training examples are drawn: fixed-length random crops, held-out utterances.

    ``augment``: channel and room augmentation of the training crops (issue 17; see
    :class:`~vqspeech.data.augment_config.AugmentConfig`), off by default.
    """

    segment_seconds: float = 1.0
    valid_utterances_per_speaker: int = 2
    valid_speakers: tuple[str, ...] = ()
    valid_max_segments: int = 32  # held-out segments per evaluation: bounds its cost
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def segment_length(segment_seconds: float, sample_rate: int, hop_length: int = 1) -> int:
    """Crop length in samples: ``segment_seconds * sample_rate`` rounded to the nearest
    multiple of ``hop_length`` (at least one hop), so every crop has a whole number of latents.
    """
    if segment_seconds <= 0 or sample_rate <= 0 or hop_length <= 0:
        raise DataError("segment_seconds, sample_rate and hop_length must be positive")
    hops = max(1, round(segment_seconds * sample_rate / hop_length))
    return hops * hop_length


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings (AdamW, warmup + cosine decay, clipping)."""

    steps: int = 2000
    batch_size: int = 8
    lr: float = 4e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    checkpoint_every: int = 500
    log_every: int = 10
    write_samples: bool = True  # at each evaluation: original/reconstruction WAVs + spectrogram PNG
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """Everything a run needs; saved, resolved, into every checkpoint."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------
# Built-in recipes


def paper_recipe() -> Recipe:
    """The paper's speech setup: 16 kHz, six stride-2 convs (64x), K=512, beta 0.25.

    The paper does not give the WaveNet's width; we use the common 2 x 10-layer stack
    (dilations up to 512) with 128 residual / 256 skip channels.
    """
    model = ModelConfig(
        sample_rate=16000,
        n_speakers=109,  # VCTK
        encoder=EncoderConfig(channels=256, n_downsample=6, kernel_size=4),
        quantizer=QuantizerConfig(dim=64, codebook_size=512, beta=0.25),
        decoder=WaveNetConfig(
            residual_channels=128,
            gate_channels=256,
            skip_channels=256,
            layers_per_cycle=10,
            dilation_cycles=2,
            cond_channels=256,
        ),
    )
    train = TrainConfig(steps=250_000, batch_size=16, lr=2e-4, warmup_steps=1000)
    return Recipe(name="paper", model=model, train=train)


def demo_recipe() -> Recipe:
    """A CPU-sized model: the paper's 64x encoder and K=512, decoded by the spectrogram family.

    Measured on a 2-core CPU (issue #5): the WaveNet learns ~0.6x real time of audio per
    second and does not speak after 10 minutes; the spectrogram decoder learns ~19x real
    time and does. A small WaveNet is configured too, for ``--set model.decoders=[wavenet]``.
    Codes unused for 20 steps are re-seeded: k-means on an untrained encoder's nearly
    constant outputs otherwise collapses onto one code within 10 steps.
    """
    model = ModelConfig(
        sample_rate=16000,
        n_speakers=8,
        speaker_dim=32,
        decoders=("spectrogram",),
        encoder=EncoderConfig(channels=64, n_downsample=6, kernel_size=4),
        quantizer=QuantizerConfig(
            dim=64, codebook_size=512, beta=0.25, ema=True, kmeans_init=True, dead_code_steps=20
        ),
        decoder=WaveNetConfig(
            residual_channels=64,
            gate_channels=128,
            skip_channels=128,
            layers_per_cycle=10,
            dilation_cycles=1,
            cond_channels=64,
        ),
        # 192 channels and 12 Griffin-Lim iterations: same held-out STOI as 256 / 16 after the
        # same 10 minutes (0.713 vs 0.714) and faster decoding (48x vs 44x real time). Frame
        # stride 2: the frames Griffin-Lim reads, no others; same STOI per step (0.724 vs 0.721
        # at 800 steps) at 0.75x the step time, so more steps fit the demo's budget.
        # Griffin-Lim from PGHI phases, 8 iterations: DNSMOS 2.00 vs 1.88 for 12 from random phases
        # (bundled model, 20 held-out-engine files), same STOI/PESQ; it costs speed: the vocoder
        # runs at 57x instead of 126x real time, a whole 600-s decode at 29x instead of 36x (one
        # thread, benchmarks/bench_bundled.py; issue 16). The harmonic vocoder (a pitch head and
        # harmonic-plus-noise synthesis, issue 16) with the pitch head on a detached trunk: held-out
        # STOI 0.819 vs 0.808, DNSMOS 2.65 vs 2.09 (originals 2.78), PESQ-WB 1.20 vs 1.19 for
        # Griffin-Lim (same eSpeak demo corpus and seed); trained jointly instead, the pitch loss
        # cost the magnitudes STOI (0.730 vs 0.770 on last session's corpus).
        spectrogram=SpectrogramConfig(
            channels=192,
            griffin_lim_iters=8,
            frame_stride=2,
            phase_init="pghi",
            vocoder="harmonic",
            pitch_detach=True,
        ),
    )
    data = DataConfig(segment_seconds=1.0)
    # lr 2e-3: held-out STOI 0.721 vs 0.712 at 1e-3 after 800 steps (valid loss 1.83 vs 1.92)
    train = TrainConfig(
        steps=1000, batch_size=16, lr=2e-3, warmup_steps=30, eval_every=250, checkpoint_every=250
    )
    return Recipe(name="demo", model=model, data=data, train=train)


BUILTIN_RECIPES: dict[str, typing.Callable[[], Recipe]] = {"paper": paper_recipe, "demo": demo_recipe}


def validate(recipe: Recipe) -> Recipe:
    """Reject values that would build a broken model, with a message that says which."""
    m = recipe.model
    checks = [
        (m.sample_rate > 0, "model.sample_rate must be positive"),
        (m.n_speakers >= 1, "model.n_speakers must be at least 1"),
        (m.encoder.n_downsample >= 1, "model.encoder.n_downsample must be at least 1"),
        (
            m.encoder.kernel_size >= 2 and m.encoder.kernel_size % 2 == 0,
            "model.encoder.kernel_size must be even and >= 2 (stride-2 convs halve the length exactly)",
        ),
        (m.encoder.res_kernel_size % 2 == 1, "model.encoder.res_kernel_size must be odd"),
        (m.quantizer.codebook_size >= 2, "model.quantizer.codebook_size must be at least 2"),
        (m.quantizer.codebook_size <= 65536, "model.quantizer.codebook_size must be at most 65536"),
        (0.0 < m.quantizer.ema_decay < 1.0, "model.quantizer.ema_decay must be in (0, 1)"),
        (
            len(m.decoders) >= 1
            and set(m.decoders) <= set(decoder_families())
            and len(set(m.decoders)) == len(m.decoders),
            f"model.decoders must list distinct families from {', '.join(decoder_families())}",
        ),
        (
            not set(m.families) & set(BUILTIN_FAMILY_SECTIONS),
            "model.families is for registered families; configure "
            + ", ".join(f"{name} in model.{field}" for name, field in BUILTIN_FAMILY_SECTIONS.items()),
        ),
        (m.speaker_dim >= 1, "model.speaker_dim must be at least 1"),
        (m.spectrogram.kernel_size % 2 == 1, "model.spectrogram.kernel_size must be odd"),
        (m.spectrogram.frame_stride >= 1, "model.spectrogram.frame_stride must be at least 1"),
        (
            m.spectrogram.phase_init in ("random", "pghi"),
            f"model.spectrogram.phase_init must be random or pghi, got {m.spectrogram.phase_init!r}",
        ),
        (
            m.spectrogram.vocoder in ("griffin_lim", "harmonic"),
            f"model.spectrogram.vocoder must be griffin_lim or harmonic, got {m.spectrogram.vocoder!r}",
        ),
        (
            0 < m.spectrogram.harmonic_max_hz <= m.sample_rate / 2,
            "model.spectrogram.harmonic_max_hz must be above 0 and at most half the sample rate",
        ),
        (
            m.spectrogram.griffin_lim_hop % (m.hop_length * m.spectrogram.frame_stride) == 0,
            "model.spectrogram.griffin_lim_hop must be a multiple of hop_length x frame_stride",
        ),
        (
            m.spectrogram.n_fft % m.spectrogram.griffin_lim_hop == 0,
            "model.spectrogram.n_fft must be a multiple of griffin_lim_hop",
        ),
        (
            m.spectrogram.n_fft >= 2 * m.spectrogram.griffin_lim_hop,
            "model.spectrogram.n_fft must be at least twice griffin_lim_hop (Griffin-Lim needs overlap)",
        ),
        (m.decoder.kernel_size >= 2, "model.decoder.kernel_size must be at least 2"),
        (
            m.speaker_encoder.layers >= 1 and m.speaker_encoder.kernel_size % 2 == 1,
            "model.speaker_encoder needs at least one layer and an odd kernel_size",
        ),
        (
            1 <= m.speaker_encoder.vector_bits <= 16,
            "model.speaker_encoder.vector_bits must be in [1, 16]",
        ),
        (
            0.0 <= m.speaker_encoder.table_prob <= 1.0,
            "model.speaker_encoder.table_prob must be in [0, 1]",
        ),
        (
            m.speaker_encoder.reference_seconds * 1000 >= 4 * m.speaker_encoder.hop_length_ms > 0,
            "model.speaker_encoder.reference_seconds must cover at least 4 hops of hop_length_ms",
        ),
        (
            m.decoder.gate_channels % 2 == 0,
            "model.decoder.gate_channels must be even (tanh and sigmoid halves)",
        ),
        (m.decoder.n_layers >= 1, "model.decoder needs at least one layer"),
        (recipe.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (
            recipe.data.segment_seconds * m.sample_rate >= m.hop_length,
            "data.segment_seconds is shorter than one latent frame",
        ),
    ]
    require(checks)
    for name in m.families:  # each registered family's settings must build its config
        m.family_config(name)
    return recipe


def load_recipe(name_or_path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Resolve a built-in name (``paper``, ``demo``) or a YAML recipe file, plus overrides.

    A YAML file may start from ``base: NAME`` (a built-in or another file, relative to it);
    without ``base`` it starts from the defaults of :class:`Recipe`.
    """
    builtin, data = resolve_base_chain(str(name_or_path), BUILTIN_RECIPES)
    if builtin is None:
        data = merge(to_dict(Recipe()), data)
    for text in overrides:
        data = merge(data, parse_override(text))
    return validate(from_dict(Recipe, data))


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Rebuild a recipe saved with :func:`to_dict` (e.g. from a checkpoint)."""
    return validate(from_dict(Recipe, data))
