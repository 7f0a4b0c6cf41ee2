"""The quality aims of project issue 6, and checking an evaluation against them.

:data:`AIMS`: held-out STOI >= :data:`STOI_AIM` and voice conversions recognised as the target
speaker at least :data:`TARGET_RATE_AIM` of the time. :func:`check_aims` reads them from an
evaluation dict (:meth:`vqspeech.evaluation.EvalReport.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Quality aims of issue 6: the numbers a model should reach on its held-out speech.
STOI_AIM = 0.75
TARGET_RATE_AIM = 0.80


@dataclass(frozen=True)
class Aim:
    """A target a metric should reach: ``path`` into the evaluation dict, ``at_least`` that value."""

    label: str
    path: tuple[str, ...]
    at_least: float
    percent: bool = False  # the value is a fraction, shown as a percentage


#: Project issue 6's aims for the demo model.
AIMS = (
    Aim("held-out STOI (intelligibility of reconstructions)", ("reconstruction", "stoi"), STOI_AIM),
    Aim(
        "conversions recognised as the target speaker",
        ("conversion", "target_rate"),
        TARGET_RATE_AIM,
        percent=True,
    ),
)


@dataclass(frozen=True)
class AimResult:
    """An :class:`Aim` checked against an evaluation: ``value`` None when the metric is missing."""

    aim: Aim
    value: float | None

    @property
    def met(self) -> bool:
        return self.value is not None and self.value >= self.aim.at_least

    @property
    def value_text(self) -> str:
        return (percent if self.aim.percent else fixed3)(self.value)

    @property
    def target_text(self) -> str:
        return (percent if self.aim.percent else fixed3)(self.aim.at_least)

    def describe(self) -> str:
        """E.g. ``held-out STOI (...): 0.712 (aim >= 0.750: not met)``."""
        verdict = "met" if self.met else "not met"
        return f"{self.aim.label}: {self.value_text} (aim >= {self.target_text}: {verdict})"


def check_aims(evaluation: Mapping[str, Any]) -> tuple[AimResult, ...]:
    """Each of :data:`AIMS` against ``evaluation`` (an ``EvalReport.to_dict()``)."""
    return tuple(AimResult(aim, number(lookup(evaluation, aim.path))) for aim in AIMS)


def lookup(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    """``data[path[0]][path[1]]...``, or None where the path does not lead."""
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    number = float(value) + 0.0  # + 0.0 turns -0.0 (an entropy of one code) into 0.0
    return number if math.isfinite(number) else None


def fixed3(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def percent(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"
