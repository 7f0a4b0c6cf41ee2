"""The whole-model evaluation: read a corpus the way training split it, decode, score every stage.

:func:`evaluate_model` uses the signal measures (:mod:`vqspeech.evaluation.measures`) and the
speaker classifiers (:mod:`vqspeech.evaluation.speakers`) and returns an :class:`EvalReport`. It
reads as its stages, one function each: choose the utterances (:func:`_choose_utterances`); codes
and leakage on real speech (:func:`_measure_real_speech`); reconstructions and conversions of
held-out speech (:func:`_decode_held_out`, summed up by :func:`_conversion_scores`); unseen
speakers (:func:`vqspeech.evaluation.unseen.score_unseen_speakers`); then the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vqspeech.audio import load_audio, save_audio
from vqspeech.codec import Codec
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Split, Utterance, open_corpus
from vqspeech.errors import ConfigError, DataError
from vqspeech.evaluation.aims import STOI_AIM, TARGET_RATE_AIM
from vqspeech.evaluation.common import decode_speakers, nanmean, per_speaker, rate, round_robin
from vqspeech.evaluation.measures import (
    CodeStats,
    PairScores,
    ReconstructionScores,
    _mean_scores,
    _pystoi,
    code_histogram,
    code_stats,
    score_pair,
)
from vqspeech.evaluation.speakers import (
    LeakageScores,
    LinearClassifier,
    fit_linear_classifier,
    leakage_probe,
    speaker_features,
)
from vqspeech.evaluation.unseen import UnseenSpeakerScores, score_unseen_speakers
from vqspeech.files import write_text_atomic


@dataclass(frozen=True)
class ConversionScores:
    """Converted speech judged by a speaker classifier trained on real speech (see the module docstring).

    ``n`` conversions of held-out utterances to other training speakers. ``target_rate``: the
    fraction the classifier assigns to the target speaker (issue 6 aims at >= 0.8);
    ``source_rate``: to the source speaker, whose voice is then still heard.
    ``reconstruction_rate``: the fraction of same-speaker reconstructions assigned to their own
    speaker, a control: when it is low, the classifier does not recognise decoded speech and
    ``target_rate`` understates the conversion. ``classifier_accuracy`` on ``n_real`` real
    held-out utterances of ``n_speakers`` speakers says whether the classifier can be trusted.

    Pitch: ``moved_semitones`` is the mean median-F0 change source -> converted, signed so that
    positive is toward the target; ``wanted_semitones`` the mean distance between source and
    target speakers' median F0 on real training speech. ``moved / wanted`` near 1: the converted
    voice sits at the target's pitch; near 0: the source's pitch stayed. NaN where not measured
    (``n == 0``, or no pitch found).
    """

    n: int
    target_rate: float
    source_rate: float
    reconstruction_rate: float
    classifier_accuracy: float
    n_real: int
    n_speakers: int
    moved_semitones: float
    wanted_semitones: float


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate_model` measured. :meth:`to_dict` gives it as JSON-safe data.

    ``reconstruction`` and ``conversion`` cover the ``n_utterances`` held-out utterances
    (``seconds`` of audio) that were decoded; ``codes`` and ``leakage`` every held-out utterance
    read (up to ``utterances_per_speaker`` per speaker). ``samples`` has one dict per decoded
    utterance: ``utterance``, ``speaker``, ``seconds``, ``orig``, ``recon`` (WAV paths relative
    to ``audio_dir``, None without it), ``conversions`` (``{target: path}``), its scores
    (``stoi``, ``log_mel_distance``, ``mel_cepstral_distortion``, ``pesq``) and who the speaker
    classifier hears (``recon_heard_as``, ``conversions_heard_as``: ``{target: speaker}``).
    ``decode_x_real_time``: seconds of audio reconstructed per wall-clock second (batch 1).
    ``unseen``: speakers the model never trained on (:class:`UnseenSpeakerScores`), None unless
    the model has a speaker encoder and the corpus has such speakers.
    """

    checkpoint: str
    data: str
    decoder: str
    sample_rate: int
    n_utterances: int
    seconds: float
    reconstruction: ReconstructionScores
    codes: CodeStats
    conversion: ConversionScores
    leakage: LeakageScores
    samples: list[dict[str, Any]]
    decode_x_real_time: float
    audio_dir: str | None
    wall_seconds: float
    unseen: UnseenSpeakerScores | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-safe data (NaN and infinities become None) plus the issue's aims."""
        data = _json_safe(dataclasses.asdict(self))
        data["aims"] = {"reconstruction.stoi": STOI_AIM, "conversion.target_rate": TARGET_RATE_AIM}
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON to ``path`` atomically (temp file, then rename)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        return write_text_atomic(path, text, "evaluation")


def evaluate_model(
    checkpoint: str | Path,
    data: str | Path,
    *,
    decoder: str | None = None,
    max_utterances: int = 16,
    conversions_per_utterance: int = 2,
    seed: int = 0,
    audio_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    utterances_per_speaker: int = 20,
    device: str = "cpu",
) -> EvalReport:
    """Score a checkpoint on a corpus: reconstructions, codes, conversions, speaker leakage.

    The corpus is split the way training split it (``recipe.data``), so held-out utterances were
    never trained on. Only speakers the model knows and that have training utterances count.

    1. Up to ``utterances_per_speaker`` (default 20) real utterances per speaker from the training
       split train the speaker classifier (on :func:`speaker_features`) and the leakage probe (on
       code histograms); as many from the held-out split test them and give the code statistics.
    2. ``max_utterances`` (default 16) held-out utterances, taken round-robin over speakers, are
       encoded and decoded as their own speaker (reconstruction scores, timed) and as
       ``conversions_per_utterance`` (default 2) other speakers: the ones after the source in name
       order, cyclically, each further utterance of a source continuing where the last stopped,
       so that every (source, target) pair comes up about equally often.
    3. With a speaker encoder, speakers the model never trained on
       (:func:`~vqspeech.evaluation.unseen.score_unseen_speakers`).

    ``seed`` seeds the decoder's sampling noise (WaveNet) or Griffin-Lim phases. ``audio_dir``:
    write ``<utterance>.orig.wav``, ``<utterance>.recon.wav`` and ``<utterance>.to_<speaker>.wav``
    there (atomically). ``progress`` gets one line per stage and per decoded utterance.

    Raises:
        ConfigError: a bad count, an unknown decoder, pystoi missing.
        CheckpointError / DataError / AudioError: an unusable checkpoint or corpus; a corpus with
            fewer than 2 of the model's speakers or no held-out utterance of them.
    """
    started = time.perf_counter()
    say = progress or (lambda _line: None)
    _check_counts(max_utterances, conversions_per_utterance, utterances_per_speaker)
    _pystoi()  # fail now rather than after reading the corpus
    say(f"loading {checkpoint}")
    codec = Codec.load(checkpoint, device)
    family = codec.check_decoder(decoder)
    chosen = _choose_utterances(codec, data, utterances_per_speaker)
    real = _measure_real_speech(codec, chosen, say)
    out_dir = Path(audio_dir) if audio_dir is not None else None
    decoded = _decode_held_out(
        codec, family, seed, chosen, real, max_utterances, conversions_per_utterance, out_dir, say
    )
    unseen = score_unseen_speakers(
        codec,
        family,
        seed,
        chosen.split,
        chosen.train,
        real.train_voice,
        chosen.held,
        max_utterances,
        utterances_per_speaker,
        say,
    )
    return EvalReport(
        checkpoint=str(checkpoint),
        data=str(data),
        decoder=family,
        sample_rate=codec.sample_rate,
        n_utterances=len(decoded.samples),
        seconds=decoded.seconds,
        reconstruction=_mean_scores(decoded.scores),
        codes=real.codes,
        conversion=_conversion_scores(decoded, real, chosen),
        leakage=real.leakage,
        samples=decoded.samples,
        decode_x_real_time=decoded.seconds / max(decoded.decode_wall, 1e-9),
        audio_dir=str(out_dir) if out_dir is not None else None,
        wall_seconds=time.perf_counter() - started,
        unseen=unseen,
    )


def _check_counts(max_utterances: int, conversions_per_utterance: int, utterances_per_speaker: int) -> None:
    """ConfigError for a count :func:`evaluate_model` cannot work with."""
    if max_utterances < 1:
        raise ConfigError(f"max_utterances must be at least 1, got {max_utterances}")
    if conversions_per_utterance < 0:
        raise ConfigError(f"conversions_per_utterance must be 0 or more, got {conversions_per_utterance}")
    if utterances_per_speaker < 1:
        raise ConfigError(f"utterances_per_speaker must be at least 1, got {utterances_per_speaker}")


@dataclass(frozen=True)
class _Chosen:
    """The utterances an evaluation reads: ``train`` and ``held`` (held-out) ones of ``speakers``."""

    split: Split  # the corpus as training split it
    speakers: list[str]  # the model's speakers with training utterances, sorted
    train: list[Utterance]
    held: list[Utterance]


def _choose_utterances(codec: Codec, data: str | Path, utterances_per_speaker: int) -> _Chosen:
    """Stage 0: split the corpus as training did; keep up to ``utterances_per_speaker`` training
    and held-out utterances of each speaker the model knows. DataError when fewer than 2 such
    speakers or no held-out utterance remain."""
    corpus = open_corpus(data, sample_rate=codec.sample_rate)
    split = split_for(corpus, codec.checkpoint.recipe)
    known = set(codec.speaker_names)
    train = per_speaker([u for u in split.train if u.speaker in known], utterances_per_speaker)
    speakers = sorted({u.speaker for u in train})
    if len(speakers) < 2:
        raise DataError(
            f"{data}: {len(speakers)} of its speakers have training utterances and are known to the "
            f"model; evaluation needs 2 or more: give the corpus the model was trained on "
            f"(the model knows: {', '.join(codec.speaker_names[:20])})"
        )
    held = per_speaker([u for u in split.valid if u.speaker in speakers], utterances_per_speaker)
    if not held:
        raise DataError(
            f"{data}: no held-out utterances of the model's speakers; each speaker needs 2 or more "
            f"utterances (data.valid_utterances_per_speaker of them are held out)"
        )
    return _Chosen(split, speakers, train, held)


@dataclass(frozen=True)
class _RealSpeech:
    """What stage 1 measured on real speech: speaker features ``[N, SPEAKER_CEPSTRA + 1]`` of the
    training and held-out utterances, the held-out codes (``{id: [1, F]}``), the speaker
    classifier, each speaker's median log2 F0, the leakage probe and the code statistics."""

    train_voice: np.ndarray
    held_voice: np.ndarray
    held_codes: dict[str, np.ndarray]
    classifier: LinearClassifier
    log2_f0: dict[str, float]
    leakage: LeakageScores
    codes: CodeStats


def _measure_real_speech(codec: Codec, chosen: _Chosen, say: Callable[[str], None]) -> _RealSpeech:
    """Stage 1, codes and leakage: encode the real utterances, train the speaker classifier on the
    training ones' voices and the leakage probe on their code histograms, test the probe on the
    held-out ones and take their code statistics."""
    train, held = chosen.train, chosen.held
    n_speakers = len(chosen.speakers)
    say(f"reading {len(train)} training and {len(held)} held-out utterances of {n_speakers} speakers")
    train_voice, train_hist, train_codes = _read_real(codec, train)
    held_voice, held_hist, held_codes = _read_real(codec, held)
    log2_f0 = {
        s: _nanmedian([v[-1] for v, u in zip(train_voice, train, strict=True) if u.speaker == s])
        for s in chosen.speakers
    }
    leakage = leakage_probe(
        train_hist,
        [u.speaker for u in train],
        held_hist,
        [u.speaker for u in held],
        codes=([train_codes[u.id] for u in train], [held_codes[u.id] for u in held]),
    )
    return _RealSpeech(
        train_voice=train_voice,
        held_voice=held_voice,
        held_codes=held_codes,
        classifier=fit_linear_classifier(train_voice, [u.speaker for u in train]),
        log2_f0=log2_f0,
        leakage=leakage,
        codes=code_stats(
            list(held_codes.values()), codec.codebook_size, codec.sample_rate / codec.hop_length
        ),
    )


@dataclass
class _Decoded:
    """What stage 2 gathered, one entry per decoded utterance (``scores``, ``samples``,
    ``heard_recon``) or per conversion (``to_target``, ``to_source``, ``moved``, ``wanted``
    semitones), and the seconds of audio decoded and the wall-clock seconds reconstruction took."""

    scores: list[PairScores] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    heard_recon: list[bool] = field(default_factory=list)
    to_target: list[bool] = field(default_factory=list)
    to_source: list[bool] = field(default_factory=list)
    moved: list[float] = field(default_factory=list)
    wanted: list[float] = field(default_factory=list)
    seconds: float = 0.0
    decode_wall: float = 0.0


def _decode_held_out(
    codec: Codec,
    family: str,
    seed: int,
    chosen: _Chosen,
    real: _RealSpeech,
    max_utterances: int,
    conversions_per_utterance: int,
    out_dir: Path | None,
    say: Callable[[str], None],
) -> _Decoded:
    """Stage 2, reconstructions and conversions: up to ``max_utterances`` held-out utterances,
    round-robin over speakers, each decoded as its own speaker (signal measures, timed) and as its
    conversion targets, all judged by the speaker classifier; WAVs under ``out_dir`` if given."""
    sr = codec.sample_rate
    utterances = round_robin(chosen.held, max_utterances)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    held_row = {u.id: i for i, u in enumerate(chosen.held)}
    turns: dict[str, int] = {}
    done = _Decoded()
    # One short untimed decode first: one-time set-up (allocator, kernels) would otherwise count
    # against the first utterance's speed.
    decode_speakers(codec, real.held_codes[utterances[0].id][:, :16], [utterances[0].speaker], family, seed)
    for i, utt in enumerate(utterances, 1):
        turn = turns.get(utt.speaker, 0)
        turns[utt.speaker] = turn + 1
        targets = _conversion_targets(utt.speaker, chosen.speakers, turn, conversions_per_utterance)
        say(
            f"[{i}/{len(utterances)}] {utt.id}: reconstruct"
            + (f", convert to {', '.join(targets)}" if targets else "")
        )
        audio = load_audio(utt.path, sr)
        codes = real.held_codes[utt.id]
        tick = time.perf_counter()
        recon = decode_speakers(codec, codes, [utt.speaker], family, seed)[0, : len(audio)]
        done.decode_wall += time.perf_counter() - tick
        done.seconds += len(audio) / sr
        converted: list[np.ndarray] = (
            list(decode_speakers(codec, codes, targets, family, seed)[:, : len(audio)]) if targets else []
        )
        pair = score_pair(audio, recon, sr)
        done.scores.append(pair)
        voices = np.stack([speaker_features(x, sr) for x in [recon, *converted]])
        heard = real.classifier.predict(voices)
        done.heard_recon.append(heard[0] == utt.speaker)
        source_f0 = real.held_voice[held_row[utt.id]][-1]
        for target, voice, who in zip(targets, voices[1:], heard[1:], strict=True):
            done.to_target.append(who == target)
            done.to_source.append(who == utt.speaker)
            done.moved.append(12.0 * (voice[-1] - source_f0))
            done.wanted.append(12.0 * (real.log2_f0[target] - real.log2_f0[utt.speaker]))
        paths = _write_sample(out_dir, utt, audio, recon, dict(zip(targets, converted, strict=True)), sr)
        done.samples.append(
            {
                "utterance": utt.id,
                "speaker": utt.speaker,
                "seconds": len(audio) / sr,
                **paths,
                **dataclasses.asdict(pair),
                "recon_heard_as": heard[0],
                "conversions_heard_as": dict(zip(targets, heard[1:], strict=True)),
            }
        )
    return done


def _conversion_scores(decoded: _Decoded, real: _RealSpeech, chosen: _Chosen) -> ConversionScores:
    """Stage 2's conversions summed up, with the classifier's accuracy on real held-out speech."""
    sign = np.sign(decoded.wanted)
    return ConversionScores(
        n=len(decoded.to_target),
        target_rate=rate(decoded.to_target),
        source_rate=rate(decoded.to_source),
        reconstruction_rate=rate(decoded.heard_recon),
        classifier_accuracy=real.classifier.accuracy(real.held_voice, [u.speaker for u in chosen.held]),
        n_real=len(chosen.held),
        n_speakers=len(chosen.speakers),
        moved_semitones=nanmean(np.asarray(decoded.moved) * sign),
        wanted_semitones=nanmean(np.abs(decoded.wanted)),
    )


def _conversion_targets(source: str, speakers: Sequence[str], turn: int, n: int) -> list[str]:
    """The ``turn``-th utterance of ``source``'s ``n`` targets: the speakers after it, cyclically."""
    i = list(speakers).index(source)
    others = [*speakers[i + 1 :], *speakers[:i]]
    return [others[(turn * n + k) % len(others)] for k in range(min(n, len(others)))]


def _read_real(
    codec: Codec, utterances: Sequence[Utterance]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Speaker features ``[N, SPEAKER_CEPSTRA + 1]``, code histograms ``[N, K]`` and codes
    (``{id: [1, F]}``) of real utterances."""
    voices, histograms, codes = [], [], {}
    for utt in utterances:
        audio = load_audio(utt.path, codec.sample_rate)
        codes[utt.id] = codec.encode_audio(audio)
        voices.append(speaker_features(audio, codec.sample_rate))
        histograms.append(code_histogram(codes[utt.id], codec.codebook_size))
    return np.stack(voices), np.stack(histograms), codes


def _write_sample(
    out_dir: Path | None,
    utt: Utterance,
    audio: np.ndarray,
    recon: np.ndarray,
    converted: dict[str, np.ndarray],
    sample_rate: int,
) -> dict[str, Any]:
    """Write one utterance's WAVs under ``out_dir`` (if given); their paths relative to it."""
    names = {"orig": f"{utt.id}.orig.wav", "recon": f"{utt.id}.recon.wav"}
    conversions = {target: f"{utt.id}.to_{target}.wav" for target in converted}
    if out_dir is None:
        return {"orig": None, "recon": None, "conversions": dict.fromkeys(converted)}
    for name, wave in [(names["orig"], audio), (names["recon"], recon)] + [
        (conversions[t], w) for t, w in converted.items()
    ]:
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)  # folder corpora's ids hold sub-folders
        save_audio(path, wave, sample_rate)
    return {**names, "conversions": conversions}


def _nanmedian(values: Sequence[float]) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else float("nan")


def _json_safe(value: Any) -> Any:
    """Plain JSON data: dicts with str keys, lists, str, int, float (finite), bool, None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value
