"""Recipe files: strict dict <-> dataclass conversion, YAML ``base:`` chains and ``--set`` overrides.

One job, shared by the speech recipes (:mod:`vqspeech.config`), the vision recipes
(:mod:`vqspeech.vision.config`) and every checkpoint that stores its resolved recipe:
:func:`to_dict` turns a dataclass tree into plain YAML/JSON data, :func:`from_dict` builds it
back and rejects unknown keys and wrong types with a :class:`~vqspeech.errors.ConfigError`
naming the key, :func:`resolve_base_chain` follows a YAML file's ``base:`` to a built-in,
:func:`parse_override` and :func:`merge` apply ``KEY=VALUE`` overrides, and :func:`require`
raises the first failed check of a validator. It knows no particular recipe. No torch here.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vqspeech.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON/YAML-safe data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _key_tp, value_tp = typing.get_args(tp)
        return {str(k): _coerce(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; people write it anyway
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys or wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {where + '.' if where else ''}{unknown[0]}; known keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"model.quantizer.codebook_size=256"`` -> ``{"model": {"quantizer": {...: 256}}}``.

    The value is parsed as YAML, so ``true``, ``0.5``, ``[1, 2, 4]`` mean what they say.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. train.steps=500)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    node: dict[str, Any] = {}
    parts = key.strip().split(".")
    cursor = node
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def resolve_base_chain(
    name_or_path: str,
    builtins: Mapping[str, Callable[[], Any]],
    what: str = "",
    foreign_base_ends: bool = False,
    seen: tuple[str, ...] = (),
) -> tuple[str | None, dict[str, Any]]:
    """Follow a recipe's ``base:`` chain: (the built-in it starts from or None, the merged recipe dict).

    ``name_or_path`` is a key of ``builtins`` (that recipe, as :func:`to_dict` data) or a YAML
    file holding a mapping, optionally with ``base:`` naming a built-in or another file (relative
    to this one); each file's keys are merged over its base's, and its ``name`` defaults to the
    file's stem. A chain ending at a file without ``base`` gives None: the caller decides what it
    starts from; so does, with ``foreign_base_ends``, a base that is neither a built-in nor a file
    (e.g. a speech built-in under the vision recipes), which is an error otherwise. ConfigError
    (``what`` names the kind of recipe in it) for a missing file, an unreadable file, a
    non-mapping, or a file that includes itself.
    """
    if name_or_path in builtins:
        return name_or_path, to_dict(builtins[name_or_path]())
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(builtins))
        raise ConfigError(f"recipe {name_or_path!r} is neither a built-in {what}({known}) nor a file")
    if str(path.resolve()) in seen:
        raise ConfigError(f"recipe {path} includes itself through 'base'")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping")
    base_name = raw.pop("base", None)
    raw.setdefault("name", path.stem)
    if base_name is None:
        return None, raw
    ref = str(base_name)
    if ref not in builtins:
        ref = str((path.parent / ref).resolve())
        if foreign_base_ends and not Path(ref).is_file():
            return None, raw
    builtin, base = resolve_base_chain(ref, builtins, what, foreign_base_ends, (*seen, str(path.resolve())))
    return builtin, merge(base, raw)


def require(checks: Sequence[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first check that failed (``(ok, message)`` pairs)."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
