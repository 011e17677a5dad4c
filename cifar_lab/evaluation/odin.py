"""ODIN's scores (Liang et al., 2018) through pytorch-ood's `ODIN`, in a Lightning predict pass
of its own over the in-distribution test split and the OOD detection sets.

Why a pass of its own, beside the one that scores everything else:
- ODIN moves each input against the gradient of its predicted class's loss, so it needs
  autograd w.r.t. the inputs; the main pass runs under `torch.inference_mode` (Lightning's
  default), where no gradient can be taken. This pass's Trainer has `inference_mode=False`, so
  Lightning wraps it in `no_grad` only, which pytorch-ood's ODIN re-enables for its backward;
- it costs two forwards and a backward per image, paid only for the sets it scores, never for
  the corruption or leaderboard sets scored beside them;
- it perturbs the image itself, one view: with TTA on, ODIN scores the plain image (the other
  detectors score the TTA-averaged outputs).
It stays inside Lightning, so devices, precision and the datamodule's eval preprocessing (also
the batched pipeline's, after transfer to the device) are the main pass's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from pytorch_ood.detector import ODIN

from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.ood import ImageSet
from cifar_lab.evaluation.scoring import PredictionCollector, predict_quietly, serving

ODIN_OUTPUT = "odin"


class FloatLogits(torch.nn.Module):
    """The classifier's logits in float32: under bf16 autocast the softmax at T=1000 of bf16
    logits would round most scores of a set to a few values (ties)."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).float()


class ODINScoring(L.LightningModule):
    """Wraps a classifier (its forward gives logits) so its predict step returns ODIN scores."""

    def __init__(
        self,
        classifier: torch.nn.Module,
        temperature: float,
        eps: float,
        norm_std: Sequence[float] | None,
    ):
        super().__init__()
        self.logits = FloatLogits(classifier)
        self.detector = ODIN(
            self.logits,
            eps=eps,
            temperature=temperature,
            norm_std=list(norm_std) if norm_std is not None else None,
        )

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return {ODIN_OUTPUT: self.detector.predict(images)}


def odin_scores(
    classifier: torch.nn.Module,
    datamodule: CIFARDataModule,
    sets: Sequence[ImageSet],
    make_trainer: Callable[[list[Callback]], L.Trainer],
    temperature: float,
    eps: float,
) -> dict[str, np.ndarray]:
    """Each of `sets`' ODIN scores (higher = more OOD), by set name. `make_trainer` must build a
    Trainer with `inference_mode=False`; eps is in pixel units (the gradient sign is divided by
    the eval normalisation's std, as in the paper's code and OpenOOD)."""
    module = ODINScoring(classifier, temperature, eps, datamodule.transforms.std)
    keep = {image_set.name: (ODIN_OUTPUT,) for image_set in sets}
    collector = PredictionCollector(sets=sets, keep=keep)
    trainer = make_trainer([collector])
    was_training = classifier.training
    with serving(datamodule, sets):
        predict_quietly(trainer, module, datamodule)
    classifier.train(was_training)
    return {
        image_set.name: collector.kept_outputs(i).get(ODIN_OUTPUT, np.zeros(0)).astype(np.float64)
        for i, image_set in enumerate(sets)
    }
