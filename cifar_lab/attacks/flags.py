"""Sanity flags against gradient masking (Athalye et al., 2018; Croce & Hein, 2020, sec. 5):
signs that an attack measured less than the model's real weakness. A tripped flag is a warning
and an entry of `adv/<attack>/flags`, never an error: the numbers are still written.

- `eps0_not_clean`: at budget 0 nothing may change, so the accuracy is the clean one;
- `rises_with_eps`: a larger budget contains every smaller one, so accuracy may not rise;
- `pgd_below_autoattack`: AutoAttack contains a stronger PGD (APGD), so a plain PGD may not
  beat it;
- `square_beats_white_box`: the black-box Square attack flipped images the white-box attacks
  could not (AutoAttack's own check);
- `autoattack_check`: any other check of the package (randomised or dynamic model, zero
  gradients, ...);
- `over_budget`: a perturbation larger than its budget (a broken projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cifar_lab.attacks.autoattack import SQUARE_WARNING
from cifar_lab.attacks.threat import LINF_UNITS, ThreatModel

# Slack for comparing a measured perturbation with its budget (float rounding of x + delta).
BUDGET_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CurvePoint:
    """One budget's outcome: accuracy on the attacked images, the largest perturbation
    (L-inf: in the budget's 1/255 steps; L2: on the [0, 1] scale), the comparison PGD's
    accuracy and the package's warnings."""

    threat: ThreatModel
    acc: float
    success_rate: float | None
    max_perturbation: float
    pgd_acc: float | None = None
    library_warnings: Sequence[str] = field(default_factory=tuple)


def sanity_flags(points: Sequence[CurvePoint], clean_acc: float, pgd_title: str = "PGD") -> list:
    """The tripped flags of one attack's curve, as `name: detail` lines."""
    flags = []
    for point in points:
        e = point.threat.label
        if point.threat.eps == 0 and point.acc != clean_acc:
            flags.append(
                f"eps0_not_clean: accuracy at eps 0 is {point.acc:.4f}, clean {clean_acc:.4f}"
            )
        if point.pgd_acc is not None and point.pgd_acc < point.acc:
            flags.append(
                f"pgd_below_autoattack: eps {e}: {pgd_title} {point.pgd_acc:.4f} < AutoAttack "
                f"{point.acc:.4f}"
            )
        for message in point.library_warnings:
            name = "square_beats_white_box" if SQUARE_WARNING in message else "autoattack_check"
            flags.append(f"{name}: eps {e}: {message}")
        if point.max_perturbation > point.threat.eps * (1 + BUDGET_TOLERANCE) + BUDGET_TOLERANCE:
            unit = "/255" if point.threat.norm == "linf" else ""
            flags.append(
                f"over_budget: eps {e}: a perturbation of {point.max_perturbation:.4g}{unit}"
            )
    ordered = sorted(points, key=lambda p: p.threat.eps)
    for smaller, larger in zip(ordered, ordered[1:], strict=False):
        if larger.acc > smaller.acc:
            flags.append(
                f"rises_with_eps: {smaller.acc:.4f} at eps {smaller.threat.label} -> "
                f"{larger.acc:.4f} at eps {larger.threat.label}"
            )
    return flags


def largest_perturbation(
    adversarial: torch.Tensor, pixels: torch.Tensor, threat: ThreatModel
) -> float:
    """The largest perturbation of a set, in the budget's units (1/255 steps for linf)."""
    delta = (adversarial - pixels).flatten(1)
    if not len(delta):
        return 0.0
    if threat.norm == "linf":
        return float(delta.abs().max()) * LINF_UNITS
    return float(delta.norm(dim=1).max())
