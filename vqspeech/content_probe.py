"""Content in the codes: a linear probe from codes to phones, scored on held-out speakers.

The paper (van den Oord et al. 2017, section 4.3) reports 49.3 % phone accuracy from the codes
against 7.2 % chance: the codes keep what was said. Here that is a number for any model and
any corpus with phone labels (eSpeak voices of a ``vqspeech data synth`` corpus, see
:mod:`vqspeech.data.phones`):

1. every token gets the phone that covers its centre (:func:`frame_labels`; token ``t`` covers
   samples ``[t * hop, (t + 1) * hop)``, 64 samples = 4 ms at 16 kHz);
2. a multinomial logistic regression (:func:`vqspeech.evaluation.fit_linear_classifier`) learns
   phones from one-hot codes (optionally with ``context`` neighbouring codes on each side) on
   the tokens of some speakers;
3. it is scored on the tokens of other speakers, which it never saw (:func:`phone_probe`).

``chance`` is what a probe that ignores the codes scores: the share of held-out tokens labelled
with the most common training phone. Held-out phones the training speakers never had count as
errors. :func:`corpus_phone_probe` does it all for a checkpoint and a corpus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vqspeech.audio import load_audio
from vqspeech.data.corpus import open_corpus
from vqspeech.data.phones import SILENCE, Span, utterance_phones
from vqspeech.errors import DataError
from vqspeech.evaluation import fit_linear_classifier
from vqspeech.inference import Codec


@dataclass(frozen=True)
class PhoneProbeScores:
    """A phone probe's result on held-out speakers' tokens.

    ``accuracy``: the fraction of the ``n_frames`` held-out tokens whose phone the probe names;
    ``chance``: the fraction labelled with the most common training phone; ``n_phones``: the
    phone classes seen in training; ``n_train_frames``: the tokens it was fitted on (after
    subsampling); ``train_speakers`` / ``test_speakers``: who the tokens came from (empty when
    the caller did not say).
    """

    accuracy: float
    chance: float
    n_frames: int
    n_phones: int
    n_train_frames: int = 0
    train_speakers: tuple[str, ...] = ()
    test_speakers: tuple[str, ...] = ()


def frame_labels(spans: Sequence[Span], n_frames: int, hop_length: int, sample_rate: int) -> list[str]:
    """The phone at each token's centre: token ``t`` covers ``[t * hop, (t + 1) * hop)`` samples.

    ``spans`` are ``(start_s, end_s, phone)`` in the audio's time, sorted and non-overlapping;
    a centre no span covers (before the first, after the last, in a gap) is :data:`SILENCE`.
    Returns ``n_frames`` labels.
    """
    centres = (np.arange(n_frames) * hop_length + hop_length / 2) / sample_rate
    starts = np.array([s for s, _, _ in spans], dtype=np.float64)
    ends = np.array([e for _, e, _ in spans], dtype=np.float64)
    index = np.searchsorted(starts, centres, side="right") - 1
    labels = []
    for t, i in zip(centres, index, strict=True):
        labels.append(spans[i][2] if i >= 0 and t < ends[i] else SILENCE)
    return labels


def code_features(codes: np.ndarray, codebook_size: int, context: int = 0) -> np.ndarray:
    """Codes ``[F]`` -> one-hot features ``[F, codebook_size * (2 * context + 1)]`` (float32).

    With ``context`` > 0, each token's one-hot code is followed by those of the ``context``
    tokens before and after it (zeros past the ends of the utterance).
    """
    flat = np.asarray(codes, np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= codebook_size):
        raise DataError(f"codes must lie in [0, {codebook_size}); got {flat.min()}..{flat.max()}")
    if context < 0:
        raise DataError(f"context must be 0 or more, got {context}")
    n = flat.size
    out = np.zeros((n, codebook_size * (2 * context + 1)), dtype=np.float32)
    for j, shift in enumerate(range(-context, context + 1)):
        source = np.arange(n) + shift
        valid = (source >= 0) & (source < n)
        out[np.flatnonzero(valid), j * codebook_size + flat[source[valid]]] = 1.0
    return out


def phone_probe(
    train_codes: Sequence[np.ndarray],
    train_labels: Sequence[Sequence[str]],
    test_codes: Sequence[np.ndarray],
    test_labels: Sequence[Sequence[str]],
    codebook_size: int,
    *,
    context: int = 0,
    max_train_frames: int = 20000,
    skip_silence: bool = False,
    seed: int = 0,
    l2: float = 1e-3,
) -> PhoneProbeScores:
    """Fit a linear phone classifier on training utterances' tokens; score it on test utterances'.

    ``*_codes``: one int array ``[F_i]`` per utterance; ``*_labels``: its ``F_i`` phones (see
    :func:`frame_labels`). At most ``max_train_frames`` training tokens are used (a seeded
    random subset: the dense one-hot matrix costs ``max_train_frames * codebook_size *
    (2 * context + 1)`` floats, several times over while fitting: about 5 GB for 20000 frames,
    512 codes and ``context=2``).
    ``skip_silence`` leaves :data:`SILENCE` tokens out of training and scoring.
    """
    x_train, y_train = _frames(train_codes, train_labels, codebook_size, context, skip_silence)
    x_test, y_test = _frames(test_codes, test_labels, codebook_size, context, skip_silence)
    if not y_test:
        raise DataError("the phone probe has no held-out tokens to score")
    if len(y_train) > max_train_frames:
        keep = np.sort(np.random.default_rng(seed).choice(len(y_train), max_train_frames, replace=False))
        x_train, y_train = x_train[keep], [y_train[i] for i in keep]
    classifier = fit_linear_classifier(x_train, y_train, l2=l2)
    correct = 0
    for lo in range(0, len(y_test), 8192):  # the features are dense: predict in slices
        predicted = classifier.predict(x_test[lo : lo + 8192])
        correct += sum(p == y for p, y in zip(predicted, y_test[lo : lo + 8192], strict=True))
    majority = Counter(y_train).most_common(1)[0][0]
    return PhoneProbeScores(
        accuracy=correct / len(y_test),
        chance=sum(y == majority for y in y_test) / len(y_test),
        n_frames=len(y_test),
        n_phones=len(classifier.labels),
        n_train_frames=len(y_train),
    )


def _frames(
    codes: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    codebook_size: int,
    context: int,
    skip_silence: bool,
) -> tuple[np.ndarray, list[str]]:
    if len(codes) != len(labels):
        raise DataError(f"got {len(codes)} code arrays but {len(labels)} label lists")
    features: list[np.ndarray] = []
    names: list[str] = []
    for utt_codes, utt_labels in zip(codes, labels, strict=True):
        flat = np.asarray(utt_codes).ravel()
        if flat.size != len(utt_labels):
            raise DataError(f"an utterance has {flat.size} tokens but {len(utt_labels)} phone labels")
        x = code_features(flat, codebook_size, context)
        keep = [i for i, y in enumerate(utt_labels) if not (skip_silence and y == SILENCE)]
        features.append(x[keep])
        names.extend(utt_labels[i] for i in keep)
    width = codebook_size * (2 * context + 1)
    return (np.concatenate(features) if features else np.zeros((0, width), np.float32)), names


def corpus_phone_probe(
    codec: Codec | str | Path,
    data: str | Path,
    *,
    test_speakers: Sequence[str] | None = None,
    utterances_per_speaker: int = 20,
    context: int = 0,
    skip_silence: bool = False,
    max_train_frames: int = 20000,
    device: str = "cpu",
) -> PhoneProbeScores:
    """:func:`phone_probe` of ``codec``'s codes on the utterances of ``data`` that have phone files.

    ``codec``: a loaded :class:`~vqspeech.inference.Codec`, or a checkpoint path to load on ``device``.

    ``data``: a corpus from ``vqspeech data synth`` (its eSpeak speakers have phone files; any
    speaker of the corpus counts, known to the model or not). ``test_speakers``: whose tokens
    score the probe (default: every second speaker with phone files, in name order); the
    others train it. Up to ``utterances_per_speaker`` utterances per speaker (the first by id).

    Raises:
        DataError: fewer than two speakers with phone files, or a test speaker without any.
    """
    if not isinstance(codec, Codec):
        codec = Codec.load(codec, device)
    corpus = open_corpus(data, sample_rate=codec.sample_rate)
    by_speaker: dict[str, list[tuple[np.ndarray, list[str]]]] = {}
    for utt in corpus.utterances:
        spans = utterance_phones(corpus.root, utt.speaker, utt.id)
        if spans is None or len(by_speaker.get(utt.speaker, [])) >= utterances_per_speaker:
            continue
        codes = codec.encode_audio(load_audio(utt.path, codec.sample_rate))[0]
        labels = frame_labels(spans, codes.shape[0], codec.hop_length, codec.sample_rate)
        by_speaker.setdefault(utt.speaker, []).append((codes, labels))
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise DataError(
            f"{data}: {len(speakers)} speakers have phone labels (phones/<speaker>/*.tsv); the phone "
            "probe needs 2 or more: synthesise a corpus with eSpeak voices (vqspeech data synth)"
        )
    held = list(test_speakers) if test_speakers is not None else speakers[1::2]
    missing = sorted(set(held) - set(speakers))
    if missing:
        raise DataError(
            f"{data}: test speaker {missing[0]!r} has no phone labels; have: {', '.join(speakers)}"
        )
    train = [s for s in speakers if s not in held]
    if not train or not held:
        raise DataError("the phone probe needs at least one training and one test speaker")
    train_items = [item for s in train for item in by_speaker[s]]
    test_items = [item for s in held for item in by_speaker[s]]
    scores = phone_probe(
        [codes for codes, _ in train_items],
        [labels for _, labels in train_items],
        [codes for codes, _ in test_items],
        [labels for _, labels in test_items],
        codec.codebook_size,
        context=context,
        skip_silence=skip_silence,
        max_train_frames=max_train_frames,
    )
    return replace(scores, train_speakers=tuple(train), test_speakers=tuple(sorted(held)))
