"""The model shipped inside the package (issue 17), its card, and the export that makes both.

``vqspeech encode/decode/convert/speakers`` without ``--model``, and ``vqspeech info`` without a
target, use :func:`bundled_model_path`: ``vqspeech/models/default.pt``, installed as package
data. It is an ordinary speech VQ-VAE checkpoint and is loaded through the same
:func:`~vqspeech.checkpoint.load_checkpoint` as any other (weights only, content digest
verified, non-finite weights refused): being shipped earns it no trust. There is no environment
variable or config file that moves it; pass ``--model`` to use another model.

Beside it, ``vqspeech/models/default.json`` is its card (:func:`bundled_card`), plain JSON::

    {"summary": "what the model is, one or two sentences",
     "recipe": "recipes/speech/bundled.yaml",
     "commands": ["vqspeech data synth ...", "vqspeech train ...", "vqspeech export ..."],
     "training": {"steps": 3000, "minutes": 52.0, ...},
     "figures": {"held-out engines STOI": 0.81, ...},
     "good_at": "short text", "bad_at": "short text",
     "fingerprint": "16 hex digits: Checkpoint.fingerprint of default.pt"}

:func:`export_model` makes both from a training run: the weights, recipe and speaker table of
its ``last.pt`` without the optimizer and RNG state (only the step is kept, for ``info``), and
the card completed with the exported file's fingerprint and step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqspeech.checkpoint import (
    VQVAE_KIND,
    Checkpoint,
    load_checkpoint,
    load_payload,
    resolve_checkpoint_path,
    save_checkpoint,
)
from vqspeech.config import Recipe, recipe_from_dict
from vqspeech.errors import CheckpointError, ConfigError, OutputError
from vqspeech.files import write_text_atomic
from vqspeech.prior_checkpoint import PRIOR_KIND, load_prior, save_prior
from vqspeech.recipe_io import merge, parse_override, to_dict

#: Where the shipped model and its card live inside the installed package.
MODELS_DIR = Path(__file__).resolve().parent / "models"
BUNDLED_MODEL = MODELS_DIR / "default.pt"
#: The prior over the shipped model's codes, for entropy-coded token files (``--prior bundled``);
#: optional: an install without it encodes and decodes plain files as before.
BUNDLED_PRIOR = MODELS_DIR / "default-prior.pt"
#: What ``--init`` and ``--prior`` accept for the shipped files (unless a path of that name exists).
BUNDLED_NAME = "bundled"
#: The card's file: the model file's name with this suffix.
CARD_SUFFIX = ".json"
#: Card fields the author writes (export fills in ``fingerprint`` and ``training.steps``).
CARD_TEXT_FIELDS = ("summary", "recipe", "good_at", "bad_at")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def bundled_model_path() -> Path:
    """The shipped model's file; :class:`CheckpointError` when this install has none."""
    if not BUNDLED_MODEL.is_file():
        raise CheckpointError(
            "no model is bundled with this install; pass --model CKPT (a .pt from vqspeech train, "
            "or its run folder)"
        )
    return BUNDLED_MODEL


def model_or_bundled(model: str | os.PathLike[str] | None) -> Path:
    """``model`` when given, else :func:`bundled_model_path` (what every ``--model`` defaults to)."""
    return Path(model) if model is not None else bundled_model_path()


def bundled_prior_path() -> Path:
    """The shipped prior's file; :class:`CheckpointError` when this install has none."""
    if not BUNDLED_PRIOR.is_file():
        raise CheckpointError(
            "no prior is bundled with this install; pass --prior PRIOR (a run folder or .pt from "
            "vqspeech prior train)"
        )
    return BUNDLED_PRIOR


def names_bundled(path: str | os.PathLike[str] | None) -> bool:
    """True for the word ``bundled`` given where a file is expected (and no such file exists)."""
    return path is not None and str(path) == BUNDLED_NAME and not Path(path).exists()


def prior_or_bundled(
    prior: str | os.PathLike[str] | None, model: str | os.PathLike[str] | None, *, implicit: bool = False
) -> Path | None:
    """The prior a command uses: ``--prior bundled`` is the shipped prior, a path is itself.

    With ``implicit`` (decoding) and neither ``--prior`` nor ``--model``, the shipped prior where
    one ships, so files encoded with ``--prior bundled`` decode without flags (plain files
    ignore it); otherwise None: encoding never entropy-codes unless asked to.
    """
    if names_bundled(prior):
        return bundled_prior_path()
    if prior is not None:
        return Path(prior)
    if implicit and model is None:
        try:
            return bundled_prior_path()
        except CheckpointError:  # none shipped: coded files then ask for --prior themselves
            return None
    return None


def card_path(model_path: str | os.PathLike[str]) -> Path:
    """The card that goes with model file ``model_path``: same name, ``.json``."""
    return Path(model_path).with_suffix(CARD_SUFFIX)


def is_bundled(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (a file or a run folder) is the shipped model's file."""
    try:
        shipped = bundled_model_path()
        return resolve_checkpoint_path(Path(path)).samefile(shipped)
    except (CheckpointError, OSError):
        return False


def bundled_card() -> dict[str, Any]:
    """The shipped model's card, checked (:func:`check_card`, with its fingerprint).

    :class:`CheckpointError` when there is no bundled model, or its card is missing or invalid:
    a model shipped without what it is good and bad at is a packaging mistake.
    """
    path = card_path(bundled_model_path())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(
            f"the bundled model has no readable card {path} ({exc.strerror or exc}); "
            "it is written by vqspeech export --card"
        ) from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the bundled model's card is not JSON ({exc})") from None
    try:
        return check_card(card, complete=True)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def check_card(card: Any, complete: bool = False) -> dict[str, Any]:
    """``card`` if it has every field the module docstring lists, with the right types.

    ``complete=False`` (a card handed to :func:`export_model`) does not need the fields export
    fills in: ``fingerprint`` and ``training.steps``. :class:`ConfigError` names the first
    problem.
    """
    if not isinstance(card, dict):
        raise ConfigError("a model card is a JSON object")
    for name in CARD_TEXT_FIELDS:
        if not isinstance(card.get(name), str) or not card[name].strip():
            raise ConfigError(f"the model card needs {name!r}: a non-empty string")
    commands = card.get("commands")
    if not isinstance(commands, list) or not commands or not all(isinstance(c, str) and c for c in commands):
        raise ConfigError("the model card needs 'commands': the list of commands that made the model")
    training = card.get("training")
    if not isinstance(training, dict) or not _is_number(training.get("minutes")):
        raise ConfigError("the model card needs 'training': {\"minutes\": <training time>, ...}")
    figures = card.get("figures")
    if (
        not isinstance(figures, dict)
        or not figures
        or not all(_is_number(v) or isinstance(v, str) for v in figures.values())
    ):
        raise ConfigError(
            "the model card needs 'figures': the measured figures, {\"name\": number or text, ...}"
        )
    if complete:
        if not isinstance(training.get("steps"), int) or isinstance(training.get("steps"), bool):
            raise ConfigError("the model card needs 'training.steps' (written by vqspeech export)")
        if not isinstance(card.get("fingerprint"), str) or not _FINGERPRINT.fullmatch(card["fingerprint"]):
            raise ConfigError(
                "the model card needs 'fingerprint', 16 hex digits (written by vqspeech export)"
            )
    return card


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Export:
    """What :func:`export_model` wrote. Sizes in bytes."""

    path: Path
    size: int
    source: Path  # the checkpoint file it was made from
    source_size: int
    fingerprint: str
    step: int | None
    card: Path | None  # the completed card, when one was given


def export_model(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    card: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    decode_settings: Sequence[str] = (),
) -> Export:
    """Write a slim copy of checkpoint ``source`` (a file, or a run folder for its ``last.pt``) to ``out``.

    The copy holds the weights, recipe and speaker table (same fingerprint, so it encodes and
    decodes exactly as ``source``) and, of the training state, only the step; it is written by
    :func:`~vqspeech.checkpoint.save_checkpoint` (atomic, fresh content digest). With ``card``
    (a JSON file, see the module docstring), the card is checked, completed with the copy's
    fingerprint and step (the card's own ``training.steps`` is used only for a checkpoint that
    records none), and written beside ``out`` as ``OUT.json``.

    ``decode_settings``: ``KEY=VALUE`` overrides of settings that change only how the weights are
    decoded, never the weights (:data:`DECODE_SETTINGS`, e.g. ``model.spectrogram.phase_init=pghi``);
    the copy then gets its own fingerprint (token files name the model they decode with).

    A prior's checkpoint (``vqspeech prior train``) is copied the same way: weights, recipe,
    speaker table and the fingerprint of the model whose codes it models, and the step.

    ``source`` is read with every check :func:`load_checkpoint` makes. Existing outputs are kept
    (:class:`OutputError`) unless ``overwrite``; ``out`` may never be ``source`` itself.
    """
    src = resolve_checkpoint_path(Path(source))
    out = Path(out)
    card_out = card_path(out) if card is not None else None
    if out.exists() and out.resolve() == src.resolve():
        raise OutputError(f"{out} is the checkpoint being exported; write the export to another file")
    for target in (out, card_out):
        if target is not None and target.exists() and not overwrite:
            raise OutputError(f"{target} exists; pass --overwrite to replace it")
    if load_payload(src, (VQVAE_KIND, PRIOR_KIND)).get("kind") == PRIOR_KIND:
        if card is not None or decode_settings:
            raise ConfigError("--card and --set are for speech models; a prior is exported as it is")
        return _export_prior(src, out)
    card_data = _read_card(card) if card is not None else None
    ckpt = load_checkpoint(src)
    if decode_settings:
        ckpt = dataclasses.replace(ckpt, recipe=_with_decode_settings(ckpt, decode_settings))
    step = _step(ckpt)
    fingerprint = ckpt.fingerprint
    if card_data is not None:
        card_data["fingerprint"] = fingerprint
        if step is not None:
            card_data["training"] = {**card_data["training"], "steps": step}
        elif "steps" not in card_data["training"]:
            raise ConfigError(f"{src} records no training step; give training.steps in the card")
        check_card(card_data, complete=True)  # before anything is written
    training = {"step": step} if step is not None else None
    save_checkpoint(out, ckpt.build_model(), ckpt.recipe, ckpt.speakers, training)
    if card_data is not None and card_out is not None:
        write_text_atomic(card_out, json.dumps(card_data, indent=2, ensure_ascii=False) + "\n", "model card")
    return Export(out, out.stat().st_size, src, src.stat().st_size, fingerprint, step, card_out)


#: Settings :func:`export_model` may change: read only when decoding, so the weights stay valid.
DECODE_SETTINGS = (
    "model.spectrogram.phase_init",
    "model.spectrogram.griffin_lim_iters",
    "model.spectrogram.harmonic_max_hz",
)


def _with_decode_settings(ckpt: Checkpoint, settings: Sequence[str]) -> Recipe:
    """``ckpt``'s recipe with ``KEY=VALUE`` decode-time overrides applied and validated."""
    data = to_dict(ckpt.recipe)
    for text in settings:
        key = text.partition("=")[0].strip()
        if key not in DECODE_SETTINGS:
            raise ConfigError(
                f"export --set changes only decode-time settings ({', '.join(DECODE_SETTINGS)}); got {key!r}"
            )
        data = merge(data, parse_override(text))
    return recipe_from_dict(data)


def _read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the model card {path} ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: the model card is not JSON ({exc})") from None
    try:
        return check_card(card)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _export_prior(src: Path, out: Path) -> Export:
    prior = load_prior(src)
    step = prior.training.get("step")
    step = int(step) if step is not None else None
    training = {"step": step} if step is not None else None
    save_prior(out, prior.build(), prior.recipe, prior.speakers, prior.model_fingerprint, training)
    return Export(out, out.stat().st_size, src, src.stat().st_size, prior.fingerprint, step, None)


def _step(ckpt: Checkpoint) -> int | None:
    step = ckpt.training.get("step")
    return int(step) if step is not None else None
