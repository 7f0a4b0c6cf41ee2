"""Spectrogram decoder: codes + speaker -> log-magnitude STFT frames, one per ``frame_stride`` latents.

The fast alternative to the WaveNet (project issue #5): a WaveNet needs GPU-days before it
speaks, while predicting the magnitude spectrogram is a frame-parallel regression that a
2-core CPU learns in minutes, and :func:`vqspeech.vocoder.griffin_lim` turns it into audio
without training. The STFT hop is ``frame_stride`` latent hops, so frame ``f`` of the output
is the STFT frame centred on sample ``f * frame_stride * hop_length`` (latent frame
``f * frame_stride``); ``F`` latent frames give ``ceil(F / frame_stride)`` output frames.

Architecture: a (strided) conv over ``z_q`` to ``channels``, then non-causal dilated residual blocks
(all codes are known when decoding), each modulated by the speaker vector (FiLM: per-channel
scale and shift), and a 1x1 to ``n_fft // 2 + 1`` log magnitudes. FiLM rather than an
additive bias because a voice changes the spectral envelope multiplicatively.

With ``vocoder: harmonic`` a :class:`~vqspeech.nn.pitch.PitchHead` reads the blocks' output too
and predicts voicing and F0 per output frame; :meth:`SpectrogramDecoder.vocode` then makes the
audio with :func:`vqspeech.vocoder.harmonic_plus_noise` instead of Griffin-Lim.

With an envelope map (``SpeakerEncoderConfig.envelope``, issue #7 experiment), the last
``envelope.shape[1]`` entries of the speaker vector are a measured spectral envelope; it is
mapped to log magnitudes per bin by that fixed matrix, scaled by a learned per-bin gain
(initially 1) and added to the output, so the network learns the speaker-normalised residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqspeech.config import SpectrogramConfig
from vqspeech.features import mel_basis
from vqspeech.nn.pitch import PitchHead, Yin, decode_pitch, pitch_loss, yin
from vqspeech.vocoder import HarmonicAudio, griffin_lim, harmonic_plus_noise, stft_magnitude

#: Floor of the magnitudes before the log (about -100 dB): silence stays finite.
LOG_FLOOR = 1e-5
#: Ceiling of predicted log magnitudes before ``exp`` in the log-mel loss (about +170 dB; real
#: frames stay below ~5): one early spike of the untrained decoder (seen at ~2500) must not
#: overflow to inf and turn every weight into NaN. Never reached in a healthy run, so it
#: changes no result there.
LOG_CEILING = 20.0


class _FiLMBlock(nn.Module):
    """``x + W2 gelu(conv_d(gelu(x * (1 + scale(s)) + shift(s))))``, length-preserving."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, speaker_dim: int) -> None:
        super().__init__()
        self.film = nn.Linear(speaker_dim, 2 * channels)
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, speaker: Tensor) -> Tensor:
        scale, shift = self.film(speaker).unsqueeze(-1).chunk(2, dim=1)
        h = F.gelu(x * (1 + scale) + shift)
        return x + self.proj(F.gelu(self.conv(h)))


class SpectrogramDecoder(nn.Module):
    """``z_q [B, D, F]`` + speaker vectors ``[B, speaker_dim]`` -> log magnitudes ``[B, bins, F']``.

    ``bins = n_fft // 2 + 1``, ``F' = ceil(F / frame_stride)``.
    """

    def __init__(
        self,
        config: SpectrogramConfig,
        cond_dim: int,
        speaker_dim: int,
        hop_length: int,
        sample_rate: int,
        envelope: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        c = config.channels
        self.stride = config.frame_stride
        self.frame_hop = hop_length * config.frame_stride
        k_in = config.input_kernel
        self.inp = nn.Conv1d(cond_dim, c, k_in, stride=self.stride, padding=(k_in - 1) // 2)
        self.blocks = nn.ModuleList(
            _FiLMBlock(c, config.kernel_size, d, speaker_dim) for d in config.dilations
        )
        self.out = nn.Conv1d(c, config.n_fft // 2 + 1, 1)
        self.envelope_gain: nn.Parameter | None = None
        if envelope is not None:
            # not persistent: a fixed function of the config, rebuilt on load (weights unchanged)
            self.register_buffer("envelope_map", envelope.float(), persistent=False)
            self.envelope_gain = nn.Parameter(torch.ones(config.n_fft // 2 + 1))
        self.pitch = PitchHead(c) if config.harmonic else None

    @property
    def context_frames(self) -> int:
        """Latent frames each side that one output frame depends on (the conv stack's reach)."""
        return self.config.context_frames()

    def output_frames(self, frames: int) -> int:
        """Output frames for ``frames`` latent frames: ``ceil(frames / frame_stride)``."""
        return -(-frames // self.stride)

    def forward(self, z_q: Tensor, speaker: Tensor) -> Tensor:
        """``z_q [B, D, F]``, speaker ``[B, speaker_dim]`` -> log magnitudes ``[B, bins, ceil(F / s)]``."""
        return self._magnitudes(self._hidden(z_q, speaker), speaker)

    def frames(self, z_q: Tensor, speaker: Tensor) -> tuple[Tensor, Tensor | None]:
        """Log magnitudes ``[B, bins, F']`` and, with a pitch head, its output ``[B, 2, F']`` (else None).

        ``F' = ceil(F / s)``; the pitch rows are a voicing logit and ``log2 F0 - 7``
        (:func:`vqspeech.nn.pitch.decode_pitch` turns them into Hz and a voiced flag).
        """
        x = self._hidden(z_q, speaker)
        pitch = None if self.pitch is None else self.pitch(x.detach() if self.config.pitch_detach else x)
        return self._magnitudes(x, speaker), pitch

    def _hidden(self, z_q: Tensor, speaker: Tensor) -> Tensor:
        """The blocks' output ``[B, channels, F']``, which the magnitudes and the pitch head read."""
        x = self.inp(z_q)
        for block in self.blocks:
            x = block(x, speaker)
        return x

    def _magnitudes(self, x: Tensor, speaker: Tensor) -> Tensor:
        out = self.out(F.gelu(x))
        if self.envelope_gain is None:
            return out
        envelope_map: Tensor = self.envelope_map  # type: ignore[assignment]
        coeffs = speaker[:, -envelope_map.shape[1] :].to(envelope_map.dtype)
        envelope = coeffs @ envelope_map.T * self.envelope_gain  # [B, bins]
        return out + envelope.to(out.dtype)[:, :, None]

    def target(self, audio: Tensor) -> Tensor:
        """Log magnitudes ``[B, bins, ceil(F / stride)]`` of audio ``[B, F * hop_length]`` (training target).

        The centred STFT has ``1 + F // stride`` frames; the last is past the final latent
        frame's centre when ``stride`` divides ``F``, and is dropped then.
        """
        frames = self.output_frames(audio.shape[-1] // self.hop_length)
        mag = stft_magnitude(audio, self.config.n_fft, self.frame_hop)[..., :frames]
        return torch.log(mag.clamp(min=LOG_FLOOR))

    def loss(self, predicted: Tensor, audio: Tensor) -> Tensor:
        """L1 on log magnitudes plus L1 on log-mel (weights the low bands where speech lives)."""
        target = self.target(audio)
        linear = F.l1_loss(predicted, target)
        mel = F.l1_loss(self._log_mel(predicted), self._log_mel(target))
        return linear + mel

    def pitch_target(self, audio: Tensor) -> Yin:
        """YIN of audio ``[B, F * hop_length]`` on the output frames' grid (``[B, ceil(F / s)]``):
        frame ``f`` centred on sample ``f * frame_stride * hop_length``, like :meth:`target`'s."""
        frames = self.output_frames(audio.shape[-1] // self.hop_length)
        return yin(audio, self.sample_rate, self.frame_hop, frames=frames, centred=True)

    def pitch_loss(self, pitch: Tensor, audio: Tensor) -> Tensor:
        """The pitch head's loss (:func:`vqspeech.nn.pitch.pitch_loss`) against the audio's YIN."""
        return pitch_loss(pitch, self.pitch_target(audio))

    def _log_mel(self, log_magnitude: Tensor) -> Tensor:
        basis = mel_basis(self.sample_rate, self.config.n_fft, self.config.n_mels, 0.0, None)
        mel = basis.to(log_magnitude.device) @ log_magnitude.float().clamp(max=LOG_CEILING).exp()
        return torch.log(mel.clamp(min=LOG_FLOOR))

    def vocode(
        self,
        log_magnitude: Tensor,
        frames: int | None = None,
        generator: torch.Generator | None = None,
        pitch: Tensor | None = None,
    ) -> Tensor:
        """Log magnitudes ``[B, bins, F']`` of ``frames`` latent frames -> audio ``[B, frames * hop_length]``.

        ``frames`` defaults to ``F' * frame_stride``. With ``pitch`` (the pitch head's
        ``[B, 2, F']``): :meth:`vocode_harmonic`. Without: Griffin-Lim (``griffin_lim_iters``
        iterations from ``phase_init`` phases) at ``griffin_lim_hop`` on :meth:`vocoder_frames`.
        The audio is clipped to [-1, 1].
        """
        if pitch is not None:
            return self.vocode_harmonic(log_magnitude, pitch, frames, generator).audio
        frames = log_magnitude.shape[-1] * self.stride if frames is None else frames
        length = frames * self.hop_length
        audio = griffin_lim(
            self.vocoder_frames(log_magnitude, frames).exp(),
            self.config.n_fft,
            self.config.griffin_lim_hop,
            length,
            n_iter=self.config.griffin_lim_iters,
            generator=generator,
            init=self.config.phase_init,
        )
        return audio.clamp(-1.0, 1.0)

    def vocode_harmonic(
        self,
        log_magnitude: Tensor,
        pitch: Tensor,
        frames: int | None = None,
        generator: torch.Generator | None = None,
        phase0: Tensor | None = None,
    ) -> HarmonicAudio:
        """:func:`vqspeech.vocoder.harmonic_plus_noise` of the predicted magnitudes and pitch.

        Log magnitudes ``[B, bins, F']`` and pitch ``[B, 2, F']`` of ``frames`` latent frames
        -> audio ``[B, frames * hop_length]`` clipped to [-1, 1], and the harmonics' phase at
        each sample (``phase0 [B]`` starts it: a long file's chunks continue each other's).
        Runs on :meth:`vocoder_frames` of both (hop ``griffin_lim_hop``).
        """
        frames = log_magnitude.shape[-1] * self.stride if frames is None else frames
        f0, voiced = decode_pitch(self.vocoder_frames(pitch, frames))
        magnitude = self.vocoder_frames(log_magnitude, frames).exp()
        return self.harmonic_at(magnitude, f0, voiced, frames * self.hop_length, generator, phase0)

    def harmonic_at(
        self,
        magnitude: Tensor,
        f0: Tensor,
        voiced: Tensor,
        length: int,
        generator: torch.Generator | None = None,
        phase0: Tensor | None = None,
    ) -> HarmonicAudio:
        """:func:`vqspeech.vocoder.harmonic_plus_noise` with this decoder's settings: magnitudes
        ``[B, bins, N]`` on the vocoder's frames (hop ``griffin_lim_hop``), ``f0 [B, N]`` (Hz),
        ``voiced [B, N]`` -> audio ``[B, length]`` clipped to [-1, 1], and the harmonics' phase.
        Decoding gives it the pitch head's F0; copy synthesis (``vqspeech score``'s ceiling,
        ``benchmarks/compare_phase.py``) a recording's own (:meth:`pitch_of`)."""
        cfg = self.config
        out = harmonic_plus_noise(
            magnitude, f0, voiced, cfg.n_fft, cfg.griffin_lim_hop, length, self.sample_rate,
            cfg.harmonic_max_hz, generator, phase0,
        )  # fmt: skip
        return HarmonicAudio(out.audio.clamp(-1.0, 1.0), out.phase)

    def pitch_of(self, audio: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        """F0 (Hz) and voicing ``[B, frames]`` of audio ``[B, T]`` (YIN) on the vocoder's frame grid."""
        measured = yin(audio, self.sample_rate, self.config.griffin_lim_hop, frames=frames, centred=True)
        return torch.exp2(measured.log2_f0), measured.voiced

    def vocoder_frames(self, log_magnitude: Tensor, frames: int) -> Tensor:
        """Log magnitudes ``[B, bins, F']`` of ``frames`` latent frames -> float32 ``[B, bins, 1 + L // g]``.

        The frames of the centred STFT at ``g = griffin_lim_hop`` of ``L = frames * hop_length``
        samples, which :meth:`vocode` hands to Griffin-Lim: frame ``j`` is centred on sample
        ``j * g``, output frame ``j * step`` here, so it takes every ``step``-th frame (the last
        predicted one where the centred STFT of the audio reaches past it). Other vocoders of the
        same magnitudes (``benchmarks/compare_phase.py``) take the same frames.
        """
        step = self.config.griffin_lim_hop // self.frame_hop
        needed = 1 + frames * self.hop_length // self.config.griffin_lim_hop
        index = (torch.arange(needed, device=log_magnitude.device) * step).clamp(
            max=log_magnitude.shape[-1] - 1
        )
        return log_magnitude.float()[..., index]
