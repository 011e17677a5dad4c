"""The threat model of an attack: which norm bounds the perturbation, and how large it may be.

Budgets are written as the field writes them: L-inf in 1/255 steps of the 0-255 pixel scale
(`eps=8` is 8/255, Madry et al. 2018; Croce et al. 2021's RobustBench), L2 on the [0, 1] scale
(`eps=0.5`). The attacks themselves work on [0, 1] pixels: `ThreatModel.radius` is the budget
there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cifar_lab.errors import CifarLabError

NORMS = ("linf", "l2")
LINF_UNITS = 255.0  # L-inf budgets are written in 1/255 steps
# The largest L2 distance between two 3x32x32 images in [0, 1]: a larger budget bounds nothing.
MAX_L2 = math.sqrt(3 * 32 * 32)


def check_norm(norm: Any, key: str) -> str:
    if norm not in NORMS:
        raise CifarLabError(f"{key}={norm!r} is unknown; expected one of {list(NORMS)}")
    return norm


@dataclass(frozen=True)
class ThreatModel:
    """`norm` and the budget `eps` as the user wrote it (1/255 steps for linf)."""

    norm: str
    eps: float

    @property
    def radius(self) -> float:
        """The budget on the [0, 1] pixel scale."""
        return self.eps / LINF_UNITS if self.norm == "linf" else self.eps

    @property
    def label(self) -> str:
        """The budget as metric names write it: `8`, `0.5` (`eps8`, `eps0.5`)."""
        return f"{self.eps:g}"


def check_eps(value: Any, norm: str, key: str) -> float:
    """One budget: a number from 0 to 255 (linf, in 1/255 steps) or to `MAX_L2` (l2)."""
    top, unit = (LINF_UNITS, "1/255 steps") if norm == "linf" else (MAX_L2, "[0, 1] pixels")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 <= value <= top:
        example = "8 for 8/255" if norm == "linf" else "0.5"
        raise CifarLabError(
            f"{key}={value!r} is out of range; expected a number from 0 to {top:g} ({norm} "
            f"budgets are in {unit}), e.g. {example}"
        )
    return float(value)


def threat_models(norm: Any, eps: Any, key: str = "attack") -> list[ThreatModel]:
    """The threat models of `norm` and `eps` (a number or a list of them), checked, in the
    order given, without repeats."""
    norm = check_norm(norm, f"{key}.norm")
    values = list(eps) if isinstance(eps, Sequence) and not isinstance(eps, str) else [eps]
    if not values:
        raise CifarLabError(f"{key}.eps=[] names no budget; give one or a list, e.g. [1,2,4,8]")
    budgets = dict.fromkeys(check_eps(v, norm, f"{key}.eps") for v in values)
    return [ThreatModel(norm, value) for value in budgets]
