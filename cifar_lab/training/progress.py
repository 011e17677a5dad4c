"""The progress bar, the per-epoch log line and the model summary of a training run, as a user
reads them."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

from cifar_lab.clock import duration


class EpochProgressBar(RichProgressBar):
    """Counts epochs from 1 to max_epochs ("Epoch 2/2"), not from 0 to max_epochs - 1."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"


log = logging.getLogger(__name__)


class EpochLog(Callback):
    """One line per epoch in the console and the run's log, also without a progress bar (a
    batch job, a file): `epoch 3/30: train/loss 2.9134, val/acc 0.2875, 812 img/s, ETA 6m12s`.
    Images per second count the training images of the epoch over its wall time, validation
    included; the ETA is the epochs left times the mean epoch time so far."""

    def __init__(self) -> None:
        self._epoch_start = 0.0
        self._images = 0
        self._epoch_seconds: list[float] = []
        self.images_seen = 0  # training images of this process since fitting began

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._images = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        labels = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        images = len(labels) if isinstance(labels, torch.Tensor) else 0
        self._images += images
        self.images_seen += images

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_seconds.append(seconds)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        parts = [f"epoch {epoch}/{total}" if total and total > 0 else f"epoch {epoch}"]
        train_loss = getattr(pl_module, "train_loss", None)
        if train_loss is not None and getattr(train_loss, "update_count", 0):
            parts.append(f"train/loss {float(train_loss.compute()):.4f}")
        value = trainer.callback_metrics.get("val/acc")
        if value is not None:
            parts.append(f"val/acc {float(value):.4f}")
        if seconds > 0 and self._images:
            parts.append(f"{self._images / seconds:,.0f} img/s")
        if total and total > 0 and epoch < total:
            mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
            parts.append(f"ETA {duration(mean * (total - epoch))}")
        log.info("%s: %s", parts[0], ", ".join(parts[1:]))


def training_cost(trainer: L.Trainer, seconds: float) -> dict[str, float]:
    """What fitting cost, for a run's record (and a study's table): `train/wall_s`, the wall
    time of `trainer.fit` (training, validation and checkpoints of this attempt: a run resumed
    from last.ckpt counts from its resume), `train/images`, the training images of that time over
    all processes (a JSD image counts once, not per view), and `train/images_per_s`, the two
    divided."""
    seen = sum(cb.images_seen for cb in trainer.callbacks if isinstance(cb, EpochLog))
    images = seen * trainer.world_size  # each process counts its own share of the batches
    return {
        "train/wall_s": seconds,
        "train/images": images,
        "train/images_per_s": images / seconds if seconds > 0 else None,
    }


class NetSummary(RichModelSummary):
    """The network alone: the LightningModule's loss and metric modules (no parameters) are
    left out, and so are the FLOPs (Lightning counts 0 for these networks) and module modes."""

    SHOWN = ("Name", "Type", "Params", "Params per Device", "In sizes", "Out sizes")

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        rows = [i for i, name in enumerate(columns.get("Name", [])) if name.startswith("net")]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        shown = [name for name in NetSummary.SHOWN if name in columns]
        for name in shown:
            table.add_column(name, justify="left" if name in ("Name", "Type") else "right")
        for i in rows:
            table.add_row(*(columns[name][i] for name in shown))
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"Trainable params: {get_human_readable_count(int(trainable_parameters)).strip()}, "
            f"frozen: {get_human_readable_count(int(frozen)).strip()}, "
            f"size: {get_formatted_model_size(model_size)} MB"
        )
