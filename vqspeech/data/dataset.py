"""Torch datasets over a :class:`~vqspeech.data.corpus.Corpus`'s cached 16 kHz audio.

* :class:`RandomCrops` - training: an endless stream of ``(audio [T], speaker_id)`` with
  ``T = segment_length`` samples, cropped at random from utterances drawn with probability
  proportional to their length (so every second of audio is equally likely). Utterances
  shorter than the crop are zero-padded at the end, never skipped, so no speaker vanishes.
  The stream is a pure function of ``seed`` (and the DataLoader worker id).
* :class:`UtteranceDataset` - validation: whole utterances in a fixed order, optionally cut
  to ``max_length`` samples from the start, padded to a multiple of ``hop_length``.

Audio comes from an :class:`AudioStore`: 16-bit samples preloaded in memory when the corpus
is small (the demo corpus is ~30 MB), read slice by slice from the cached WAVs otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from vqspeech.audio import read_int16
from vqspeech.config import segment_length as segment_length  # its home is config; imported from here too
from vqspeech.data.corpus import Utterance
from vqspeech.data.speakers import SpeakerTable
from vqspeech.errors import AudioError, DataError

#: Corpora whose cached audio is at most this many bytes are preloaded by default.
PRELOAD_LIMIT_BYTES = 1 << 30

Example = tuple[Tensor, Tensor]


class AudioStore:
    """Random access to utterances' cached 16-bit audio as float32.

    ``preload=None`` (default) preloads when the total is at most ``PRELOAD_LIMIT_BYTES``
    (1 GiB of int16); otherwise each :meth:`read` decodes only the requested slice.
    """

    def __init__(self, utterances: Sequence[Utterance], preload: bool | None = None) -> None:
        self.utterances = tuple(utterances)
        total = 2 * sum(u.num_samples for u in self.utterances)
        self.preloaded = total <= PRELOAD_LIMIT_BYTES if preload is None else preload
        self._arrays: list[np.ndarray] = []
        if self.preloaded:
            self._arrays = [self._read_file(u, 0, u.num_samples) for u in self.utterances]

    @staticmethod
    def _read_file(utt: Utterance, start: int, stop: int) -> np.ndarray:
        try:
            return read_int16(utt.path, start, stop)
        except AudioError as exc:
            raise DataError(
                f"cached audio is unreadable: {exc}; delete the cache folder to rebuild it"
            ) from None

    def read(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples ``[start, start + length)`` of utterance ``index`` as float32 ``[length]``.

        Past the end of the utterance the result is zero-padded; ``length=None`` reads to
        the end.
        """
        utt = self.utterances[index]
        stop = utt.num_samples if length is None else min(utt.num_samples, start + length)
        if self.preloaded:
            chunk = self._arrays[index][start:stop]
        else:
            chunk = self._read_file(utt, start, stop) if stop > start else np.zeros(0, np.int16)
        out = np.zeros(length if length is not None else chunk.shape[0], dtype=np.float32)
        out[: chunk.shape[0]] = chunk * np.float32(1.0 / 32768.0)
        return out


class RandomCrops(IterableDataset[Example]):
    """Endless random crops for training: yields ``(audio float32 [segment_length], speaker_id int64 [])``.

    Each iterator draws from ``numpy.random.default_rng([seed, worker_id])``: the same seed
    and number of DataLoader workers give the same stream. When resuming training, pass a
    different seed (e.g. ``seed + step``) so crops do not repeat.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: SpeakerTable,
        segment_length: int,
        seed: int = 0,
        preload: bool | None = None,
    ) -> None:
        if not utterances:
            raise DataError("no training utterances; the corpus or split is empty")
        if segment_length <= 0:
            raise DataError(f"segment_length must be positive, got {segment_length}")
        self.store = AudioStore(utterances, preload=preload)
        self.segment_length = segment_length
        self.seed = seed
        self.speaker_ids = np.array([speakers.id(u.speaker) for u in utterances], dtype=np.int64)
        lengths = np.array([max(1, u.num_samples) for u in utterances], dtype=np.float64)
        self._cumulative = np.cumsum(lengths)
        self._by_speaker: dict[int, np.ndarray] = {
            int(s): np.flatnonzero(self.speaker_ids == s) for s in np.unique(self.speaker_ids)
        }

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """One crop drawn with ``rng``: ``(audio float32 [segment_length], speaker_id)``."""
        _, audio, speaker = self.sample_indexed(rng)
        return audio, speaker

    def sample_indexed(self, rng: np.random.Generator) -> tuple[int, np.ndarray, int]:
        """:meth:`sample`, plus the index of the utterance the crop came from (first)."""
        index = int(np.searchsorted(self._cumulative, rng.random() * self._cumulative[-1], side="right"))
        index = min(index, len(self.speaker_ids) - 1)
        return index, self.crop(index, self.segment_length, rng), int(self.speaker_ids[index])

    def crop(self, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``length``-sample crop of utterance ``index`` (zero-padded if it is shorter)."""
        n = self.store.utterances[index].num_samples
        start = int(rng.integers(0, n - length + 1)) if n > length else 0
        return self.store.read(index, start, length)

    def reference(self, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """A ``length``-sample crop of *another* utterance of utterance ``index``'s speaker.

        The speaker encoder learns from these (issue #7): what a crop shares with another
        utterance of the same speaker is the voice, not the words. A speaker with a single
        utterance gets a crop of that one.
        """
        same = self._by_speaker[int(self.speaker_ids[index])]
        others = same[same != index]
        pick = int(others[rng.integers(0, len(others))]) if len(others) else index
        return self.crop(pick, length, rng)

    def others(self, index: int, count: int, length: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``count`` random ``length``-sample crops of utterances other than ``index`` (any speaker),
        each utterance drawn uniformly: the talkers of babble noise (issue 17). With a single
        utterance, crops of that one."""
        n = len(self.speaker_ids)
        picks = rng.integers(0, max(1, n - 1), size=count)
        return [self.crop(int(p) + int(n > 1 and p >= index), length, rng) for p in picks]

    def __iter__(self) -> Iterator[Example]:
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            audio, speaker = self.sample(rng)
            yield torch.from_numpy(audio), torch.tensor(speaker, dtype=torch.int64)


class UtteranceDataset(Dataset[Example]):
    """Whole utterances for validation: ``(audio float32 [T], speaker_id int64 [])``, in order.

    ``T`` is the utterance length, cut to ``max_length`` samples from the start when given,
    then zero-padded up to a multiple of ``hop_length``. ``utterances[i]`` is item ``i``'s
    :class:`Utterance` (for its id and true length).
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: SpeakerTable,
        hop_length: int = 1,
        max_length: int | None = None,
        preload: bool | None = None,
    ) -> None:
        if hop_length <= 0:
            raise DataError(f"hop_length must be positive, got {hop_length}")
        self.utterances = tuple(utterances)
        self.store = AudioStore(self.utterances, preload=preload)
        self.hop_length = hop_length
        self.max_length = max_length
        self.speaker_ids = [speakers.id(u.speaker) for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> Example:
        n = self.utterances[index].num_samples
        if self.max_length is not None:
            n = min(n, self.max_length)
        padded = max(1, math.ceil(n / self.hop_length)) * self.hop_length
        audio = self.store.read(index, 0, n)
        if padded > n:
            audio = np.pad(audio, (0, padded - n))
        return torch.from_numpy(audio), torch.tensor(self.speaker_ids[index], dtype=torch.int64)


def pad_collate(batch: Sequence[Example]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate examples of different lengths: ``(audio [B, T_max], speaker_id [B], lengths [B])``.

    Shorter clips are zero-padded at the end; ``lengths`` holds each clip's own length.
    """
    lengths = torch.tensor([audio.shape[0] for audio, _ in batch], dtype=torch.int64)
    out = torch.zeros(len(batch), int(lengths.max()) if len(batch) else 0)
    for i, (audio, _) in enumerate(batch):
        out[i, : audio.shape[0]] = audio
    speakers = torch.stack([speaker for _, speaker in batch]) if batch else torch.zeros(0, dtype=torch.int64)
    return out, speakers, lengths
