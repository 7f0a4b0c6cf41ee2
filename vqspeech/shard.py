"""Which inputs this process handles in a torchrun job: shards balanced by duration (issue 19).

:func:`shard_by_duration` deals inputs onto ranks longest first, each onto the least-loaded
rank (the LPT rule: the largest load is at most 4/3 of the best possible), so ranks finish
together even when file lengths vary a lot; count-based round robin would not. The result
depends only on the (path, duration) pairs and the world size, so every rank computes the
same shards without talking to the others. :func:`audio_durations` reads the durations from
the files' headers (soundfile), not their samples. No torch here.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence

import soundfile as sf


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Seconds of audio in ``path`` from its header; 0.0 when it cannot be read (it fails later,
    with the reader's message, wherever it lands)."""
    try:
        info = sf.info(os.fspath(path))
    except (RuntimeError, OSError, ValueError, TypeError):  # soundfile raises LibsndfileError(RuntimeError)
        return 0.0
    if not info.samplerate or info.frames <= 0:
        return 0.0
    return float(info.frames) / float(info.samplerate)


def audio_durations(paths: Sequence[str | os.PathLike[str]]) -> list[float]:
    """:func:`audio_duration` of each path, in order."""
    return [audio_duration(p) for p in paths]


def shard_by_duration(keys: Sequence[str], durations: Sequence[float], world_size: int) -> list[list[int]]:
    """Split items ``keys`` (unique names, e.g. paths) with ``durations`` (s) over ``world_size`` ranks.

    Returns, per rank, the indices of its items in ascending order. Items go longest first
    (ties by key) onto the rank with the least total duration so far (ties: the lowest rank).
    Every item lands on exactly one rank; deterministic for equal inputs.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")
    if len(keys) != len(durations):
        raise ValueError(f"{len(keys)} keys but {len(durations)} durations")
    order = sorted(range(len(keys)), key=lambda i: (-durations[i], keys[i]))
    loads = [(0.0, rank) for rank in range(world_size)]  # a heap of (seconds so far, rank)
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        load, rank = heapq.heappop(loads)
        shards[rank].append(i)
        heapq.heappush(loads, (load + max(0.0, durations[i]), rank))
    return [sorted(shard) for shard in shards]
