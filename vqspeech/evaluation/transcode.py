"""Any recordings through a model and back, scored against themselves: ``vqspeech score`` (issue 17).

:func:`score_recordings` is the real-speech proxy: it needs no corpus layout, no transcripts
and no speaker table, only audio files (any format :func:`~vqspeech.audio.load_audio` reads;
8 kHz telephone files come up to the model's rate like any other). For each recording:

1. encode it (:meth:`Codec.encode_audio`) into a token file as ``vqspeech encode`` would write
   it, and decode it (:func:`~vqspeech.inference.decode_tokens`) **in the source's own voice**:
   * a model with a speaker encoder: the token file's speaker vector, taken from the recording
     itself, exactly what ``encode | decode`` does without ``--speaker``;
   * a model with a speaker table only: the *nearest table speaker*, the one whose decoding of
     the recording's first seconds has the median F0 closest (in semitones) to the recording's.
     Such a model cannot speak in a stranger's voice; pitch is the cue its table voices differ
     in most and that survives the codec, so this is the fairest table voice to score, and it
     is chosen from the model's output, never from the scores. Where no pitch is found (e.g.
     whispers), the first table speaker. ``speaker`` fixes one table voice instead;
2. score original vs decoded: STOI, PESQ-WB, log-mel distance, MCD
   (:func:`~vqspeech.evaluation.measures.score_pair`), and where the extras are installed DNSMOS
   OVRL of both and their speaker similarity (:mod:`~vqspeech.evaluation.quality`);
3. the bitrates: raw (``token_rate * ceil(log2 K)``) and, given a prior, the entropy-coded
   payload's bits per second of this very file (:meth:`PriorCheckpoint.encode`);
4. the *copy-synthesis ceiling* for decoders with a vocoder that can be fed true features
   (:data:`COPY_SYNTHESIS`): the spectrogram family's Griffin-Lim on the recording's own STFT
   magnitudes, with the model's ``n_fft``, hop and iterations. The distance from it to the
   codec's row is what the decoder's predicted magnitudes lose; the distance from it to perfect
   is what phase retrieval loses.

A recording that fails (unreadable, too short) is reported in :attr:`ScoreReport.failed` and
the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqspeech.audio import load_audio, save_audio
from vqspeech.codec import Codec
from vqspeech.errors import ConfigError, VQSpeechError
from vqspeech.evaluation.measures import (
    PairScores,
    ReconstructionScores,
    _mean_scores,
    median_f0,
    pesq_available,
    score_pair,
)
from vqspeech.evaluation.quality import dnsmos_available, speaker_similarity_available
from vqspeech.files import write_text_atomic
from vqspeech.inference import decode_tokens, voice_tensor
from vqspeech.prior_checkpoint import PriorCheckpoint
from vqspeech.tokens import SpeakerVector, TokenFile
from vqspeech.vocoder import griffin_lim, stft_magnitude

#: Seconds of each recording decoded per table speaker to choose the nearest one.
VOICE_PROBE_SECONDS = 3.0

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class FileScores:
    """One recording's scores: ``decoded`` against the original, and the ``ceiling``'s (None for
    decoders without a copy-synthesis path). ``voice``: whose voice it was decoded in.
    ``coded_bitrate``: the entropy-coded payload in bits/s (None without a prior)."""

    path: str
    seconds: float
    voice: str
    decoded: PairScores
    ceiling: PairScores | None
    raw_bitrate: float
    coded_bitrate: float | None


@dataclass(frozen=True)
class Failure:
    """A recording that could not be scored, and why (one line)."""

    path: str
    error: str


@dataclass(frozen=True)
class ScoreReport:
    """:func:`score_recordings`' result: per-file scores, their means, the failures."""

    checkpoint: str
    fingerprint: str
    decoder: str
    voice_policy: str
    prior: str | None
    files: list[FileScores]
    failed: list[Failure]
    extras: dict[str, bool]

    @property
    def seconds(self) -> float:
        return float(sum(f.seconds for f in self.files))

    @property
    def mean(self) -> ReconstructionScores | None:
        """Mean of the decoded scores over the files scored; None when none was."""
        return _mean_scores([f.decoded for f in self.files]) if self.files else None

    @property
    def ceiling(self) -> ReconstructionScores | None:
        """Mean of the copy-synthesis ceiling's scores; None without one."""
        rows = [f.ceiling for f in self.files if f.ceiling is not None]
        return _mean_scores(rows) if rows else None

    @property
    def raw_bitrate(self) -> float | None:
        return self.files[0].raw_bitrate if self.files else None

    @property
    def coded_bitrate(self) -> float | None:
        """Coded bits/s over all files scored (total bits / total seconds); None without a prior."""
        coded = [f for f in self.files if f.coded_bitrate is not None]
        if not coded:
            return None
        return sum((f.coded_bitrate or 0.0) * f.seconds for f in coded) / sum(f.seconds for f in coded)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): NaN becomes null."""
        mean, ceiling = self.mean, self.ceiling
        data = {
            "checkpoint": self.checkpoint,
            "fingerprint": self.fingerprint,
            "decoder": self.decoder,
            "voice_policy": self.voice_policy,
            "prior": self.prior,
            "extras": self.extras,
            "n_files": len(self.files),
            "seconds": self.seconds,
            "raw_bitrate": self.raw_bitrate,
            "coded_bitrate": self.coded_bitrate,
            "mean": None if mean is None else dataclasses.asdict(mean),
            "ceiling": None if ceiling is None else dataclasses.asdict(ceiling),
            "files": [dataclasses.asdict(f) for f in self.files],
            "failed": [dataclasses.asdict(f) for f in self.failed],
        }
        return _no_nan(data)  # type: ignore[no-any-return]

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON to ``path`` atomically."""
        write_text_atomic(
            Path(path), json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", "report"
        )


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Copy synthesis: a decoder's vocoder fed true features


def _griffin_lim_ceiling(codec: Codec, audio: np.ndarray, seed: int) -> np.ndarray:
    """The spectrogram decoder's vocoder from the recording's true STFT magnitudes, with its settings:
    Griffin-Lim, or the harmonic vocoder at the recording's YIN pitch."""
    cfg = codec.model.config.spectrogram
    wave = torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None]
    magnitude = stft_magnitude(wave, cfg.n_fft, cfg.griffin_lim_hop)
    generator = torch.Generator().manual_seed(seed)
    if cfg.harmonic:  # the harmonic vocoder: true magnitudes and the recording's own YIN pitch
        decoder = codec.model.spectrogram_decoder
        f0, voiced = decoder.pitch_of(wave, magnitude.shape[-1])
        return decoder.harmonic_at(magnitude, f0, voiced, wave.shape[1], generator).audio[0].numpy()
    out = griffin_lim(
        magnitude,
        cfg.n_fft,
        cfg.griffin_lim_hop,
        wave.shape[1],
        n_iter=cfg.griffin_lim_iters,
        generator=generator,
        init=cfg.phase_init,
    )
    return out.clamp(-1.0, 1.0)[0].numpy()


#: Decoder family -> its vocoder fed the recording's true features (audio ``[T]`` -> ``[T]``).
COPY_SYNTHESIS: dict[str, Callable[[Codec, np.ndarray, int], np.ndarray]] = {
    "spectrogram": _griffin_lim_ceiling,
}


def copy_synthesis(codec: Codec, audio: np.ndarray, family: str, seed: int = 0) -> np.ndarray | None:
    """``audio`` through ``family``'s vocoder from its true features; None where it has none."""
    vocoder = COPY_SYNTHESIS.get(family)
    return None if vocoder is None else vocoder(codec, audio, seed)


# --------------------------------------------------------------------------------------------
# Whose voice


def _decode(
    codec: Codec, tokens: TokenFile, voice: str | SpeakerVector, family: str, seed: int
) -> np.ndarray:
    chunks = list(decode_tokens(codec, tokens, voice, seed=seed, decoder=family))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _semitones(a: float, b: float) -> float:
    return abs(12.0 * math.log2(a / b))


def nearest_table_speaker(
    codec: Codec, audio: np.ndarray, codes: np.ndarray, family: str, seed: int = 0
) -> str:
    """The table speaker whose decoding of the first :data:`VOICE_PROBE_SECONDS` of ``codes``
    has the median F0 nearest the recording's (the first speaker where no F0 is found)."""
    names = codec.speaker_names
    frames = max(1, round(VOICE_PROBE_SECONDS * codec.sample_rate / codec.hop_length))
    probe = codes[:, :frames]
    n = min(len(audio), probe.shape[1] * codec.hop_length)
    target = median_f0(audio[:n], codec.sample_rate)
    if len(names) < 2 or not math.isfinite(target):
        return names[0]
    tokens = codec.tokens(probe, n, None)
    distances = []
    for name in names:
        f0 = median_f0(_decode(codec, tokens, name, family, seed), codec.sample_rate)
        distances.append(_semitones(f0, target) if math.isfinite(f0) else math.inf)
    return names[int(np.argmin(distances))] if math.isfinite(min(distances)) else names[0]


def _voice_policy(codec: Codec, speaker: str | None) -> str:
    if speaker is not None:
        return f"table speaker {speaker} (given)"
    if codec.has_speaker_encoder:
        return "the recording's own speaker vector (speaker encoder)"
    return "nearest table speaker by median F0 (no speaker encoder)"


# --------------------------------------------------------------------------------------------
# The run


def score_file(
    codec: Codec,
    path: str | os.PathLike[str],
    *,
    family: str,
    speaker: str | None = None,
    prior: PriorCheckpoint | None = None,
    seed: int = 0,
    audio_dir: Path | None = None,
    stem: str | None = None,
) -> FileScores:
    """One recording through the model and back, scored (see the module docstring)."""
    audio = load_audio(path, codec.sample_rate)
    codes = codec.encode_audio(audio)
    vector = codec.speaker_vector([audio]) if codec.has_speaker_encoder and speaker is None else None
    # the header names no source speaker: who spoke is unknown here, as for any stranger
    tokens = codec.tokens(codes, int(audio.shape[0]), None, vector)
    voice: str | SpeakerVector
    if speaker is not None:
        voice, label = speaker, speaker
    elif vector is not None:
        voice, label = vector, "own vector"
    else:
        voice = label = nearest_table_speaker(codec, audio, codes, family, seed)
    decoded = _decode(codec, tokens, voice, family, seed)
    ceiling_audio = copy_synthesis(codec, audio, family, seed)
    seconds = len(audio) / codec.sample_rate
    token_rate = codec.sample_rate / codec.hop_length
    coded = None
    if prior is not None:
        coded = 8.0 * len(prior.encode(tokens).payload) / seconds
    if audio_dir is not None:
        name = stem or Path(path).stem
        save_audio(audio_dir / f"{name}.orig.wav", audio, codec.sample_rate)
        save_audio(audio_dir / f"{name}.decoded.wav", decoded, codec.sample_rate)
        if ceiling_audio is not None:
            save_audio(audio_dir / f"{name}.ceiling.wav", ceiling_audio, codec.sample_rate)
    return FileScores(
        path=str(path),
        seconds=seconds,
        voice=label,
        decoded=score_pair(audio, decoded, codec.sample_rate),
        ceiling=None if ceiling_audio is None else score_pair(audio, ceiling_audio, codec.sample_rate),
        raw_bitrate=token_rate * max(1, math.ceil(math.log2(codec.codebook_size))),
        coded_bitrate=coded,
    )


def score_recordings(
    codec: Codec,
    paths: Sequence[str | os.PathLike[str]],
    *,
    decoder: str | None = None,
    speaker: str | None = None,
    prior: PriorCheckpoint | None = None,
    seed: int = 0,
    max_files: int | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    checkpoint: str | os.PathLike[str] = "",
) -> ScoreReport:
    """Score ``paths`` (audio files, in order; the first ``max_files``) through ``codec``.

    ``decoder``: the family (default: the model's first); ``speaker``: decode every file in
    this table voice instead of the source's (see the module docstring); ``prior``: also give
    the entropy-coded bitrate (it must belong to this model); ``audio_dir``: write each file's
    ``NNN_NAME.orig.wav``, ``.decoded.wav`` and ``.ceiling.wav`` there. Per-file failures
    (library errors) go to :attr:`ScoreReport.failed`; the batch goes on.
    """
    family = codec.check_decoder(decoder)
    if speaker is not None:
        voice_tensor(codec, speaker)  # a name the model knows, before any file is read
    if prior is not None:
        prior.check_model(codec.fingerprint, checkpoint or "this model")
    chosen = list(paths)[: max_files if max_files is not None else None]
    if not chosen:
        raise ConfigError("no recordings to score")
    out_dir = Path(audio_dir) if audio_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    files: list[FileScores] = []
    failed: list[Failure] = []
    for i, path in enumerate(chosen, 1):
        if progress is not None:
            progress(f"[{i}/{len(chosen)}] {path}")
        try:
            files.append(
                score_file(
                    codec,
                    path,
                    family=family,
                    speaker=speaker,
                    prior=prior,
                    seed=seed,
                    audio_dir=out_dir,
                    stem=f"{i:03d}_{Path(path).stem}",
                )
            )
        except VQSpeechError as exc:
            failed.append(Failure(str(path), str(exc)))
    return ScoreReport(
        checkpoint=str(checkpoint),
        fingerprint=codec.fingerprint,
        decoder=family,
        voice_policy=_voice_policy(codec, speaker),
        prior=None if prior is None or prior.path is None else str(prior.path),
        files=files,
        failed=failed,
        extras={
            "pesq": pesq_available(),
            "dnsmos": dnsmos_available(),
            "speaker_similarity": speaker_similarity_available(),
        },
    )
