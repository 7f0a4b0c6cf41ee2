"""Training the speech VQ-VAE: the :class:`vqspeech.loop.Task` behind ``vqspeech train``.

The loop itself (lr schedule, autocast, clipping, logging, checkpoints, SIGINT, resume) is
:func:`vqspeech.loop.fit`, shared with the prior and the vision recipes. This module supplies
what is speech-specific: the corpus and its step batches (the batch of step ``s`` is a pure
function of ``(seed, s, rank)``, see :class:`vqspeech.data.batches.StepBatches`), the VQ-VAE's
loss terms (:mod:`vqspeech.speech_loss`, importable without the audio I/O stack), the held-out
evaluation (teacher-forced reconstruction loss, code usage, sample WAVs) and the checkpoint
with its recipe and speaker table.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqspeech.audio import save_audio
from vqspeech.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vqspeech.config import ModelConfig, Recipe, SpectrogramConfig
from vqspeech.data.batches import StepBatches, validation_batches
from vqspeech.data.corpus import open_corpus
from vqspeech.device import resolve_device
from vqspeech.errors import ConfigError, DataError
from vqspeech.loop import (
    EvalMetrics,
    FitResult,
    SilentCallback,
    StepMetrics,
    TrainCallback,
    corpus_report,
    fit,
    init_distributed,
    lr_at,
    resume_note,
    training_of,
)
from vqspeech.model import VQVAE
from vqspeech.plots import save_spectrograms
from vqspeech.recipe_io import to_dict
from vqspeech.runfolder import LAST, claim_run
from vqspeech.speech_loss import encoder_hears, speech_loss

__all__ = [
    "LAST",
    "EvalMetrics",
    "SilentCallback",
    "SpeechEval",
    "StepMetrics",
    "TrainCallback",
    "TrainResult",
    "encoder_hears",
    "evaluate",
    "lr_at",
    "train",
    "write_samples",
]


@dataclass(frozen=True)
class SpeechEval:
    """Held-out figures of the speech VQ-VAE (logged as ``valid/<field>``)."""

    step: int
    valid_loss: float  # reconstruction loss on held-out segments (the decoder's, in nats)
    valid_perplexity: float
    codes_used: int  # distinct codes over the validation set
    dead_codes: int  # codes unused for dead_code_steps steps (or never used, if restarts are off)

    def values(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items() if k != "step"}


@dataclass(frozen=True)
class TrainResult:
    step: int
    checkpoint: Path
    interrupted: bool
    last: StepMetrics | None
    last_eval: EvalMetrics | None
    model: VQVAE  # this rank's model (unwrapped from DDP), in train mode


@torch.no_grad()
def evaluate(
    model: VQVAE, batches: list[tuple[Tensor, Tensor]], device: torch.device, step: int
) -> SpeechEval:
    """Teacher-forced reconstruction loss and code usage on held-out utterances."""
    model.eval()
    total, count = 0.0, 0
    usage = torch.zeros(model.config.quantizer.codebook_size)
    for audio, speaker in batches:
        out = model(audio.to(device), speaker.to(device))
        total += float(out.reconstruction_loss) * audio.numel()
        count += audio.numel()
        usage += torch.bincount(out.codes.flatten().cpu(), minlength=usage.numel()).float()
    model.train()
    p = usage / usage.sum().clamp(min=1)
    perplexity = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
    stats = model.quantizer.usage_stats()
    return SpeechEval(
        step=step,
        valid_loss=total / max(1, count),
        valid_perplexity=perplexity,
        codes_used=int((usage > 0).sum()),
        dead_codes=int(stats.dead),
    )


@torch.no_grad()
def write_samples(model: VQVAE, batch: tuple[Tensor, Tensor], folder: Path, seed: int) -> None:
    """Reconstruct one held-out segment; write original/reconstruction WAVs and a spectrogram PNG."""
    device = next(model.parameters()).device
    audio, speaker = batch[0][:1].to(device), batch[1][:1].to(device)
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    reconstruction = model.decode(model.encode(audio), speaker, generator=generator)
    model.train()
    sample_rate = model.config.sample_rate
    waves = {"original": audio[0].cpu().numpy(), "reconstruction": reconstruction[0].cpu().numpy()}
    folder.mkdir(parents=True, exist_ok=True)
    for name, wave in waves.items():
        save_audio(folder / f"{name}.wav", wave, sample_rate)
    with contextlib.suppress(ImportError):  # matplotlib is the optional [train] extra
        save_spectrograms(folder / "spectrogram.png", waves, sample_rate)


@dataclass(eq=False)
class SpeechTask:
    """The speech VQ-VAE as a :class:`vqspeech.loop.Task`.

    Training batches may be augmented (``data.augment``, issue 17): with ``target: degraded``
    the model simply reconstructs its degraded input; with ``target: clean`` the encoder hears
    the degraded crop (:func:`encoder_hears`) and the decoders reconstruct the clean one.
    Validation is always on clean, unaugmented audio.
    """

    model: VQVAE
    recipe: Recipe
    speakers: list[dict[str, Any]]
    step_batches: StepBatches
    valid: list[tuple[Tensor, Tensor]]
    out_dir: Path
    device: torch.device

    def batches(self, start_step: int, total_steps: int) -> Iterator[Any]:
        return self.step_batches.iterate(start_step, total_steps)

    def loss(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        return speech_loss(
            net,
            batch,
            self.device,
            reference=bool(self.step_batches.reference_length),
            encoder_input=self.step_batches.encoder_input,
        )

    def items(self, batch: Any) -> int:
        return int(batch[0].numel())  # audio samples

    def evaluate(self, step: int) -> dict[str, float]:
        if not self.valid:
            return {}
        metrics = evaluate(self.model, self.valid, self.device, step)
        if self.recipe.train.write_samples:
            write_samples(
                self.model,
                self.valid[0],
                self.out_dir / "samples" / f"step{step:07d}",
                self.recipe.train.seed,
            )
        return metrics.values()

    def save(self, path: Path, training: dict[str, Any]) -> None:
        save_checkpoint(path, self.model, self.recipe, self.speakers, training)


def init_weights(model: VQVAE, source: Checkpoint, speakers: list[dict[str, Any]]) -> int:
    """Load ``source``'s weights into ``model`` (a fresh model of the new run); the speakers kept.

    The model settings must be the checkpoint's (``n_speakers`` and :data:`INIT_MAY_CHANGE`
    aside): a ConfigError names the first that differ. The speaker table is matched by name: a
    speaker of the new corpus that ``source`` knows gets its row, a new one keeps its fresh row.
    Everything else, the quantiser's codebook and k-means state included, is copied, so
    training continues from the checkpoint's codes rather than re-initialising them. A
    spectrogram decoder given a pitch head (``vocoder: harmonic``) keeps the checkpoint's
    weights and starts the head fresh; one that drops it drops the head's weights. Returns the
    rows copied.
    """
    check_same_model(model.config, source)
    mine = model.state_dict()
    # the pitch head: the checkpoint's where both have one, else this model's (fresh, or none)
    same_head = model.config.spectrogram.harmonic == source.recipe.model.spectrogram.harmonic
    heads = source.model_state if same_head else mine
    state = {k: v for k, v in source.model_state.items() if not k.startswith(PITCH_HEAD_KEYS)}
    state.update({k: v for k, v in heads.items() if k.startswith(PITCH_HEAD_KEYS)})
    key = "speaker_embedding.weight"
    rows = mine[key].clone()
    old = {name: i for i, name in enumerate(source.speaker_names)}
    shared = 0
    for i, speaker in enumerate(speakers):
        j = old.get(str(speaker["name"]))
        if j is not None:
            rows[i] = state[key][j]
            shared += 1
    state[key] = rows
    model.load_state_dict(state)
    return shared


#: Model settings that ``--init`` lets a run change from its checkpoint's: the spectrogram
#: decoder's vocoder (a pitch head is added fresh or dropped), decode-time settings and where
#: the pitch loss's gradient goes.
INIT_MAY_CHANGE = ("vocoder", "harmonic_max_hz", "phase_init", "griffin_lim_iters", "pitch_detach")
#: State-dict key prefix of the spectrogram decoder's pitch head.
PITCH_HEAD_KEYS = "decoders.spectrogram.pitch."


def check_same_model(config: ModelConfig, source: Checkpoint) -> None:
    """ConfigError unless ``source`` was trained with model settings ``config`` (``n_speakers`` and
    :data:`INIT_MAY_CHANGE` aside)."""

    def comparable(model: ModelConfig) -> dict[str, Any]:
        spectrogram = dataclasses.replace(
            model.spectrogram, **{name: getattr(SpectrogramConfig(), name) for name in INIT_MAY_CHANGE}
        )
        return to_dict(dataclasses.replace(model, n_speakers=0, spectrogram=spectrogram))

    mine, theirs = comparable(config), comparable(source.recipe.model)
    if mine != theirs:
        differ = _first_differences(mine, theirs)
        raise ConfigError(
            f"{source.path}: its model settings differ from the recipe's ({differ}); "
            "--init needs the same model (train with the checkpoint's recipe, or drop --init)"
        )


def _first_differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "", limit: int = 3) -> str:
    """``a.b: X vs Y`` for the first ``limit`` leaves where two config dicts differ (recipe vs checkpoint)."""
    out: list[str] = []
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name), theirs.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _first_differences(a, b, f"{prefix}{name}.", limit - len(out))
            out += [inner] if inner else []
        elif a != b:
            out.append(f"{prefix}{name}: {a!r} vs {b!r}")
        if len(out) >= limit:
            break
    return "; ".join(out)


def train(
    recipe: Recipe,
    data: str | Path,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    cache_dir: str | Path | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train ``recipe`` on the corpus at ``data``, writing checkpoints and logs into ``out_dir``.

    ``steps`` is the *total* step count (so ``resume=True, steps=2000`` extends a finished
    run); it defaults to ``recipe.train.steps``. With ``resume`` the recipe and speaker table
    come from ``out_dir/last.pt`` and the ``recipe`` argument is ignored.

    ``init``: a checkpoint (or run folder) whose weights the new run starts from, with a fresh
    optimiser and schedule (fine-tuning, e.g. the bundled model on your own corpus); see
    :func:`init_weights`. Not with ``resume``.
    """
    if init is not None and resume:
        raise ConfigError(
            "--init starts a new run from a checkpoint's weights; --resume continues one: use one of them"
        )
    source = load_checkpoint(init) if init is not None else None
    if source is not None:
        check_same_model(recipe.model, source)  # before the run folder is made
    out_dir = Path(out_dir)
    ddp = init_distributed(device)
    dev = resolve_device(device, ddp.local_rank)

    with claim_run(out_dir, resume, main=ddp.is_main):
        previous: Checkpoint | None = None
        if resume:
            previous = load_checkpoint(out_dir / LAST)
            note = resume_note(to_dict(recipe), to_dict(previous.recipe), out_dir / LAST)
            if note and callback is not None and ddp.is_main:
                callback.on_message(note)
            recipe = previous.recipe
        total_steps = steps if steps is not None else recipe.train.steps
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=total_steps))

        corpus = open_corpus(data, cache_dir=cache_dir)
        if callback is not None and ddp.is_main:
            for line in corpus_report(corpus.warnings, len(corpus)):
                callback.on_message(line)
        speakers = corpus.speaker_table()
        if previous is not None and [s["name"] for s in previous.speakers] != [s["name"] for s in speakers]:
            raise DataError(f"{data} has other speakers than the run in {out_dir}; resume with the same data")
        recipe = dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, n_speakers=len(speakers))
        )

        torch.manual_seed(recipe.train.seed)
        model = VQVAE(recipe.model).to(dev)
        if previous is not None:
            model.load_state_dict(previous.model_state)
        elif source is not None:
            shared = init_weights(model, source, speakers)
            if callback is not None and ddp.is_main:
                callback.on_message(
                    f"starting from the weights of {init} ({shared} of {len(speakers)} speakers "
                    "share a name with its table and keep their rows)"
                )
        batches = StepBatches(corpus, recipe, rank=ddp.rank, world_size=ddp.world_size)
        valid = validation_batches(corpus, recipe, recipe.data.valid_max_segments) if ddp.is_main else []
        task = SpeechTask(model, recipe, speakers, batches, valid, out_dir, dev)
        try:
            result: FitResult = fit(
                task,
                out_dir,
                recipe.train,
                training=training_of(previous),
                device=dev,
                callback=callback,
                distributed=ddp,
            )
        finally:
            ddp.close()
        return TrainResult(
            step=result.step,
            checkpoint=result.checkpoint,
            interrupted=result.interrupted,
            last=result.last,
            last_eval=result.last_eval,
            model=model,
        )
