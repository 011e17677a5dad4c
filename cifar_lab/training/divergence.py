"""A training loss that turns NaN or infinite ends the run as `diverged`.

Without it a diverged run trains on, its NaN logits argmax to class 0 and the run ends
`finished` with whatever accuracy class 0 happens to get (a 1.0000 test/acc on a one-class
batch). Here fitting stops at the first non-finite loss, before any checkpoint of the NaN
weights is written: last.ckpt and best.ckpt keep the last finite epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lab.runs.record import Diverged

# Train steps between reads of the guard's flag on the host: a read waits for the GPU, so it is
# not done at every step. Every check before validation and at an epoch's end comes first too,
# so no checkpoint is written after a non-finite loss (Lightning runs checkpoint callbacks last).
CHECK_EVERY = 16


class DivergenceGuard(Callback):
    """Raises `Diverged` for the first train step whose loss is NaN or infinite, read every
    `CHECK_EVERY` steps and before validation and checkpoints."""

    def __init__(self) -> None:
        self._step: torch.Tensor | None = None  # first bad step (-1: none), on the device
        self._loss: torch.Tensor | None = None  # its loss

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        if self._step is None or self._loss is None:
            self._step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._loss = torch.zeros((), device=loss.device)
        first = (self._step < 0) & ~torch.isfinite(loss)
        self._step = torch.where(first, trainer.global_step, self._step)
        self._loss = torch.where(first, loss, self._loss)
        if trainer.global_step % CHECK_EVERY == 0:
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if self._step is None or self._loss is None or int(self._step) < 0:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        raise Diverged(int(self._step), float(self._loss), lr)
