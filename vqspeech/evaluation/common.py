"""Small pieces the evaluation stages share: which utterances, batch decoding, NaN-aware means."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vqspeech.codec import Codec
from vqspeech.data.corpus import Utterance


def per_speaker(utterances: Sequence[Utterance], cap: int) -> list[Utterance]:
    """The first ``cap`` utterances of each speaker, in the given order."""
    taken: dict[str, int] = {}
    out = []
    for utt in utterances:
        if taken.get(utt.speaker, 0) < cap:
            taken[utt.speaker] = taken.get(utt.speaker, 0) + 1
            out.append(utt)
    return out


def round_robin(utterances: Sequence[Utterance], limit: int) -> list[Utterance]:
    """Up to ``limit`` utterances: every speaker's first, then every speaker's second, ..."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    rounds = max(len(q) for q in queues)
    order = [q[r] for r in range(rounds) for q in queues if r < len(q)]
    return order[:limit]


def decode_speakers(
    codec: Codec, codes: np.ndarray, speakers: Sequence[str], family: str, seed: int
) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker in one batch -> float32 ``[len(speakers), F * hop]``."""
    ids = torch.tensor([codec.speaker_id(s) for s in speakers], device=codec.device)
    batch = torch.from_numpy(codes).to(codec.device).expand(len(speakers), -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, ids, generator=generator, decoder=family, dtype=codec.decode_dtype)
    return out.float().cpu().numpy()


def decode_vectors(
    codec: Codec, codes: np.ndarray, vectors: torch.Tensor, family: str, seed: int
) -> np.ndarray:
    """Codes ``[1, F]`` decoded once per speaker vector ``[N, D]`` -> float32 ``[N, F * hop]``."""
    batch = torch.from_numpy(codes).to(codec.device).expand(vectors.shape[0], -1)
    generator = torch.Generator(device=codec.device).manual_seed(seed)
    out = codec.model.decode(batch, vectors, generator=generator, decoder=family, dtype=codec.decode_dtype)
    return out.float().cpu().numpy()


def rate(flags: Sequence[bool]) -> float:
    """The fraction of ``flags`` that are true; NaN for none."""
    return float(np.mean(flags)) if len(flags) else float("nan")


def nanmean(values: np.ndarray | Sequence[float]) -> float:
    """The mean of the finite ``values``; NaN for none."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")
