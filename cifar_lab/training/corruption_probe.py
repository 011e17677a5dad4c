"""Corruption accuracy while training (`callbacks=[default,corruption_probe]`), so a study can
tell a recipe that is not robust from one that is not trained yet.

At the validation of every `every_n_epochs`-th epoch (and of the last one) the model scores a
small class-balanced subset of a CIFAR-C-layout folder (CIFAR-10/100-C, or one written by
`python -m cifar_lab.corrupt`): `per_severity` images of each severity of each chosen corruption,
the same images in every block (`CorruptionSet`'s `per_severity`/`seed` subset, as predict's
`ood.per_severity`). It logs, beside `val/acc` in the same epoch's row of every logger:

- `probe/corrupt_acc`: top-1 accuracy over the whole subset (every corruption x severity block
  holds the same number of images, so it is the mean over corruptions and severities, the number
  predict reports as `ood/acc/mean_present` for the same images);
- `probe/corrupt_acc/<family>`: the same over each family of the paper (noise, blur, weather,
  digital) the subset holds.

The subset is read into memory once, when fitting starts (a missing or damaged folder fails then,
before the first epoch), and scored with the run's eval preprocessing (the same as predict's) and
the weights validation scores: list it after `ema` (`callbacks=[ema,corruption_probe]`) to probe
the average, as validation does. Cost: one forward pass over per_severity x 5 x corruptions images
per probe (the default 20 x 5 x 19 = 1,900 images, about twice a 1,000-image validation split),
measured in the README (Robustness study).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.data.ood import CorruptionSet, ImageSet
from cifar_lab.data.pipelines import BlockBatches
from cifar_lab.errors import CifarLabError

log = logging.getLogger(__name__)

PROBE_METRIC = "probe/corrupt_acc"


class CorruptionProbe(Callback):
    """`probe/corrupt_acc` (and per family) on a fixed subset of a corruption folder, every
    `every_n_epochs` epochs and at the last; `batch_size` images per forward pass."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        every_n_epochs: int = 5,
        per_severity: int | None = 20,
        names: Sequence[str] | None = None,
        seed: int = 0,
        batch_size: int = 500,
    ):
        for key, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CifarLabError(
                    f"callbacks.corruption_probe.{key}={value!r} is invalid; expected an integer "
                    f">= 1, e.g. callbacks.corruption_probe.{key}=5"
                )
        self.every_n_epochs, self.batch_size = every_n_epochs, batch_size
        self.corruptions = CorruptionSet(
            root,
            num_classes=num_classes,
            names=None if names is None else list(names),
            per_severity=per_severity,
            seed=seed,
            name="corruption_probe",
        )
        self.sets: list[ImageSet] = []
        self._probed_epoch: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self.sets:
            self.sets = self.corruptions.image_sets()

    def due(self, trainer: L.Trainer) -> bool:
        """Whether this validation probes: epochs k, 2k, ... and the last, once each."""
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs
        return self._probed_epoch != epoch and (epoch % self.every_n_epochs == 0 or last)

    # At the start of validation: the weights are those validation scores (an EMA callback
    # listed before this one has swapped its average in; it swaps it out at the end).
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.sets or not self.due(trainer):
            return
        self._probed_epoch = trainer.current_epoch + 1
        start = time.perf_counter()
        correct = self.correct_per_set(trainer, pl_module)
        seconds = time.perf_counter() - start
        values = {PROBE_METRIC: float(np.concatenate(list(correct.values())).mean())}
        for family in CIFAR_C.families:
            hits = [correct[name] for name in correct if CIFAR_C.family(name) == family]
            if hits:
                values[f"{PROBE_METRIC}/{family}"] = float(np.concatenate(hits).mean())
        for key, value in values.items():
            # identical on every process (each scores the whole subset); sync_dist says so
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=True)
        images = sum(len(hits) for hits in correct.values())
        log.info(
            "epoch %d: %s %.4f on %s images in %.1f s",
            self._probed_epoch, PROBE_METRIC, values[PROBE_METRIC], f"{images:,}", seconds,
        )  # fmt: skip

    def correct_per_set(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, np.ndarray]:
        """Whether each probe image is classified right, per corruption."""
        datamodule = trainer.datamodule
        pipeline = datamodule.input_pipeline()
        correct = {}
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            for image_set in self.sets:
                batches = BlockBatches(image_set, pipeline.preprocess, self.batch_size)
                hits = []
                for i, (first, stop) in enumerate(batches.index):
                    images = batches[i].to(pl_module.device)
                    # the batched pipeline normalises on the device, after the transfer
                    images = datamodule.on_after_batch_transfer(images, 0)
                    predictions = pl_module(images).argmax(dim=1).cpu().numpy()
                    hits.append(predictions == image_set.labels[first:stop])
                correct[image_set.name] = np.concatenate(hits)
        return correct
