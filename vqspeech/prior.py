"""A prior over a VQ-VAE's speech codes (project issue #8): train it, load it, sample speech with it.

* :func:`train_prior` encodes every utterance of a corpus once with a trained VQ-VAE, keeps the
  codes in memory, and trains a :class:`~vqspeech.nn.prior.CodePrior` on random crops of them
  with the shared loop (:func:`vqspeech.loop.fit`: same logging, checkpoints, SIGINT, resume as
  ``vqspeech train``). The held-out utterances are the VQ-VAE recipe's own (its
  ``data.valid_*`` split), so the prior is measured on speech neither model learned from.
* Its checkpoints (:func:`~vqspeech.prior_checkpoint.load_prior`, :class:`PriorCheckpoint`)
  live in :mod:`vqspeech.prior_checkpoint`, below inference, which codes token files with them.
* :func:`sample_speech` / :func:`sample_file`: new speech in a voice, generated entirely in
  latent space by the prior and decoded by the VQ-VAE's decoder.

Bits per token are ``-log2 p(code_t | codes_<t, speaker)`` averaged over held-out tokens, coded
from each utterance's start, i.e. what an ideal entropy coder would spend (raw: ``log2 K``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from vqspeech.audio import load_audio, save_audio
from vqspeech.checkpoint import load_checkpoint
from vqspeech.codec import ENCODE_CHUNK_FRAMES, Codec
from vqspeech.config import TrainConfig
from vqspeech.data.batches import split_for
from vqspeech.data.corpus import Utterance, open_corpus
from vqspeech.device import resolve_device
from vqspeech.errors import ConfigError, DataError
from vqspeech.files import refuse_existing
from vqspeech.inference import decode_tokens
from vqspeech.loop import FitResult, TrainCallback, fit, training_of
from vqspeech.model import VQVAE
from vqspeech.nn.prior import CodePrior
from vqspeech.nn.prior_int import IntegerCodePrior
from vqspeech.prior_checkpoint import PriorCheckpoint, check_prior_recipe, load_prior, save_prior
from vqspeech.prior_config import UNKNOWN_SPEAKER, PriorRecipe
from vqspeech.recipe_io import from_dict, merge, parse_override, to_dict
from vqspeech.runfolder import LAST, claim_run

#: The longest speech :func:`sample_speech` makes in one go: the prior samples the codes of the
#: whole length and the audio is held in memory (an hour at 16 kHz is 230 MB of float32).
MAX_SAMPLE_SECONDS = 3600
LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Recipes (checkpoints: vqspeech.prior_checkpoint)


def prior_recipe(overrides: Sequence[str] = (), base: PriorRecipe | None = None) -> PriorRecipe:
    """``base`` (default: :class:`PriorRecipe`'s defaults) with ``--set KEY=VALUE`` overrides."""
    data = to_dict(base or PriorRecipe())
    for text in overrides:
        data = merge(data, parse_override(text))
    return check_prior_recipe(from_dict(PriorRecipe, data))


# --------------------------------------------------------------------------------------------
# The corpus as codes


@dataclass(frozen=True)
class EncodedUtterance:
    """One utterance's codes ``[F]`` (int64) and the prior's speaker id for it (-1: unknown)."""

    id: str
    speaker: int
    codes: NDArray[np.int64]


@torch.no_grad()
def encode_utterances(
    model: VQVAE, utterances: Sequence[Utterance], speaker_names: Sequence[str], device: torch.device
) -> list[EncodedUtterance]:
    """Encode each utterance's cached audio once (deterministic, chunked at bounded memory).

    A speaker the VQ-VAE's table does not know becomes :data:`UNKNOWN_SPEAKER`.
    """
    ids = {name: i for i, name in enumerate(speaker_names)}
    rate = model.config.sample_rate
    out = []
    for utt in utterances:
        audio = torch.from_numpy(load_audio(utt.path, rate)).to(device)
        codes = model.encode(audio[None], chunk_frames=ENCODE_CHUNK_FRAMES)[0].cpu().numpy()
        out.append(EncodedUtterance(utt.id, ids.get(utt.speaker, UNKNOWN_SPEAKER), codes.astype(np.int64)))
    return out


class PriorBatch(NamedTuple):
    """One step's crops: codes ``[B, S]`` (int64), speakers ``[B]`` (-1: unknown), and the mask
    ``[B, S]`` (bool) of positions the loss counts."""

    codes: Tensor
    speaker: Tensor
    mask: Tensor


class CropBatches:
    """Random crops of ``segment_tokens`` codes; step ``s``'s batch is a pure function of (seed, s).

    Utterances are drawn in proportion to their length, crops uniformly within them. Position 0
    sees only the start vector, so its target counts only when the crop starts the utterance:
    the start vector means "beginning of a stream", as in coding. Shorter utterances are padded
    (padding is masked out). A crop's speaker becomes unknown with probability ``speaker_dropout``.
    """

    def __init__(self, train: Sequence[EncodedUtterance], recipe: PriorRecipe) -> None:
        if not train:
            raise DataError("no training utterances left after holding out the validation ones")
        self.train = list(train)
        lengths = np.array([max(1, u.codes.shape[0]) for u in self.train], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.recipe = recipe

    def batch(self, step: int) -> PriorBatch:
        r = self.recipe
        rng = np.random.default_rng([r.train.seed, step])
        b, s = r.train.batch_size, r.segment_tokens
        codes = np.zeros((b, s), dtype=np.int64)
        mask = np.zeros((b, s), dtype=bool)
        speakers = np.empty(b, dtype=np.int64)
        picks = rng.choice(len(self.train), size=b, p=self.weights)
        for i, index in enumerate(picks):
            utt = self.train[int(index)]
            n = utt.codes.shape[0]
            start = int(rng.integers(0, max(1, n - s + 1)))
            piece = utt.codes[start : start + s]
            codes[i, : piece.shape[0]] = piece
            mask[i, : piece.shape[0]] = True
            mask[i, 0] = start == 0 and n > 0
            drop = rng.random() < r.speaker_dropout
            speakers[i] = UNKNOWN_SPEAKER if drop else utt.speaker
        return PriorBatch(torch.from_numpy(codes), torch.from_numpy(speakers), torch.from_numpy(mask))

    def iterate(self, start: int, total: int) -> Iterator[PriorBatch]:
        for step in range(start, total):
            yield self.batch(step)


def masked_nats(logits: Tensor, codes: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy (nats per token) of ``logits [B, T, K]`` for ``codes [B, T]`` where ``mask``."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), codes, reduction="none")
    return (nll * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def float_bits(model: CodePrior, utterances: Sequence[EncodedUtterance], unknown: bool = False) -> float:
    """Bits/token of the float prior on whole utterances (coded from their start)."""
    model.eval()
    device = model.embedding.weight.device
    total, count = 0.0, 0
    for utt in utterances:
        if not utt.codes.size:
            continue
        codes = torch.from_numpy(utt.codes)[None].to(device)
        speaker = torch.tensor([UNKNOWN_SPEAKER if unknown else utt.speaker], device=device)
        nll = F.cross_entropy(model(codes, speaker)[0].float(), codes[0], reduction="sum")
        total += float(nll)
        count += codes.shape[1]
    return total / LN2 / max(1, count)


def integer_bits(model: IntegerCodePrior, utterances: Sequence[EncodedUtterance]) -> float:
    """Bits/token an ideal entropy coder spends with the integer prior's weights."""
    total = sum(model.bits(u.codes, u.speaker) for u in utterances)
    count = sum(u.codes.shape[0] for u in utterances)
    return total / max(1, count)


def unigram_bits(train: Sequence[EncodedUtterance], test: Sequence[EncodedUtterance], k: int) -> float:
    """Bits/token on ``test`` of the code frequencies in ``train`` (add-one smoothed): the baseline."""
    counts = np.ones(k)
    for u in train:
        counts += np.bincount(u.codes, minlength=k)
    logp = np.log2(counts / counts.sum())
    total = sum(-logp[u.codes].sum() for u in test)
    return float(total) / max(1, sum(u.codes.shape[0] for u in test))


# --------------------------------------------------------------------------------------------
# Training


@dataclass(eq=False)
class PriorTask:
    """The prior as a :class:`vqspeech.loop.Task`."""

    model: CodePrior
    recipe: PriorRecipe
    crops: CropBatches
    valid: list[EncodedUtterance]
    speakers: list[dict[str, Any]]
    model_fingerprint: str
    device: torch.device

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        return self.crops.iterate(start_step, total_steps)

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        codes, speaker, mask = (t.to(self.device, non_blocking=True) for t in batch)
        loss = masked_nats(net(codes, speaker), codes, mask)
        return loss, {"bits_per_token": loss.detach() / LN2}

    def items(self, batch: Any) -> int:
        return int(batch.mask.sum())  # tokens the loss counts

    def evaluate(self, step: int) -> dict[str, float]:
        if not self.valid:
            return {}
        values = {
            "bits_per_token": float_bits(self.model, self.valid),
            "bits_per_token_unknown_speaker": float_bits(self.model, self.valid, unknown=True),
        }
        subset = self.valid[: self.recipe.valid_integer_utterances]
        if subset:
            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            integer = integer_bits(IntegerCodePrior.from_state_dict(self.recipe.model, state), subset)
            values["integer_bits_per_token"] = integer
            # what exact integer inference costs over the float model, on the same utterances
            values["integer_excess_bits"] = integer - float_bits(self.model, subset)
        return values

    def save(self, path: Path, training: dict[str, Any]) -> None:
        save_prior(path, self.model, self.recipe, self.speakers, self.model_fingerprint, training)


def train_prior(
    model_checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    recipe: PriorRecipe | None = None,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    cache_dir: str | Path | None = None,
) -> FitResult:
    """Train a prior over the codes that VQ-VAE ``model_checkpoint`` gives the corpus at ``data``.

    Writes ``out_dir/last.pt`` (kind ``"prior"``) and ``out_dir/metrics.csv``. ``steps`` is the
    *total* step count (default ``recipe.train.steps``); with ``resume`` the recipe comes from
    ``out_dir/last.pt`` (which must belong to the same VQ-VAE) and ``recipe`` is ignored.
    ``codebook_size`` and ``n_speakers`` always come from the VQ-VAE. Single process (no DDP).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    vq = load_checkpoint(model_checkpoint)
    fingerprint = vq.fingerprint
    with claim_run(out_dir, resume):
        previous: PriorCheckpoint | None = None
        if resume:
            previous = load_prior(out_dir / LAST)
            previous.check_model(fingerprint, model_checkpoint)
            recipe = previous.recipe
        recipe = recipe or PriorRecipe()
        total_steps = steps if steps is not None else recipe.train.steps
        model_config = dataclasses.replace(
            recipe.model, codebook_size=vq.recipe.model.quantizer.codebook_size, n_speakers=len(vq.speakers)
        )
        train_config: TrainConfig = dataclasses.replace(recipe.train, steps=total_steps)
        recipe = check_prior_recipe(dataclasses.replace(recipe, model=model_config, train=train_config))

        corpus = open_corpus(data, sample_rate=vq.recipe.model.sample_rate, cache_dir=cache_dir)
        split = split_for(corpus, vq.recipe)
        vqvae = vq.build_model(dev)
        if callback is not None:
            callback.on_message(f"encoding {len(corpus)} utterances with {model_checkpoint}")
        train = encode_utterances(vqvae, split.train, vq.speaker_names, dev)
        valid = encode_utterances(vqvae, split.valid, vq.speaker_names, dev)
        del vqvae

        torch.manual_seed(recipe.train.seed)
        prior = CodePrior(recipe.model).to(dev)
        if previous is not None:
            prior.load_state_dict(previous.state)
        task = PriorTask(prior, recipe, CropBatches(train, recipe), valid, vq.speakers, fingerprint, dev)
        return fit(task, out_dir, recipe.train, training=training_of(previous), device=dev, callback=callback)


# --------------------------------------------------------------------------------------------
# Sampling speech


class SampledSpeech(NamedTuple):
    """Speech the prior made up: ``audio`` float32 ``[T]`` at ``sample_rate`` Hz, the codes ``[F]``
    it was decoded from, and the voice it was decoded in."""

    audio: NDArray[np.float32]
    sample_rate: int
    codes: NDArray[np.int64]
    speaker: str


def sample_speech(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path,
    speaker: str | None,
    seconds: float,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    device: str = "auto",
) -> SampledSpeech:
    """``seconds`` of new speech: codes sampled from the prior, decoded by the VQ-VAE.

    ``speaker`` conditions the prior and is the decoder's voice; None samples the prior
    unconditioned and decodes in a voice of the table picked by ``seed``. ``temperature``
    divides the prior's logits (0: most likely code each step; the decoder itself samples at
    its default temperature). Same arguments and seed -> the same audio on the same machine.
    CheckpointError when the prior was trained for another model.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"--seconds must be a positive number, got {seconds}")
    if seconds > MAX_SAMPLE_SECONDS:
        raise ConfigError(
            f"--seconds {seconds:g} is over the {MAX_SAMPLE_SECONDS} s that one sample may take (the codes "
            "and the audio are held in memory); sample several files"
        )
    if not temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature}")
    codec = Codec.load(model_checkpoint, device)
    prior = load_prior(prior_checkpoint)
    prior.check_model(codec.fingerprint, model_checkpoint)
    speaker_id = prior.speaker_index(speaker)
    if speaker is not None:
        codec.speaker_id(speaker)
        voice = speaker
    else:
        names = codec.speaker_names
        voice = names[int(np.random.default_rng(seed).integers(len(names)))]
    num_samples = round(seconds * codec.sample_rate)
    n_tokens = -(-num_samples // codec.hop_length)
    generator = torch.Generator(codec.device).manual_seed(seed)
    net = prior.build(codec.device)
    codes = net.sample(torch.tensor([speaker_id], device=codec.device), n_tokens, temperature, generator)
    array = codes.cpu().numpy().astype(np.int64)
    tokens = codec.tokens(array, num_samples, voice)
    audio = np.concatenate(list(decode_tokens(codec, tokens, voice, seed=seed)))
    return SampledSpeech(audio.astype(np.float32), codec.sample_rate, array[0], voice)


def sample_file(
    model_checkpoint: str | Path,
    prior_checkpoint: str | Path,
    output: str | Path,
    speaker: str | None,
    seconds: float,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    device: str = "auto",
    overwrite: bool = False,
) -> SampledSpeech:
    """:func:`sample_speech`, written atomically to audio file ``output`` (format from its extension)."""
    target = Path(output)
    refuse_existing(target, overwrite)
    result = sample_speech(
        model_checkpoint,
        prior_checkpoint,
        speaker,
        seconds,
        seed=seed,
        temperature=temperature,
        device=device,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    save_audio(target, result.audio, result.sample_rate)
    return result
