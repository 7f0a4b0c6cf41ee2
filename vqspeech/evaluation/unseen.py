"""Speakers the model never trained on (issue 7): enrolled from recordings, voiced through the
speaker encoder, and used as zero-shot conversion targets. One stage of
:func:`~vqspeech.evaluation.run.evaluate_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vqspeech.audio import load_audio
from vqspeech.codec import Codec
from vqspeech.data.corpus import Split, Utterance
from vqspeech.evaluation.common import (
    decode_speakers,
    decode_vectors,
    nanmean,
    per_speaker,
    rate,
    round_robin,
)
from vqspeech.evaluation.speakers import LinearClassifier, fit_linear_classifier, speaker_features


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


def score_unseen_speakers(
    codec: Codec,
    family: str,
    seed: int,
    split: Split,
    train: Sequence[Utterance],
    train_voice: np.ndarray,
    held: Sequence[Utterance],
    max_utterances: int,
    utterances_per_speaker: int,
    say: Callable[[str], None],
) -> UnseenSpeakerScores | None:
    """The unseen-speaker stage of :func:`~vqspeech.evaluation.run.evaluate_model`.

    The corpus's speakers that ``train`` lacks (up to ``2 * utterances_per_speaker`` utterances
    each, from either split) are enrolled in a speaker classifier beside the training speakers
    (``train``, features ``train_voice``); their test halves are reconstructed with their own
    speaker vector and with the nearest table voice, and ``held`` (training speakers' held-out
    speech) is converted toward them. None without a speaker encoder or without an unseen
    speaker of 2 or more utterances.
    """
    if not codec.has_speaker_encoder:
        return None
    trained = sorted({u.speaker for u in train})
    unseen = per_speaker(
        sorted((u for u in (*split.train, *split.valid) if u.speaker not in trained), key=lambda u: u.id),
        2 * utterances_per_speaker,
    )
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
    ids = torch.tensor([codec.speaker_id(s) for s in trained], device=codec.device)
    table = F.normalize(codec.model.speaker_vector(ids).float(), dim=1)  # [S, D]

    def heard_vector(wave: np.ndarray) -> torch.Tensor:
        return codec.model.encode_speaker(
            torch.from_numpy(np.ascontiguousarray(wave))[None].to(codec.device)
        )[0]

    vector_heard, table_heard, vector_sim, table_sim = [], [], [], []
    vector_pitch, table_pitch = [], []
    test_row = {u.id: i for i, u in enumerate(test)}
    for i, utt in enumerate(round_robin(test, max_utterances), 1):
        wave = audio[utt.id]
        codes = codec.encode_audio(wave)
        vector = codec.speaker_vector([wave])
        values = torch.from_numpy(vector.values).to(codec.device)
        nearest = trained[int((table @ F.normalize(values, dim=0)).argmax())]
        say(f"[unseen {i}] {utt.id}: reconstruct with its speaker vector and as {nearest}")
        by_vector = decode_vectors(codec, codes, values[None], family, seed)[0, : len(wave)]
        by_table = decode_speakers(codec, codes, [nearest], family, seed)[0, : len(wave)]
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

    to_target, to_source = _zero_shot_conversions(
        codec, family, seed, held, by_speaker, test, audio, classifier, max_utterances, say
    )
    return UnseenSpeakerScores(
        speakers=list(by_speaker),
        n=len(vector_heard),
        vector_rate=rate(vector_heard),
        table_rate=rate(table_heard),
        vector_similarity=nanmean(vector_sim),
        table_similarity=nanmean(table_sim),
        n_conversions=len(to_target),
        target_rate=rate(to_target),
        source_rate=rate(to_source),
        classifier_accuracy=classifier.accuracy(test_voice, [u.speaker for u in test]),
        n_real=len(test),
        vector_pitch_error=nanmean(vector_pitch),
        table_pitch_error=nanmean(table_pitch),
    )


def _zero_shot_conversions(
    codec: Codec,
    family: str,
    seed: int,
    held: Sequence[Utterance],
    by_speaker: dict[str, list[Utterance]],
    test: Sequence[Utterance],
    audio: dict[str, np.ndarray],
    classifier: LinearClassifier,
    max_utterances: int,
    say: Callable[[str], None],
) -> tuple[list[bool], list[bool]]:
    """Held-out speech of training speakers converted toward each unseen voice in turn, the target's
    voice given by one of its ``test`` recordings (a different one each time): whether the
    classifier hears each conversion as its target, and whether still as its source."""
    sr = codec.sample_rate
    to_target, to_source = [], []
    targets = list(by_speaker)
    references = {s: [u for u in test if u.speaker == s] for s in targets}
    for i, utt in enumerate(round_robin(held, max_utterances)):
        target = targets[i % len(targets)]
        refs = references[target]
        reference = refs[(i // len(targets)) % len(refs)]
        say(f"[zero-shot {i + 1}] {utt.id} -> {target} (voice of {reference.id})")
        wave = load_audio(utt.path, sr)
        values = torch.from_numpy(codec.speaker_vector([audio[reference.id]]).values).to(codec.device)
        converted = decode_vectors(codec, codec.encode_audio(wave), values[None], family, seed)[
            0, : len(wave)
        ]
        who = classifier.predict(speaker_features(converted, sr)[None])[0]
        to_target.append(who == target)
        to_source.append(who == utt.speaker)
    return to_target, to_source
