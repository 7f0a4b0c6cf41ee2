"""Batches for the training loop: step ``s``'s batch is a pure function of ``(seed, s, rank)``.

:class:`StepBatches` turns a corpus and a recipe into the batches of a run. Step ``s`` on
rank ``r`` draws ``train.batch_size`` random crops (see :class:`~vqspeech.data.dataset.RandomCrops`)
with ``numpy.random.default_rng([train.seed, s, r])``, so a resumed run sees exactly the
batches an uninterrupted one would have, whatever ``data.num_workers`` is. Each rank draws
its own ``batch_size`` crops: the global batch is ``batch_size x world_size``. With a speaker
encoder (issue #7) each crop also gets a reference crop from another utterance of its speaker,
drawn with a second generator, ``default_rng([train.seed, s, r, 1])``, so the main crops are the
same with or without the encoder.

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
from vqspeech.data.corpus import Corpus, Split
from vqspeech.data.dataset import AudioStore, RandomCrops, segment_length
from vqspeech.errors import DataError

#: Seed of the train/validation split (fixed, see the module docstring).
SPLIT_SEED = 0

Batch = tuple[Tensor, Tensor]
#: A training batch: ``(audio, speaker_id)``, plus ``reference [B, T_ref]`` with a speaker encoder.
TrainBatch = tuple[Tensor, ...]


def split_for(corpus: Corpus, recipe: Recipe) -> Split:
    """The recipe's train/validation split of ``corpus`` (``data.valid_*``, seed :data:`SPLIT_SEED`)."""
    return corpus.split(recipe.data.valid_utterances_per_speaker, recipe.data.valid_speakers, seed=SPLIT_SEED)


class _StepDataset(Dataset[TrainBatch]):
    """Item ``s`` is the whole batch of step ``s`` (for a DataLoader with ``batch_size=None``)."""

    def __init__(
        self, crops: RandomCrops, batch_size: int, seed: int, rank: int, reference_length: int
    ) -> None:
        self.crops = crops
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.reference_length = reference_length  # 0: no reference crops

    def __len__(self) -> int:  # steps are addressed directly; the length is nominal
        return 2**62

    def __getitem__(self, step: int) -> TrainBatch:
        rng = np.random.default_rng([self.seed, step, self.rank])
        audio = np.empty((self.batch_size, self.crops.segment_length), dtype=np.float32)
        speakers = np.empty(self.batch_size, dtype=np.int64)
        indices = np.empty(self.batch_size, dtype=np.int64)
        for i in range(self.batch_size):
            indices[i], audio[i], speakers[i] = self.crops.sample_indexed(rng)
        if not self.reference_length:
            return torch.from_numpy(audio), torch.from_numpy(speakers)
        other = np.random.default_rng([self.seed, step, self.rank, 1])
        reference = np.stack([self.crops.reference(int(i), self.reference_length, other) for i in indices])
        return torch.from_numpy(audio), torch.from_numpy(speakers), torch.from_numpy(reference)


class StepBatches:
    """The training batches of a run: ``(audio float32 [B, T], speaker_id int64 [B])`` per step,
    plus ``reference float32 [B, T_ref]`` when the model has a speaker encoder
    (``T_ref = model.speaker_encoder.reference_seconds * sample_rate``).

    ``B = recipe.train.batch_size``; ``T = segment_length(data.segment_seconds, sample_rate,
    hop_length)``. ``batch(step)`` gives one step's batch; ``iterate(start, total)`` yields
    steps ``start .. total - 1`` in order, prepared by ``data.num_workers`` DataLoader
    workers (0: in this process).
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
        self._steps = _StepDataset(crops, self.batch_size, recipe.train.seed, rank, self.reference_length)

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
