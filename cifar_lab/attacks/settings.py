"""The `attack` config of `predict`: which attack, its threat model, and which images it runs on.

`conf/attack/<name>.yaml` builds an `AttackSettings` (`_target_`); every value is checked here,
so a bad one is one line before anything is scored. `perturb` runs the attack on a set of
images: cifar-lab's FGSM/PGD (`pgd`) in batches of `batch_size`, APGD-CE and AutoAttack through
`pyautoattack` (`autoattack`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cifar_lab.attacks.autoattack import VERSIONS, apgd, autoattack
from cifar_lab.attacks.pgd import Model, fgsm, pgd
from cifar_lab.attacks.threat import LINF_UNITS, ThreatModel, threat_models
from cifar_lab.errors import CifarLabError

ATTACKS = ("fgsm", "pgd", "apgd", "autoattack")
TITLES = {"fgsm": "FGSM", "pgd": "PGD", "apgd": "APGD-CE", "autoattack": "AutoAttack"}


def check_int(key: str, value: Any, low: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CifarLabError(
            f"attack.{key}={value!r} is invalid; expected an integer >= {low}, e.g. "
            f"attack.{key}={example}"
        )
    return value


@dataclass(frozen=True)
class AttackSettings:
    """One `attack=` choice. `eps` and `alpha` are in the threat model's units (1/255 steps for
    linf, [0, 1] pixels for l2); `alpha=None` takes the attack's default (FGSM: the budget, PGD:
    2.5 x budget / steps). `n` images of the test split, class-balanced and chosen with `seed`
    (None: all of it). `compare_pgd_steps` (AutoAttack): a PGD of that many steps on the same
    images, for the sanity flag "PGD accuracy >= AutoAttack accuracy" (0: off)."""

    name: str
    norm: str = "linf"
    eps: Any = (8,)
    steps: int = 20
    alpha: float | None = None
    restarts: int = 1
    random_start: bool = False
    version: str = "standard"
    compare_pgd_steps: int = 0
    n: int | None = 1000
    seed: int = 0
    batch_size: int = 200
    examples: int = 8
    threats: list[ThreatModel] = field(init=False)

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise CifarLabError(f"attack.name={self.name!r} is unknown; expected one of {ATTACKS}")
        object.__setattr__(self, "threats", threat_models(self.norm, self.eps))
        check_int("steps", self.steps, 1, "20")
        check_int("restarts", self.restarts, 1, "1")
        check_int("compare_pgd_steps", self.compare_pgd_steps, 0, "20")
        check_int("seed", self.seed, 0, "0")
        check_int("batch_size", self.batch_size, 1, "200")
        check_int("examples", self.examples, 0, "8")
        if self.n is not None:
            check_int("n", self.n, 1, "1000")
        alpha = self.alpha
        number = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
        if alpha is not None and not (number and alpha > 0):
            raise CifarLabError(
                f"attack.alpha={alpha!r} is invalid; expected a step size > 0 in the budget's "
                f"units (e.g. attack.alpha=2 for 2/255), or null for the attack's default"
            )
        if self.version not in VERSIONS:
            raise CifarLabError(
                f"attack.version={self.version!r} is unknown; expected one of {VERSIONS}"
            )

    @property
    def title(self) -> str:
        """How plots and log lines name the attack: `PGD-20`, `AutoAttack standard`."""
        if self.name in ("pgd", "apgd"):
            return f"{TITLES[self.name]}-{self.steps}"
        if self.name == "autoattack":
            return f"AutoAttack {self.version}"
        return TITLES[self.name]

    def step_size(self) -> float | None:
        """`alpha` on the [0, 1] pixel scale (None: the attack's default)."""
        if self.alpha is None:
            return None
        return self.alpha / LINF_UNITS if self.norm == "linf" else float(self.alpha)

    def perturb(
        self, model: Model, pixels: torch.Tensor, labels: torch.Tensor, threat: ThreatModel
    ) -> torch.Tensor:
        """Adversarial images of `pixels` (all of them, on their device) within `threat`."""
        if self.name == "autoattack":
            return autoattack(
                model, pixels, labels, threat, self.version, self.seed, self.batch_size
            )
        generator = torch.Generator().manual_seed(self.seed)
        parts = []
        for start in range(0, len(pixels), self.batch_size):
            x, y = pixels[start : start + self.batch_size], labels[start : start + self.batch_size]
            parts.append(self.perturb_batch(model, x, y, threat, generator))
        return torch.cat(parts)

    def perturb_batch(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if self.name == "fgsm":
            return fgsm(model, x, y, threat, self.step_size(), self.random_start, generator)
        if self.name == "pgd":
            return pgd(model, x, y, threat, self.steps, self.step_size(), self.restarts, generator)
        return apgd(model, x, y, threat, self.steps, self.restarts, self.seed)

    def comparison_pgd(self) -> AttackSettings | None:
        """The PGD that `compare_pgd_steps` asks for beside this attack, or None."""
        if self.name != "autoattack" or not self.compare_pgd_steps:
            return None
        return AttackSettings(
            name="pgd",
            norm=self.norm,
            eps=list(self.eps) if isinstance(self.eps, Sequence) else self.eps,
            steps=self.compare_pgd_steps,
            n=self.n,
            seed=self.seed,
            batch_size=self.batch_size,
        )
