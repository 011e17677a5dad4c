"""A training loss that turns NaN or infinite ends the run as `diverged`.

Without it a diverged run trains on, its NaN logits argmax to class 0 and the run ends
`finished` with whatever accuracy class 0 happens to get (a 1.0000 test/acc on a one-class
batch). Here fitting stops at the first non-finite loss, before any checkpoint of the NaN
weights is written: last.ckpt and best.ckpt keep the last finite epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lab.runs.record import Diverged


class DivergenceGuard(Callback):
    """Raises `Diverged` at the first train batch whose loss is NaN or infinite."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach())
        if not math.isfinite(value):
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            raise Diverged(trainer.global_step, value, lr)
