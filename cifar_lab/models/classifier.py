"""The LightningModule that trains, validates and tests any `ClassifierNet` on CIFAR."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from timm.loss import JsdCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from cifar_lab.attacks.training import AdversarialTraining, check_combination
from cifar_lab.data.mixing import build_mixup, mixing_enabled
from cifar_lab.errors import CifarLabError
from cifar_lab.models.logitnorm import check_tau, normalized_logits
from cifar_lab.models.outputs import PROBS_ONLY, check_outputs, mean_over_views
from cifar_lab.models.schedule import resize_schedule, schedule_size
from cifar_lab.runs.checkpoint import stamp_checkpoint
from cifar_lab.runs.rng import RNG_KEY, set_rng_states
from cifar_lab.speed import prepare_net, to_memory_format

LOSSES = ("cross_entropy", "jsd", "logitnorm")
JSD_VIEWS = 3  # AugMix: the clean image and two augmented views


def loss_views(loss: str | None) -> int:
    """How many views of each training image the `loss` config trains on (jsd: 3, else 1)."""
    loss = loss or "cross_entropy"
    if loss not in LOSSES:
        raise CifarLabError(f"loss.name={loss!r} is unknown; expected one of {LOSSES}")
    return JSD_VIEWS if loss == "jsd" else 1


# (model, images) -> class probabilities averaged over test-time views, e.g. a
# `cifar_lab.models.tta.TestTimeAugmentation`.
TestTimeViews = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 and (when there are at least 5 classes) top-5 accuracy over the whole epoch."""
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


class CIFARClassifier(L.LightningModule):
    """Cross-entropy with label smoothing, or soft targets when CutMix/MixUp is on, or (`loss`
    jsd) AugMix's Jensen-Shannon consistency loss over a clean and two augmented views; `loss`
    logitnorm takes the cross-entropy (either kind) on logits of norm 1/`logitnorm_tau`.

    `optimizer` and `scheduler` are partials from the `optim` config, completed in
    `configure_optimizers` once the number of steps is known. `run_config` (the resolved Hydra
    config) travels in every checkpoint so `predict` can rebuild the model from the file alone.
    `tta` is how the predict step averages over test-time views (None: the image as it is).
    `adversary` (the `adv` config) trains on adversarial examples instead (see
    `cifar_lab.attacks.training`).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 100,
        label_smoothing: float = 0.0,
        mix: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None,
        tta: TestTimeViews | None = None,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] | None = None,
        loss: str = "cross_entropy",
        jsd_alpha: float = 12.0,
        logitnorm_tau: float = 0.04,
        adversary: AdversarialTraining | None = None,
    ):
        super().__init__()
        # channels_last/compile change speed only; the state dict keys stay those of `net`.
        self.net = prepare_net(net, channels_last, compile)
        self.channels_last = channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.mixup = build_mixup(mix, num_classes, label_smoothing)
        self.soft_loss = SoftTargetCrossEntropy()
        self.jsd_loss: JsdCrossEntropy | None = None
        if loss_views(loss) > 1:
            if mixing_enabled(mix):
                raise CifarLabError(
                    "loss=jsd compares views of unmixed images, so it does not combine with "
                    "CutMix/MixUp; set augment.mix=null"
                )
            # timm's loss: cross-entropy (label-smoothed when asked) on the clean view plus
            # alpha x the Jensen-Shannon divergence of the three views' predictions.
            self.jsd_loss = JsdCrossEntropy(JSD_VIEWS, alpha=jsd_alpha, smoothing=label_smoothing)
        self.logitnorm_tau = check_tau(logitnorm_tau) if loss == "logitnorm" else None
        check_combination(adversary, mixing_enabled(mix), loss_views(loss), loss)
        self.adversary = adversary
        self.run_config = dict(run_config or {})
        self.tta = tta  # no parameters: checkpoints are the same with or without it
        self._predict_outputs: tuple[str, ...] = PROBS_ONLY
        self.wandb_id: str | None = None
        self.schedule_size: dict[str, int] = {}  # the schedule this trainer's epochs ask for
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.train_metrics = accuracy_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = accuracy_metrics(num_classes).clone(prefix="test/")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_memory_format(x, self.channels_last))

    # --- steps --------------------------------------------------------------------------
    def on_train_start(self) -> None:
        resize_schedule(self.trainer, self.schedule_size)

    def training_loss(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one training batch: CutMix/MixUp soft targets when mixing is on,
        the JSD loss for (B, views, C, H, W) batches with `loss=jsd` (all views through the
        model as one batch; the logits returned are the clean view's, one row per image), else
        cross-entropy with label smoothing; both of the last on normalised logits with
        `loss=logitnorm`; with `adversary`, its loss on adversarial examples. The plain-loop
        benchmark calls this too."""
        if self.adversary is not None:
            return self.adversary(self, images, labels, self.label_smoothing)
        if self.jsd_loss is not None:
            if images.ndim != 5 or images.size(1) != JSD_VIEWS:
                raise CifarLabError(
                    f"loss=jsd needs batches of {JSD_VIEWS} views per image (B, {JSD_VIEWS}, C, "
                    f"H, W) but got shape {tuple(images.shape)}; train with the datamodule of "
                    f"the same config"
                )
            logits = self(images.transpose(0, 1).flatten(0, 1))  # view-major: clean rows first
            return self.jsd_loss(logits, labels), logits[: len(labels)]
        if self.mixup is not None:
            images, soft_targets = self.mixup(images, labels)
            logits = self(images)
            return self.soft_loss(self.loss_logits(logits), soft_targets), logits
        logits = self(images)
        loss = F.cross_entropy(
            self.loss_logits(logits), labels, label_smoothing=self.label_smoothing
        )
        return loss, logits

    def loss_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the training loss is taken on: the logits, normalised under `loss=logitnorm`."""
        if self.logitnorm_tau is None:
            return logits
        return normalized_logits(logits, self.logitnorm_tau)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        loss, logits = self.training_loss(images, labels)
        self.train_loss(loss)
        self.train_metrics(logits, labels)
        # the epoch mean under its plain name; the bar shows each step's loss as `loss`
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("loss", loss.detach(), on_step=True, prog_bar=True, logger=False)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True)
        return loss

    def _eval_step(self, batch, loss_metric: MeanMetric, metrics: MetricCollection, stage: str):
        images, labels = batch
        logits = self(images)
        loss_metric(F.cross_entropy(logits, labels))
        metrics(logits, labels)
        self.log(f"{stage}/loss", loss_metric, on_epoch=True, prog_bar=stage == "val")
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        # The sanity check scores a few batches of the starting (or resumed) weights: it is no
        # epoch, and a partial score must never count as the best.
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_metrics["acc"].compute())
        # Already the same on every rank (torchmetrics syncs compute()); sync_dist says so to DDP.
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_metrics, "test")

    @property
    def predict_outputs(self) -> tuple[str, ...]:
        """What `predict_step` returns: `probs` alone (a tensor), or more for calibration and OOD
        detection (a dict, see `cifar_lab.models.outputs`)."""
        return self._predict_outputs

    @predict_outputs.setter
    def predict_outputs(self, outputs: tuple[str, ...]) -> None:
        self._predict_outputs = check_outputs(outputs)

    def predict_step(
        self, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Class probabilities, averaged over the test-time views when `tta` is set; with more
        `predict_outputs`, a dict of each output averaged over the views."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self.predict_outputs != PROBS_ONLY:
            views = self.tta.each_view(images) if self.tta is not None else (images,)
            prepare = partial(to_memory_format, channels_last=self.channels_last)
            return mean_over_views(self.net, views, self.predict_outputs, prepare)
        if self.tta is not None:
            return self.tta(self, images)
        return self(images).float().softmax(dim=1)

    # --- optimisation -------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.net)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=max(total_steps // epochs, 1)
        )
        self.schedule_size = schedule_size(scheduler)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        # timm schedulers take the update count instead of counting calls themselves.
        scheduler.step_update(num_updates=self.global_step)

    # --- checkpoints --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp_checkpoint(checkpoint, self.num_classes, self.run_config, self.wandb_id)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])
