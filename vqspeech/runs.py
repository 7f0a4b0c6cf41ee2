"""The one place that tells speech from vision for the commands that take either.

``vqspeech train``, ``prior train``, ``sample`` and ``eval`` accept a speech or an image/video
recipe or checkpoint (docs/vision.md). Each function here looks at what it was given, checks
what that modality needs (speech: ``--data``; speech sampling: ``--seconds``) and calls the
speech or the vision library function, so the commands stay a parameter list and one call.
The vision modules are imported only when a vision run is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vqspeech.bundled import bundled_model_path, names_bundled
from vqspeech.config import load_recipe
from vqspeech.errors import ConfigError
from vqspeech.evaluation import EvalReport, evaluate_model
from vqspeech.loop import FitResult, TrainCallback
from vqspeech.prior import prior_recipe, sample_file, train_prior
from vqspeech.train import TrainResult, train
from vqspeech.vision import is_vision_recipe, load_vision_recipe
from vqspeech.vision.checkpoints import is_vision_checkpoint

if TYPE_CHECKING:
    from vqspeech.vision.sample import BitsPerDim


def _need_data(data: Path | None, message: str) -> Path:
    if data is None:
        raise ConfigError(message)
    return data


def train_run(
    recipe: str,
    data: Path | None,
    out: Path,
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    cache_dir: Path | None = None,
    init: Path | None = None,
) -> TrainResult | FitResult:
    """Train a speech recipe (needs ``data``) or a vision one (cifar10 needs ``data``).

    ``init``: a speech checkpoint to start from (:func:`vqspeech.train.train`); not for vision.
    """
    if is_vision_recipe(recipe):
        if init is not None:
            raise ConfigError("--init is for speech recipes; vision runs start fresh or --resume")
        from vqspeech.vision.train import train_vision  # only when asked for

        vision = load_vision_recipe(recipe, overrides)
        return train_vision(vision, data, out, steps=steps, resume=resume, device=device, callback=callback)
    speech = load_recipe(recipe, overrides)  # a missing recipe file is named first
    if names_bundled(init):
        init = bundled_model_path()
    corpus = _need_data(data, "speech recipes need --data: a VCTK root, a speaker folder or a manifest")
    return train(
        speech,
        corpus,
        out,
        steps=steps,
        resume=resume,
        device=device,
        callback=callback,
        cache_dir=cache_dir,
        init=init,
    )


def train_prior_run(
    model: Path,
    data: Path | None,
    out: Path,
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    device: str = "auto",
    callback: TrainCallback | None = None,
    cache_dir: Path | None = None,
) -> FitResult:
    """Train a prior over ``model``'s codes: a speech prior (needs ``data``) or a vision one."""
    if is_vision_checkpoint(model):
        from vqspeech.vision.train import train_vision_prior  # only when asked for

        return train_vision_prior(
            model,
            data,
            out,
            steps=steps,
            resume=resume,
            device=device,
            callback=callback,
            overrides=overrides,
        )
    corpus = _need_data(data, "a speech prior needs --data: the corpus whose codes it learns")
    return train_prior(
        model,
        corpus,
        out,
        recipe=prior_recipe(overrides),
        steps=steps,
        resume=resume,
        device=device,
        callback=callback,
        cache_dir=cache_dir,
    )


class Sampled(NamedTuple):
    """What :func:`sample_run` wrote: the files, and a one-line description for the user."""

    files: list[Path]
    summary: str


def sample_run(
    model: Path,
    prior: Path,
    output: Path,
    *,
    seconds: float | None = None,
    speaker: str | None = None,
    seed: int = 0,
    count: int = 16,
    label: int | None = None,
    frames: int = 16,
    temperature: float = 1.0,
    overwrite: bool = False,
    device: str = "auto",
) -> Sampled:
    """Speech (``seconds`` of it, in ``speaker``'s voice) or an image grid / video rollout."""
    if is_vision_checkpoint(model):
        from vqspeech.vision.sample import sample_to_files  # only when asked for

        made = sample_to_files(
            model,
            prior,
            output,
            count=count,
            frames=frames,
            label=label,
            seed=seed,
            temperature=temperature,
            device=device,
        )
        return Sampled(made.files, made.summary)
    if seconds is None:
        raise ConfigError("speech sampling needs --seconds: how long the speech should be")
    result = sample_file(
        model,
        prior,
        output,
        speaker,
        seconds,
        seed=seed,
        temperature=temperature,
        device=device,
        overwrite=overwrite,
    )
    return Sampled([output], f"{result.audio.shape[0] / result.sample_rate:.2f} s as {result.speaker}")


def evaluate_run(
    model: Path,
    data: Path | None,
    *,
    prior: Path | None = None,
    decoder: str | None = None,
    max_utterances: int = 16,
    conversions: int = 2,
    per_speaker: int = 20,
    seed: int = 0,
    audio_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    device: str = "auto",
) -> EvalReport | BitsPerDim:
    """Speech: :func:`~vqspeech.evaluation.evaluate_model` on ``data`` (needed). Image models:
    bits/dim (:func:`~vqspeech.vision.sample.bits_per_dim`, with ``prior`` or a uniform one)."""
    if is_vision_checkpoint(model):
        from vqspeech.vision.sample import bits_per_dim  # only when asked for

        return bits_per_dim(model, prior, data, device=device)
    corpus = _need_data(data, "speech models need --data: the corpus the model was trained on")
    return evaluate_model(
        model,
        corpus,
        decoder=decoder,
        max_utterances=max_utterances,
        conversions_per_utterance=conversions,
        seed=seed,
        audio_dir=audio_dir,
        progress=progress,
        utterances_per_speaker=per_speaker,
        device=device,
    )
