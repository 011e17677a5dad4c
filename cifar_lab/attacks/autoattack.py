"""AutoAttack (Croce & Hein, 2020) and its APGD-CE through `pyautoattack`, the packaged reference.

The `standard` version runs APGD-CE, APGD-T (9 target classes), FAB-T and Square (5,000
queries), each on the images the earlier ones could not flip; `plus` and `rand` are the
package's other versions. The package checks the evaluation itself (a randomised or dynamic
model, probabilities instead of logits, too few classes, zero gradients, and Square flipping
images the white-box attacks could not: a sign of gradient masking) and logs a warning on its
`auto-attack` logger for each; `library_warnings` collects them, so they become flags.
Images go to the package in contiguous NCHW layout: it reshapes gradients with `.view`, which
fails on the channels-last strides of images permuted from HWC arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack

from cifar_lab.attacks.pgd import Model
from cifar_lab.attacks.threat import ThreatModel

VERSIONS = ("standard", "plus", "rand")
LIBRARY_LOGGER = "auto-attack"
PACKAGE_NORMS = {"linf": "Linf", "l2": "L2"}
# The words of the package's Square check (checks.check_square_sr)
SQUARE_WARNING = "Square Attack has decreased the robust accuracy"


class WarningCollector(logging.Handler):
    """Keeps the message of every warning logged on the package's logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def library_warnings() -> Iterator[list[str]]:
    """The warnings the package logs inside the block, in order."""
    collector = WarningCollector()
    logger = logging.getLogger(LIBRARY_LOGGER)
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


def autoattack(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    version: str = "standard",
    seed: int = 0,
    batch_size: int = 250,
) -> torch.Tensor:
    """AutoAttack's adversarial images of `pixels` (on their device), as the package makes them
    for `model`, the budget `threat` and `seed`."""
    adversary = AutoAttack(
        model,
        norm=PACKAGE_NORMS[threat.norm],
        eps=threat.radius,
        version=version,
        seed=seed,
        device=pixels.device,
    )
    adversarial, _ = adversary.run_standard_evaluation(
        pixels.contiguous(), labels, batch_size=batch_size
    )
    return adversarial.detach()


def apgd(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """APGD on the cross-entropy (AutoAttack's first attack) with `steps` iterations and
    `restarts` random restarts."""
    attack = APGDAttack(
        model,
        n_iter=steps,
        norm=PACKAGE_NORMS[threat.norm],
        n_restarts=restarts,
        eps=threat.radius,
        seed=seed,
        loss="ce",
        device=pixels.device,
        logger=logging.getLogger(LIBRARY_LOGGER),
    )
    return attack.perturb(pixels.contiguous(), labels).detach()
