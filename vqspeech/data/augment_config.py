""":class:`AugmentConfig`: channel and room augmentation at training time (issue 17), as config.

Kept apart from :mod:`vqspeech.data.augment` so that :mod:`vqspeech.config` can hold it without
importing scipy, soxr or torch: this module imports nothing heavy. Off by default
(``enabled=False``), so recipes and checkpoints written before it train exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from vqspeech.errors import ConfigError

#: What the decoder learns to give back (see :class:`AugmentConfig`).
TARGETS = ("degraded", "clean")
#: Additive noise colours: power spectral density proportional to ``1 / f ** beta``, beta 0, 1, 2.
NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class AugmentConfig:
    """Random channel and room degradations of each training crop (issue 17), ``data.augment``.

    With ``enabled``, every training crop passes a signal chain in this order (a room, then a
    microphone and a line, then a recorder), each stage applied with its own probability and
    parameters drawn uniformly from its range (``(low, high)`` pairs):

    1. reverberation (``reverb_prob``): an exponentially decaying Gaussian-noise room response
       (Polack's statistical model, not an image-source room) with ``reverb_rt60`` seconds of
       60 dB decay and a direct-to-reverberant ratio of ``reverb_drr_db``;
    2. additive noise (``noise_prob``) at ``noise_snr_db`` dB SNR: babble of
       ``babble_talkers`` other training utterances with probability ``babble_share``, else
       noise of a colour drawn from ``noise_colours`` (white, pink, brown);
    3. random EQ (``eq_prob``): a spectral tilt of ``eq_tilt_db_per_octave`` dB/octave about
       1 kHz plus up to ``eq_max_bands`` peaks or dips of ``eq_gain_db`` dB, ``eq_width_octaves``
       wide, centred log-uniformly in 100 Hz - 7 kHz;
    4. band limits: a random band (``band_prob``; low cut ``band_low_hz``, none below 20 Hz;
       high cut ``band_high_hz``, none at 95 % of Nyquist or above), the telephone band
       300-3400 Hz (``telephone_prob``), 8 kHz resampling down and up (``resample8k_prob``);
    5. gain (``gain_prob``) of ``gain_db`` dB, then an overdrive (``clip_prob``) that clips at
       ``clip_ratio`` times the peak; the result is always clipped to [-1, 1] like a recorder;
    6. quantisation (``quantize_prob``) to ``quantize_bits`` bits, mu-law with probability
       ``mu_law_share``, else linear.

    ``target`` says what the decoder reconstructs. ``"degraded"`` (the default): the degraded
    crop, the encoder's own input. A codec should give back what it was given (issue 17), and a
    band limit, a noise floor or 8-bit quantisation cannot be undone from codes that never saw
    what they removed: a clean target would ask the decoder to invent the missing band and to
    guess each recording's level, and the held-out figures (STOI, PESQ) are measured against
    the input. ``"clean"``: the crop before augmentation, which teaches the model to remove the
    room and the noise (and to make up for the rest): a denoising codec, worth measuring
    against the default, not the codec's contract. Not measured yet (no run here has trained
    long enough to compare the two).

    ``reference``: the speaker encoder's reference crop passes the same chain (the same drawn
    parameters, its own noise and babble), so the voice is learnt as heard through the same
    channel, as at inference where it hears the file being encoded. Validation crops are never
    augmented, so validation losses stay comparable across recipes.
    """

    enabled: bool = False
    target: str = "degraded"
    reference: bool = True
    reverb_prob: float = 0.3
    reverb_rt60: tuple[float, ...] = (0.15, 0.9)
    reverb_drr_db: tuple[float, ...] = (0.0, 12.0)
    noise_prob: float = 0.4
    noise_snr_db: tuple[float, ...] = (5.0, 40.0)
    noise_colours: tuple[str, ...] = NOISE_COLOURS
    babble_share: float = 0.3
    babble_talkers: tuple[int, ...] = (3, 6)
    eq_prob: float = 0.4
    eq_tilt_db_per_octave: tuple[float, ...] = (-3.0, 3.0)
    eq_max_bands: int = 3
    eq_gain_db: tuple[float, ...] = (-9.0, 9.0)
    eq_width_octaves: tuple[float, ...] = (0.3, 1.5)
    band_prob: float = 0.2
    band_low_hz: tuple[float, ...] = (0.0, 400.0)
    band_high_hz: tuple[float, ...] = (3000.0, 8000.0)
    telephone_prob: float = 0.1
    resample8k_prob: float = 0.1
    gain_prob: float = 0.3
    gain_db: tuple[float, ...] = (-18.0, 6.0)
    clip_prob: float = 0.05
    clip_ratio: tuple[float, ...] = (0.3, 0.9)
    quantize_prob: float = 0.1
    quantize_bits: int = 8
    mu_law_share: float = 0.5

    def __post_init__(self) -> None:
        where = "data.augment"
        if self.target not in TARGETS:
            raise ConfigError(f"{where}.target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_prob", "_share")) and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}.{f.name} must be in [0, 1], got {value}")
            if f.name in _RANGES:
                lowest = _RANGES[f.name]
                if len(value) != 2 or not lowest <= value[0] <= value[1]:
                    raise ConfigError(
                        f"{where}.{f.name} must be [low, high] with {lowest} <= low <= high, "
                        f"got {list(value)}"
                    )
        unknown = sorted(set(self.noise_colours) - set(NOISE_COLOURS))
        if not self.noise_colours or unknown:
            raise ConfigError(f"{where}.noise_colours must list some of {', '.join(NOISE_COLOURS)}")
        if self.babble_talkers[0] < 1:
            raise ConfigError(f"{where}.babble_talkers must be at least 1")
        if self.eq_max_bands < 0:
            raise ConfigError(f"{where}.eq_max_bands must be at least 0")
        if not 1 <= self.quantize_bits <= 16:
            raise ConfigError(f"{where}.quantize_bits must be in [1, 16]")
        if self.clip_ratio[1] > 1.0:
            raise ConfigError(f"{where}.clip_ratio must be at most 1 (a fraction of the peak)")


#: Range fields and the lowest value each may take (``-inf``: any).
_RANGES: dict[str, float] = {
    "reverb_rt60": 0.01,
    "reverb_drr_db": float("-inf"),
    "noise_snr_db": float("-inf"),
    "babble_talkers": 1,
    "eq_tilt_db_per_octave": float("-inf"),
    "eq_gain_db": float("-inf"),
    "eq_width_octaves": 0.01,
    "band_low_hz": 0.0,
    "band_high_hz": 1.0,
    "gain_db": float("-inf"),
    "clip_ratio": 0.001,
}
