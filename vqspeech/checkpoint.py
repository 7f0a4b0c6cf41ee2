"""Checkpoints: model weights + resolved recipe + speaker table (+ optional training state).

A checkpoint is a ``torch.save`` archive holding only tensors and plain Python data (dicts,
lists, str, int, float, bool), so it loads with ``torch.load(weights_only=True)``: no pickled
classes, nothing executed on load. Layout::

    {"format": "vqspeech-checkpoint", "version": 1, "vqspeech_version": "0.1.0",
     "kind": "vqvae", "recipe": {...to_dict(Recipe)...}, "speakers": [{"name": "p225", ...}, ...],
     "model": {state_dict}, "training": {...} | {}}

``speakers[i]`` is speaker id ``i``. Files are written to a temp file and renamed, so a
crash never leaves a half-written checkpoint behind.

Integrity (issue 18): :func:`save_payload` adds ``"content_sha256"``, a SHA-256 over every
tensor's bytes and every value of the payload (:func:`payload_digest`); :func:`load_payload`
recomputes it and refuses a file that does not match (flipped bytes inside a tensor are
otherwise invisible to ``torch.load``). Checkpoints written before the field existed load
without the check. A checkpoint whose weights (``"model"``) hold NaN or infinity is refused on
load: it came from a diverged run and would decode to silence.

The same container holds every kind of run this project trains: ``kind`` says which
(``"vqvae"``: the speech VQ-VAE, the default for files written before the field existed;
``"prior"``: a prior over speech codes; ``"image-vqvae"``, ``"image-prior"``,
``"video-vqvae"``, ``"video-prior"``: the vision recipes). :func:`save_payload` and
:func:`load_payload` are the kind-agnostic core; :func:`save_checkpoint` and
:func:`load_checkpoint` are the speech VQ-VAE's wrappers, and a loader handed a file of
another kind says what the file is instead of failing on a missing key.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqspeech import __version__
from vqspeech.config import Recipe, recipe_from_dict
from vqspeech.errors import CheckpointError, ConfigError
from vqspeech.files import write_atomic
from vqspeech.model import VQVAE
from vqspeech.recipe_io import to_dict
from vqspeech.runfolder import LAST

CHECKPOINT_FORMAT = "vqspeech-checkpoint"
CHECKPOINT_VERSION = 1
VQVAE_KIND = "vqvae"
DIGEST_KEY = "content_sha256"
#: ``torch.save`` writes a zip archive; other first bytes mean the file is something else.
_ZIP_MAGIC = b"PK\x03\x04"
#: First bytes of files people pass by mistake, for the message.
_KNOWN_MAGIC = {
    b"RIFF": "a WAV audio file",
    b"fLaC": "a FLAC audio file",
    b"OggS": "an Ogg audio file",
    b"VQSPTOK": "a vqspeech token file",
    b"\x89PNG": "a PNG picture",
}

#: What each kind of checkpoint is, for the message when a file of one kind is given where
#: another is expected.
KIND_DESCRIPTIONS = {
    "vqvae": "a speech VQ-VAE (use it as --model)",
    "prior": "a prior over speech codes (use it as --prior)",
    "image-vqvae": "an image VQ-VAE",
    "image-prior": "a PixelCNN prior over image codes",
    "video-vqvae": "a video-frame VQ-VAE",
    "video-prior": "an action-conditioned prior over video codes",
}


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``training`` is empty for inference-only exports."""

    recipe: Recipe
    speakers: list[dict[str, Any]]
    model_state: dict[str, Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def build_model(self, device: torch.device | str = "cpu") -> VQVAE:
        """The model with these weights, in eval mode, on ``device``."""
        model = VQVAE(self.recipe.model)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: weights do not fit the saved config ({first})") from None
        return model.to(device).eval()

    @property
    def speaker_names(self) -> list[str]:
        return [str(s["name"]) for s in self.speakers]

    def speaker_id(self, name: str) -> int:
        """Index of speaker ``name``; the error lists the known ones."""
        names = self.speaker_names
        if name not in names:
            raise CheckpointError(f"unknown speaker {name!r}; this model knows: {', '.join(names)}")
        return names.index(name)

    @property
    def fingerprint(self) -> str:
        """16 hex digits identifying config + weights (see :func:`model_fingerprint`)."""
        return model_fingerprint(self.recipe, self.model_state)


#: Config fields added after the first checkpoints were written, with the value that means
#: "as before": left out of the fingerprint at that value, so older checkpoints (and the token
#: files they made) keep their fingerprints, and filled in with it when an older checkpoint
#: lacks them, so a later change of the field's default cannot change an old model. Add every
#: new model field here.
_ADDED_FIELDS: dict[tuple[str, ...], Any] = {
    # before ("speaker_encoder",), which may delete the whole section
    ("speaker_encoder", "envelope"): False,
    ("speaker_encoder", "pitch"): False,
    ("speaker_encoder",): None,  # None: dropped whenever the encoder is off
    ("spectrogram", "frame_stride"): 1,
    ("spectrogram", "phase_init"): "random",
    ("spectrogram", "vocoder"): "griffin_lim",
    ("spectrogram", "harmonic_max_hz"): 4000.0,
    ("spectrogram", "pitch_detach"): False,
    ("code_adversary",): 0.0,
    ("families",): {},  # settings of registered decoder families; the built-in ones keep their own
}


def _as_before(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe with every :data:`_ADDED_FIELDS` entry it lacks set to its "as before" value.

    Sections that are missing altogether (``None`` entries) are left to their defaults, which
    mean "off". A recipe saved before ``data.augment`` existed gets it disabled, so a resumed
    run keeps training on the batches it began with. The input is not modified.
    """
    recipe = copy.deepcopy(saved)
    data = recipe.get("data")
    if isinstance(data, dict) and "augment" not in data:  # issue 17: runs before it trained unaugmented
        data["augment"] = {"enabled": False}
    model = recipe.get("model")
    if not isinstance(model, dict):
        return recipe
    for path, neutral in _ADDED_FIELDS.items():
        *parents, name = path
        node: Any = model
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if neutral is not None and isinstance(node, dict) and name not in node:
            node[name] = neutral
    return recipe


def model_fingerprint(recipe: Recipe, model_state: dict[str, Tensor]) -> str:
    """SHA-256 over the model config (canonical JSON) and every weight's bytes, first 16 hex.

    Token files record it so that decoding with a different model is refused. Fields added
    since (:data:`_ADDED_FIELDS`) at their "as before" value are left out, so checkpoints
    trained before them keep their fingerprints (and their token files keep decoding).
    """
    config = to_dict(recipe.model)
    for path, neutral in _ADDED_FIELDS.items():
        *parents, name = path
        node = config
        for key in parents:
            node = node[key]
        value = node.get(name)
        off = not value.get("enabled") if neutral is None and isinstance(value, dict) else value == neutral
        if name in node and off:
            del node[name]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(model_state):
        tensor = model_state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def non_finite_tensors(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an infinity."""
    return [
        str(name)
        for name, tensor in tensors.items()
        if isinstance(tensor, Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]


def _digest_update(digest: Any, value: Any) -> None:
    """Feed ``value`` (tensors and plain data, nested) to ``digest`` unambiguously."""
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _digest_update(digest, key)
            _digest_update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _digest_update(digest, item)
    else:
        text = repr(value)
        digest.update(f"{type(value).__name__}{len(text)}:{text}".encode())


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) over everything in a checkpoint payload except the digest itself."""
    digest = hashlib.sha256()
    _digest_update(digest, {k: v for k, v in payload.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _torch_save(payload: dict[str, Any], handle: Any) -> None:
    try:
        torch.save(payload, handle)
    except RuntimeError:  # torch's zip writer reports a failed write (disk full) as RuntimeError
        raise OSError(errno.EIO, "the write failed part-way; the disk may be full") from None


def save_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write any kind of checkpoint atomically (temp file in the same folder, fsync, then rename).

    ``payload`` holds only tensors and plain data, including ``"kind"``; the format tag,
    versions and the content digest are added here. A failed write (disk full included) is an
    :class:`~vqspeech.errors.OutputError` and leaves any earlier file at ``path`` as it was.
    """
    path = Path(path)
    if "kind" not in payload:
        raise ValueError("a checkpoint payload needs a 'kind'")
    full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "vqspeech_version": __version__}
    full.update(payload)
    full[DIGEST_KEY] = payload_digest(full)
    return write_atomic(path, lambda handle: _torch_save(full, handle), "checkpoint", fsync=True)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """``path``, or ``path/last.pt`` when ``path`` is a run folder."""
    path = Path(path)
    if path.is_dir():
        if (path / LAST).is_file():
            return path / LAST
        raise CheckpointError(
            f"{path} is a folder without {LAST}; give a checkpoint file or a run folder "
            "(the --out of vqspeech train)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _load_reason(exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in one short line."""
    text = " ".join(str(exc).split())
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported or "Weights only load failed" in text:
        what = unsupported.group(1) if unsupported else "objects"
        return (
            f"it holds pickled Python objects ({what}), which vqspeech never loads because loading "
            "them can run code"
        )
    return text or type(exc).__name__


def load_payload(
    path: str | Path, kinds: tuple[str, ...], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint of one of ``kinds`` with ``weights_only=True``.

    ``path`` may be a run folder (its ``last.pt`` is read). Raises :class:`CheckpointError`
    (one line) when the file is missing, unreadable, not ours, of another format version, of
    another kind (the message says what it is), damaged (its content digest does not match) or
    holds non-finite weights.
    """
    path = resolve_checkpoint_path(path)
    try:
        with path.open("rb") as handle:
            start = handle.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if start != _ZIP_MAGIC:
        what = next((name for magic, name in _KNOWN_MAGIC.items() if start.startswith(magic[:4])), None)
        raise CheckpointError(
            f"{path} is not a vqspeech checkpoint ({what or 'not a torch archive'}); "
            "give a .pt written by vqspeech train, or its run folder"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise CheckpointError(f"{path} is not a readable vqspeech checkpoint ({_load_reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a vqspeech checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this vqspeech reads version "
            f"{CHECKPOINT_VERSION} (upgrade vqspeech)"
        )
    stored = payload.get(DIGEST_KEY)
    if stored is not None and stored != payload_digest(payload):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the digest stored in it; "
            "restore it from a copy or use an earlier checkpoint"
        )
    kind = str(payload.get("kind", VQVAE_KIND))
    if kind not in kinds:
        what = KIND_DESCRIPTIONS.get(kind, f"of unknown kind {kind!r}")
        wanted = " or ".join(KIND_DESCRIPTIONS.get(k, k).split(" (")[0] for k in kinds)
        raise CheckpointError(f"{path} is {what}, not {wanted}")
    weights = payload.get("model")
    bad = non_finite_tensors(weights) if isinstance(weights, dict) else []
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN or infinity in {len(bad)} tensors, e.g. {bad[0]}): "
            "it comes from a training run that diverged; use an earlier checkpoint or train again "
            "with a lower train.lr"
        )
    payload["kind"] = kind
    return payload


def save_checkpoint(
    path: str | Path,
    model: VQVAE,
    recipe: Recipe,
    speakers: list[dict[str, Any]],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a speech VQ-VAE checkpoint atomically."""
    if speakers and len(speakers) != recipe.model.n_speakers:
        raise ConfigError(
            f"speaker table has {len(speakers)} entries but model.n_speakers is {recipe.model.n_speakers}"
        )
    payload = {
        "kind": VQVAE_KIND,
        "recipe": to_dict(recipe),
        "speakers": speakers,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
    }
    return save_payload(path, payload)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a speech VQ-VAE checkpoint; any problem is a :class:`CheckpointError`."""
    path = resolve_checkpoint_path(path)
    return checkpoint_from_payload(load_payload(path, (VQVAE_KIND,), map_location), path)


def checkpoint_from_payload(payload: dict[str, Any], path: Path) -> Checkpoint:
    """A speech VQ-VAE :class:`Checkpoint` from a payload :func:`load_payload` returned."""
    try:
        recipe = recipe_from_dict(_as_before(payload["recipe"]))
    except (ConfigError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: saved recipe is invalid ({exc})") from None
    return Checkpoint(
        recipe=recipe,
        speakers=list(payload.get("speakers", [])),
        model_state=payload["model"],
        training=payload.get("training", {}),
        path=path,
    )
