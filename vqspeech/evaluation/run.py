"""The whole-model evaluation: read a corpus the way training split it, decode, score every stage.

:func:`evaluate_model` uses the signal measures (:mod:`vqspeech.evaluation.measures`) and the
speaker classifiers (:mod:`vqspeech.evaluation.speakers`) and returns an :class:`EvalReport`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqspeech.audio import load_audio, save_audio
from vqspeech.codec import Codec
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Utterance, open_corpus
from vqspeech.errors import ConfigError, DataError
from vqspeech.evaluation.aims import STOI_AIM, TARGET_RATE_AIM
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
    fit_linear_classifier,
    leakage_probe,
    speaker_features,
)
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
class UnseenSpeakerScores:
    """Speakers the model never trained on, voiced through its speaker encoder (issue 7).

    Each unseen speaker's utterances are halved: the first half (up to ``utterances_per_speaker``)
    *enrols* it in the speaker classifier (trained on real speech of the training speakers and of
    these), the second half is tested. ``classifier_accuracy``: on the ``n_real`` real test
    utterances of the unseen speakers.

    Reconstructions of ``n`` test utterances, decoded with their own quantised speaker vector
    (what ``encode`` stores in a token file) or with the training speaker whose table vector is
    nearest to it (cosine; the best a lookup table can do for a new voice): ``vector_rate`` and
    ``table_rate`` are the fractions the classifier hears as the true speaker;
    ``vector_similarity`` and ``table_similarity`` the mean cosine between the speaker-encoder
    vectors of the decoded and the real utterance (1 is the same voice to the encoder).

    ``vector_pitch_error`` / ``table_pitch_error``: the mean absolute difference in semitones
    between the median F0 of the reconstruction and of the real utterance (NaN where no pitch
    is found): a voice can have the right timbre and still sound like someone else at the wrong
    pitch.

    Zero-shot conversions: ``n_conversions`` held-out utterances of training speakers decoded with
    the vector of one test recording of an unseen target; ``target_rate`` / ``source_rate``: the
    fractions heard as the target / still as the source.
    """

    speakers: list[str]
    n: int
    vector_rate: float
    table_rate: float
    vector_similarity: float
    table_similarity: float
    n_conversions: int
    target_rate: float
    source_rate: float
    classifier_accuracy: float
    n_real: int
    vector_pitch_error: float = float("nan")
    table_pitch_error: float = float("nan")


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
    if max_utterances < 1:
        raise ConfigError(f"max_utterances must be at least 1, got {max_utterances}")
    if conversions_per_utterance < 0:
        raise ConfigError(f"conversions_per_utterance must be 0 or more, got {conversions_per_utterance}")
    if utterances_per_speaker < 1:
        raise ConfigError(f"utterances_per_speaker must be at least 1, got {utterances_per_speaker}")
    _pystoi()  # fail now rather than after reading the corpus
    say(f"loading {checkpoint}")
    codec = Codec.load(checkpoint, device)
    family = codec.check_decoder(decoder)
    sr, size = codec.sample_rate, codec.codebook_size
    corpus = open_corpus(data, sample_rate=sr)
    split = split_for(corpus, codec.checkpoint.recipe)
    known = set(codec.speaker_names)
    train = _per_speaker([u for u in split.train if u.speaker in known], utterances_per_speaker)
    speakers = sorted({u.speaker for u in train})
    if len(speakers) < 2:
        raise DataError(
            f"{data}: {len(speakers)} of its speakers have training utterances and are known to the "
            f"model; evaluation needs 2 or more: give the corpus the model was trained on "
            f"(the model knows: {', '.join(codec.speaker_names[:20])})"
        )
    held = _per_speaker([u for u in split.valid if u.speaker in speakers], utterances_per_speaker)
    if not held:
        raise DataError(
            f"{data}: no held-out utterances of the model's speakers; each speaker needs 2 or more "
            f"utterances (data.valid_utterances_per_speaker of them are held out)"
        )

    say(f"reading {len(train)} training and {len(held)} held-out utterances of {len(speakers)} speakers")
    train_voice, train_hist, train_codes = _read_real(codec, train)
    held_voice, held_hist, held_codes = _read_real(codec, held)
    classifier = fit_linear_classifier(train_voice, [u.speaker for u in train])
    log2_f0 = {
        s: _nanmedian([v[-1] for v, u in zip(train_voice, train, strict=True) if u.speaker == s])
        for s in speakers
    }
    leakage = leakage_probe(
        train_hist,
        [u.speaker for u in train],
        held_hist,
        [u.speaker for u in held],
        codes=([train_codes[u.id] for u in train], [held_codes[u.id] for u in held]),
    )
    codes = code_stats(list(held_codes.values()), size, sr / codec.hop_length)
    held_index = {u.id: i for i, u in enumerate(held)}

    chosen = _round_robin(held, max_utterances)
    out_dir = Path(audio_dir) if audio_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    turns: dict[str, int] = {}
    scores: list[PairScores] = []
    samples: list[dict[str, Any]] = []
    heard_recon: list[bool] = []
    to_target: list[bool] = []
    to_source: list[bool] = []
    moved: list[float] = []
    wanted: list[float] = []
    decode_wall = seconds = 0.0
    # One short untimed decode first: one-time set-up (allocator, kernels) would otherwise count
    # against the first utterance's speed.
    _decode(codec, held_codes[chosen[0].id][:, :16], [chosen[0].speaker], family, seed)
    for i, utt in enumerate(chosen, 1):
        turn = turns.get(utt.speaker, 0)
        turns[utt.speaker] = turn + 1
        targets = _conversion_targets(utt.speaker, speakers, turn, conversions_per_utterance)
        say(
            f"[{i}/{len(chosen)}] {utt.id}: reconstruct"
            + (f", convert to {', '.join(targets)}" if targets else "")
        )
        audio = load_audio(utt.path, sr)
        tick = time.perf_counter()
        recon = _decode(codec, held_codes[utt.id], [utt.speaker], family, seed)[0, : len(audio)]
        decode_wall += time.perf_counter() - tick
        seconds += len(audio) / sr
        converted: list[np.ndarray] = (
            list(_decode(codec, held_codes[utt.id], targets, family, seed)[:, : len(audio)])
            if targets
            else []
        )
        pair = score_pair(audio, recon, sr)
        scores.append(pair)
        voices = np.stack([speaker_features(x, sr) for x in [recon, *converted]])
        heard = classifier.predict(voices)
        heard_recon.append(heard[0] == utt.speaker)
        source_f0 = held_voice[held_index[utt.id]][-1]
        for target, voice, who in zip(targets, voices[1:], heard[1:], strict=True):
            to_target.append(who == target)
            to_source.append(who == utt.speaker)
            moved.append(12.0 * (voice[-1] - source_f0))
            wanted.append(12.0 * (log2_f0[target] - log2_f0[utt.speaker]))
        paths = _write_sample(out_dir, utt, audio, recon, dict(zip(targets, converted, strict=True)), sr)
        samples.append(
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

    unseen_scores = None
    if codec.has_speaker_encoder:
        unseen = _per_speaker(
            sorted(
                (u for u in (*split.train, *split.valid) if u.speaker not in speakers), key=lambda u: u.id
            ),
            2 * utterances_per_speaker,
        )
        unseen_scores = _unseen_speakers(
            codec, family, seed, unseen, train, train_voice, held, max_utterances, say
        )

    sign = np.sign(wanted)
    conversion = ConversionScores(
        n=len(to_target),
        target_rate=_mean(to_target),
        source_rate=_mean(to_source),
        reconstruction_rate=_mean(heard_recon),
        classifier_accuracy=classifier.accuracy(held_voice, [u.speaker for u in held]),
        n_real=len(held),
        n_speakers=len(speakers),
        moved_semitones=_nanmean(np.asarray(moved) * sign),
        wanted_semitones=_nanmean(np.abs(wanted)),
    )
    return EvalReport(
        checkpoint=str(checkpoint),
        data=str(data),
        decoder=family,
        sample_rate=sr,
        n_utterances=len(chosen),
        seconds=seconds,
        reconstruction=_mean_scores(scores),
        codes=codes,
        conversion=conversion,
        leakage=leakage,
        samples=samples,
        decode_x_real_time=seconds / max(decode_wall, 1e-9),
        audio_dir=str(out_dir) if out_dir is not None else None,
        wall_seconds=time.perf_counter() - started,
        unseen=unseen_scores,
    )


def _unseen_speakers(
    codec: Codec,
    family: str,
    seed: int,
    unseen: Sequence[Utterance],
    train: Sequence[Utterance],
    train_voice: np.ndarray,
    held: Sequence[Utterance],
    max_utterances: int,
    say: Callable[[str], None],
) -> UnseenSpeakerScores | None:
    """The unseen-speaker measures of :class:`UnseenSpeakerScores`; None without 2-utterance speakers."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in unseen:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    by_speaker = {s: utts for s, utts in sorted(by_speaker.items()) if len(utts) >= 2}
    if not by_speaker:
        return None
    enrol = [u for utts in by_speaker.values() for u in utts[: len(utts) // 2]]
    test = [u for utts in by_speaker.values() for u in utts[len(utts) // 2 :]]
    say(f"unseen speakers {', '.join(by_speaker)}: {len(enrol)} utterances enrol them, {len(test)} test")
    sr = codec.sample_rate
    audio = {u.id: load_audio(u.path, sr) for u in (*enrol, *test)}
    enrol_voice = np.stack([speaker_features(audio[u.id], sr) for u in enrol])
    test_voice = np.stack([speaker_features(audio[u.id], sr) for u in test])
    classifier = fit_linear_classifier(
        np.concatenate([train_voice, enrol_voice]), [u.speaker for u in (*train, *enrol)]
    )
    trained = sorted({u.speaker for u in train})
    ids = torch.tensor([codec.speaker_id(s) for s in trained], device=codec.device)
    table = F.normalize(codec.model.speaker_vector(ids).float(), dim=1)  # [S, D]

    def heard_vector(wave: np.ndarray) -> torch.Tensor:
        return codec.model.encode_speaker(
            torch.from_numpy(np.ascontiguousarray(wave))[None].to(codec.device)
        )[0]

    vector_heard, table_heard, vector_sim, table_sim = [], [], [], []
    vector_pitch, table_pitch = [], []
    test_row = {u.id: i for i, u in enumerate(test)}
    for i, utt in enumerate(_round_robin(test, max_utterances), 1):
        wave = audio[utt.id]
        codes = codec.encode_audio(wave)
        vector = codec.speaker_vector([wave])
        values = torch.from_numpy(vector.values).to(codec.device)
        nearest = trained[int((table @ F.normalize(values, dim=0)).argmax())]
        say(f"[unseen {i}] {utt.id}: reconstruct with its speaker vector and as {nearest}")
        by_vector = _decode_vectors(codec, codes, values[None], family, seed)[0, : len(wave)]
        by_table = _decode(codec, codes, [nearest], family, seed)[0, : len(wave)]
        features = np.stack([speaker_features(x, sr) for x in (by_vector, by_table)])
        heard = classifier.predict(features)
        vector_heard.append(heard[0] == utt.speaker)
        table_heard.append(heard[1] == utt.speaker)
        real_log2_f0 = test_voice[test_row[utt.id], -1]  # the last feature is log2 median F0
        vector_pitch.append(12.0 * abs(features[0, -1] - real_log2_f0))
        table_pitch.append(12.0 * abs(features[1, -1] - real_log2_f0))
        real = heard_vector(wave)
        vector_sim.append(float(F.cosine_similarity(heard_vector(by_vector), real, dim=0)))
        table_sim.append(float(F.cosine_similarity(heard_vector(by_table), real, dim=0)))

    # Zero-shot conversion: held-out speech of training speakers toward each unseen voice in turn,
    # the target's voice given by one of its test recordings (a different one each time).
    to_target, to_source = [], []
    targets = list(by_speaker)
    references = {s: [u for u in test if u.speaker == s] for s in targets}
    for i, utt in enumerate(_round_robin(held, max_utterances)):
        target = targets[i % len(targets)]
        refs = references[target]
        reference = refs[(i // len(targets)) % len(refs)]
        say(f"[zero-shot {i + 1}] {utt.id} -> {target} (voice of {reference.id})")
        wave = load_audio(utt.path, sr)
        values = torch.from_numpy(codec.speaker_vector([audio[reference.id]]).values).to(codec.device)
        converted = _decode_vectors(codec, codec.encode_audio(wave), values[None], family, seed)[
            0, : len(wave)
        ]
        who = classifier.predict(speaker_features(converted, sr)[None])[0]
        to_target.append(who == target)
        to_source.append(who == utt.speaker)
    return UnseenSpeakerScores(
        speakers=targets,
        n=len(vector_heard),
        vector_rate=_mean(vector_heard),
        table_rate=_mean(table_heard),
        vector_similarity=_nanmean(vector_sim),
        table_similarity=_nanmean(table_sim),
        n_conversions=len(to_target),
        target_rate=_mean(to_target),
        source_rate=_mean(to_source),
        classifier_accuracy=classifier.accuracy(test_voice, [u.speaker for u in test]),
        n_real=len(test),
        vector_pitch_error=_nanmean(vector_pitch),
        table_pitch_error=_nanmean(table_pitch),
    )


def _per_speaker(utterances: Sequence[Utterance], cap: int) -> list[Utterance]:
    """The first ``cap`` utterances of each speaker, in the given order."""
    taken: dict[str, int] = {}
    out = []
    for utt in utterances:
        if taken.get(utt.speaker, 0) < cap:
            taken[utt.speaker] = taken.get(utt.speaker, 0) + 1
            out.append(utt)
    return out


def _round_robin(utterances: Sequence[Utterance], limit: int) -> list[Utterance]:
    """Up to ``limit`` utterances: every speaker's first, then every speaker's second, ..."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    rounds = max(len(q) for q in queues)
    order = [q[r] for r in range(rounds) for q in queues if r < len(q)]
    return order[:limit]


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


def _decode(codec: Codec, codes: np.ndarray, speakers: Sequence[str], family: str, seed: int) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker in one batch -> float32 ``[len(speakers), F * hop]``."""
    ids = torch.tensor([codec.speaker_id(s) for s in speakers], device=codec.device)
    batch = torch.from_numpy(codes).to(codec.device).expand(len(speakers), -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, ids, generator=generator, decoder=family)
    return out.float().cpu().numpy()


def _decode_vectors(
    codec: Codec, codes: np.ndarray, vectors: torch.Tensor, family: str, seed: int
) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker vector ``[N, D]`` -> float32 ``[N, F * hop]``."""
    batch = torch.from_numpy(codes).to(codec.device).expand(vectors.shape[0], -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, vectors, generator=generator, decoder=family)
    return out.float().cpu().numpy()


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


def _mean(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def _nanmean(values: np.ndarray | Sequence[float]) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


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
