"""Batches for the training loop: step ``s``'s batch is a pure function of ``(seed, s, rank)``.

:class:`StepBatches` turns a corpus and a recipe into the batches of a run. Step ``s`` on
rank ``r`` draws ``train.batch_size`` random crops (see :class:`~vqspeech.data.dataset.RandomCrops`)
with ``numpy.random.default_rng([train.seed, s, r])``, so a resumed run sees exactly the
batches an uninterrupted one would have, whatever ``data.num_workers`` is. Each rank draws
its own ``batch_size`` crops: the global batch is ``batch_size x world_size``. With a speaker
encoder (issue #7) each crop also gets a reference crop from another utterance of its speaker,
drawn with a second generator, ``default_rng([train.seed, s, r, 1])``, so the main crops are the
same with or without the encoder.

With ``data.augment.enabled`` (issue 17) item ``i``'s crop then passes a random channel
(:func:`vqspeech.data.augment.draw_plan` / :func:`~vqspeech.data.augment.apply_plan`) drawn
with ``default_rng([train.seed, s, r, 2, i])``; the reference crop passes the same channel with
its own noise from ``default_rng([train.seed, s, r, 3, i])``; babble talkers are crops of
other training utterances drawn with those generators. The clean crops are those of an
unaugmented run, and with augmentation off nothing here draws anything more: batches are
bit-identical to those of runs made before augmentation existed. The batch is then
``(encoder input and target, speaker_id[, reference])`` with ``data.augment.target`` =
``degraded``, and ``(clean target, speaker_id[, reference], encoder input)`` with ``clean``
(see :attr:`StepBatches.encoder_input`).

:func:`validation_batches` cuts the held-out utterances into fixed-length segments once.
The split uses seed 0 whatever ``train.seed`` is, so runs with different seeds are
evaluated on the same utterances.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vqspeech.config import Recipe
from vqspeech.data.augment import BabbleSource, apply_plan, draw_plan
from vqspeech.data.augment_config import AugmentConfig
from vqspeech.data.corpus import Corpus, Split
from vqspeech.data.dataset import AudioStore, RandomCrops, segment_length
from vqspeech.errors import DataError

#: Seed of the train/validation split (fixed, see the module docstring).
SPLIT_SEED = 0

Batch = tuple[Tensor, Tensor]
#: A training batch: ``(audio, speaker_id)``, plus ``reference [B, T_ref]`` with a speaker encoder,
#: plus the encoder's input ``[B, T]`` last when it differs from the target (augmentation with
#: ``target: clean``).
TrainBatch = tuple[Tensor, ...]


def split_for(corpus: Corpus, recipe: Recipe) -> Split:
    """The recipe's train/validation split of ``corpus`` (``data.valid_*``, seed :data:`SPLIT_SEED`)."""
    return corpus.split(recipe.data.valid_utterances_per_speaker, recipe.data.valid_speakers, seed=SPLIT_SEED)


class _StepDataset(Dataset[TrainBatch]):
    """Item ``s`` is the whole batch of step ``s`` (for a DataLoader with ``batch_size=None``)."""

    def __init__(
        self,
        crops: RandomCrops,
        batch_size: int,
        seed: int,
        rank: int,
        reference_length: int,
        augment: AugmentConfig | None = None,
        sample_rate: int = 16000,
    ) -> None:
        self.crops = crops
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.reference_length = reference_length  # 0: no reference crops
        self.augment = augment if augment is not None and augment.enabled else None
        self.sample_rate = sample_rate

    def __len__(self) -> int:  # steps are addressed directly; the length is nominal
        return 2**62

    def __getitem__(self, step: int) -> TrainBatch:
        rng = np.random.default_rng([self.seed, step, self.rank])
        audio = np.empty((self.batch_size, self.crops.segment_length), dtype=np.float32)
        speakers = np.empty(self.batch_size, dtype=np.int64)
        indices = np.empty(self.batch_size, dtype=np.int64)
        for i in range(self.batch_size):
            indices[i], audio[i], speakers[i] = self.crops.sample_indexed(rng)
        reference = None
        if self.reference_length:
            other = np.random.default_rng([self.seed, step, self.rank, 1])
            length = self.reference_length
            reference = np.stack([self.crops.reference(int(i), length, other) for i in indices])
        if self.augment is None:
            if reference is None:
                return torch.from_numpy(audio), torch.from_numpy(speakers)
            return torch.from_numpy(audio), torch.from_numpy(speakers), torch.from_numpy(reference)
        degraded = self._augment(step, indices, audio, reference)
        target = degraded if self.augment.target == "degraded" else audio
        out = [torch.from_numpy(target), torch.from_numpy(speakers)]
        if reference is not None:
            out.append(torch.from_numpy(reference))
        if self.augment.target != "degraded":
            out.append(torch.from_numpy(degraded))
        return tuple(out)

    def _augment(
        self, step: int, indices: np.ndarray, audio: np.ndarray, reference: np.ndarray | None
    ) -> np.ndarray:
        """Item ``i``'s crop through a channel drawn from ``(seed, step, rank, i)``; the reference
        crop (in place) through the same channel when ``augment.reference``."""
        config = self.augment
        assert config is not None
        degraded = np.empty_like(audio)
        for i, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, step, self.rank, 2, i])
            babble = self._babble_source(int(index))
            plan = draw_plan(rng, config, self.sample_rate, babble_available=True)
            degraded[i] = apply_plan(audio[i], plan, rng, self.sample_rate, babble)
            if reference is not None and config.reference:
                ref_rng = np.random.default_rng([self.seed, step, self.rank, 3, i])
                reference[i] = apply_plan(reference[i], plan, ref_rng, self.sample_rate, babble)
        return degraded

    def _babble_source(self, index: int) -> BabbleSource:
        """Babble talkers for a crop of utterance ``index``: crops of other training utterances."""

        def talkers(count: int, rng: np.random.Generator) -> list[np.ndarray]:
            return self.crops.others(index, count, self.crops.segment_length, rng)

        return talkers


class StepBatches:
    """The training batches of a run: ``(audio float32 [B, T], speaker_id int64 [B])`` per step,
    plus ``reference float32 [B, T_ref]`` when the model has a speaker encoder
    (``T_ref = model.speaker_encoder.reference_seconds * sample_rate``).

    ``B = recipe.train.batch_size``; ``T = segment_length(data.segment_seconds, sample_rate,
    hop_length)``. ``batch(step)`` gives one step's batch; ``iterate(start, total)`` yields
    steps ``start .. total - 1`` in order, prepared by ``data.num_workers`` DataLoader
    workers (0: in this process). With ``data.augment.enabled`` the audio is augmented (see
    the module docstring); :attr:`encoder_input` says whether the encoder's input comes last,
    apart from the target.
    """

    def __init__(self, corpus: Corpus, recipe: Recipe, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        if corpus.sample_rate != recipe.model.sample_rate:
            raise DataError(
                f"corpus is cached at {corpus.sample_rate} Hz but the model runs at "
                f"{recipe.model.sample_rate} Hz; open it with sample_rate={recipe.model.sample_rate}"
            )
        self.split = split_for(corpus, recipe)
        self.segment_length = segment_length(
            recipe.data.segment_seconds, recipe.model.sample_rate, recipe.model.hop_length
        )
        self.batch_size = recipe.train.batch_size
        self.num_workers = recipe.data.num_workers
        crops = RandomCrops(self.split.train, corpus.speakers, self.segment_length, seed=recipe.train.seed)
        encoder = recipe.model.speaker_encoder
        self.reference_length = (
            round(encoder.reference_seconds * recipe.model.sample_rate) if encoder.enabled else 0
        )
        augment = recipe.data.augment
        #: True when the batch ends with the encoder's (augmented) input, apart from the target.
        self.encoder_input = augment.enabled and augment.target != "degraded"
        self._steps = _StepDataset(
            crops,
            self.batch_size,
            recipe.train.seed,
            rank,
            self.reference_length,
            augment,
            recipe.model.sample_rate,
        )

    def batch(self, step: int) -> TrainBatch:
        """The batch of ``step`` (the same every time it is asked for)."""
        return self._steps[step]

    def iterate(self, start: int, total: int) -> Iterator[TrainBatch]:
        """Batches of steps ``start, start + 1, ..., total - 1``."""
        if self.num_workers <= 0:
            for step in range(start, total):
                yield self._steps[step]
            return
        loader = DataLoader(
            self._steps,
            batch_size=None,
            sampler=range(start, total),
            num_workers=self.num_workers,
            persistent_workers=False,
            prefetch_factor=4,
        )
        yield from loader


def validation_batches(corpus: Corpus, recipe: Recipe, max_segments: int = 256) -> list[Batch]:
    """Held-out audio as fixed-length batches: ``[(audio [B, T], speaker_id [B]), ...]``.

    Each validation utterance is cut into consecutive, non-overlapping segments of the
    training length ``T`` (an utterance shorter than ``T`` gives one zero-padded segment;
    a partial last segment is dropped). Segments are taken round-robin over utterances
    (first segments of all, then second ones, ...) up to ``max_segments``, then grouped
    into batches of ``train.batch_size``. Empty when nothing is held out.
    """
    split = split_for(corpus, recipe)
    if not split.valid:
        return []
    length = segment_length(recipe.data.segment_seconds, recipe.model.sample_rate, recipe.model.hop_length)
    store = AudioStore(split.valid)
    counts = [max(1, u.num_samples // length) for u in split.valid]
    picked: list[tuple[int, int]] = []
    for k in range(max(counts)):
        picked.extend((i, k) for i, n in enumerate(counts) if k < n)
    picked = picked[:max_segments]
    picked.sort()
    audio = np.stack([store.read(i, k * length, length) for i, k in picked])
    speakers = np.array([corpus.speakers.id(split.valid[i].speaker) for i, _ in picked], dtype=np.int64)
    size = recipe.train.batch_size
    return [
        (torch.from_numpy(audio[j : j + size].copy()), torch.from_numpy(speakers[j : j + size].copy()))
        for j in range(0, len(picked), size)
    ]
