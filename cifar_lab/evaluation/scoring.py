"""What `Trainer.predict` yields, kept small: the top-k classes and probabilities per image.

The module's predict step returns class probabilities (averaged over its TTA views); a
`PredictionCollector` callback keeps only each image's `k` most probable classes, so scoring
the 950,000 leaderboard images holds a few tens of MB instead of every softmax. Batches are
timed as they arrive, so each set reports its own images/s.

Calibration and OOD detection need more of a few sets (the clean test split, the OOD detection
sets, the training images a detector fits on): the predict step then returns a dict of outputs
(`cifar_lab.models.outputs`) and `keep` names, per set, the outputs held whole, as float32
arrays ((n, C) logits, (n, D) features: tens of MB for tens of thousands of images).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from cifar_lab.clock import duration
from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.ood import ImageSet

log = logging.getLogger(__name__)

TOP_K = 5


@dataclass
class Scores:
    """The `k` most probable classes of each image of one block, most probable first."""

    top_classes: np.ndarray  # (N, k) int64
    top_probs: np.ndarray  # (N, k) float32
    seconds: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # the kept ones, whole

    def __len__(self) -> int:
        return len(self.top_classes)

    @property
    def images_per_s(self) -> float:
        return len(self) / max(self.seconds, 1e-9)

    @property
    def predictions(self) -> np.ndarray:
        return self.top_classes[:, 0]

    @property
    def confidences(self) -> np.ndarray:
        """Each image's max-softmax probability."""
        return np.ascontiguousarray(self.top_probs[:, 0])

    @property
    def confidence(self) -> float:
        """Mean max-softmax: how sure the model is, readable without labels."""
        return float(self.confidences.mean())

    def correct(self, labels: np.ndarray) -> np.ndarray:
        """Whether each image's top prediction is its label."""
        return self.predictions == np.asarray(labels)

    def accuracy(self, labels: np.ndarray, top_k: int = 1) -> float:
        """Fraction of images whose label is among the `top_k` most probable classes."""
        labels = np.asarray(labels)
        hits = (self.top_classes[:, :top_k] == labels[:, None]).any(axis=1)
        return float(hits.mean())


class PredictionCollector(BasePredictionWriter):
    """Per predict loader (one `ImageSet` each), the top-k of every batch, the outputs `keep`
    names for that set (by set name) and its wall time; a line per finished set (images,
    img/s, sets left, ETA), so a long scoring run shows progress also without a progress bar."""

    def __init__(
        self,
        top_k: int = TOP_K,
        sets: Sequence[ImageSet] = (),
        keep: Mapping[str, Collection[str]] | None = None,
    ):
        super().__init__(write_interval="batch")
        self.top_k = top_k
        self.sets = list(sets)
        self.keep = {name: tuple(outputs) for name, outputs in (keep or {}).items()}
        self.parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.kept: dict[int, dict[str, list[torch.Tensor]]] = {}
        self.images: dict[int, int] = {}
        self.seconds: dict[int, float] = {}
        self._clock = 0.0
        self._current: int | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.parts, self.kept, self.images, self.seconds = {}, {}, {}, {}
        self._current = None
        self._clock = time.perf_counter()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(self._current)

    def _report(self, index: int | None) -> None:
        """The progress line of the set of predict loader `index`, once it is scored."""
        if index is None or index >= len(self.sets):
            return
        done = sum(self.images.values())
        seconds = sum(self.seconds.values())
        total = sum(image_set.num_images for image_set in self.sets)
        images = self.images.get(index, 0)
        rate = images / max(self.seconds.get(index, 0.0), 1e-9)
        eta = (total - done) * seconds / max(done, 1)
        log.info(
            "scored %s: %s images, %s img/s; set %d/%d%s",
            self.sets[index].name,
            f"{images:,}",
            f"{rate:,.0f}",
            index + 1,
            len(self.sets),
            f", ETA {duration(eta)}" if index + 1 < len(self.sets) else "",
        )

    def _kept_names(self, index: int) -> tuple[str, ...]:
        return self.keep.get(self.sets[index].name, ()) if index < len(self.sets) else ()

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor | Mapping[str, torch.Tensor],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != self._current:
            self._report(self._current)
            self._current = dataloader_idx
        outputs = prediction if isinstance(prediction, Mapping) else {"probs": prediction}
        probs = outputs.get("probs")
        if probs is not None:
            top = probs.float().topk(min(self.top_k, probs.shape[1]), dim=1)
            self.parts.setdefault(dataloader_idx, []).append((top.indices.cpu(), top.values.cpu()))
        kept = self.kept.setdefault(dataloader_idx, {})
        for name in self._kept_names(dataloader_idx):
            kept.setdefault(name, []).append(outputs[name].detach().float().cpu())
        size = len(next(iter(outputs.values())))
        self.images[dataloader_idx] = self.images.get(dataloader_idx, 0) + size
        now = time.perf_counter()
        self.seconds[dataloader_idx] = self.seconds.get(dataloader_idx, 0.0) + now - self._clock
        self._clock = now

    def kept_outputs(self, index: int) -> dict[str, np.ndarray]:
        """The outputs kept whole for the set of predict loader `index`, all its images."""
        return {name: torch.cat(parts).numpy() for name, parts in self.kept.get(index, {}).items()}

    def scores(self, index: int, image_set: ImageSet) -> list[Scores]:
        """One `Scores` per block of `image_set`, the set served by predict loader `index`."""
        parts = self.parts.get(index, [])
        classes = torch.cat([c for c, _ in parts]).numpy() if parts else np.zeros((0, 1), int)
        probs = torch.cat([p for _, p in parts]).numpy() if parts else np.zeros((0, 1), "f4")
        kept = self.kept_outputs(index)
        total = max(len(classes), 1)
        seconds = self.seconds.get(index, 0.0)
        start = image_set.blocks[0].start if image_set.blocks else 0
        out = []
        for block in image_set.blocks:
            rows = slice(block.start - start, block.stop - start)
            n = rows.stop - rows.start
            outputs = {name: array[rows] for name, array in kept.items()}
            out.append(Scores(classes[rows], probs[rows], seconds * n / total, outputs))
        return out


@contextmanager
def serving(datamodule: CIFARDataModule, sets: Sequence[ImageSet]) -> Iterator[None]:
    """`datamodule`'s predict loaders serve `sets` (with its eval preprocessing and batch hooks)
    for the duration of the block, then its own predict sets again."""
    before = datamodule.predict_sets
    datamodule.predict_sets = list(sets)
    try:
        yield
    finally:
        datamodule.predict_sets = before


def predict_quietly(trainer: L.Trainer, module: L.LightningModule, datamodule: Any) -> None:
    """`trainer.predict` over the datamodule's predict sets, nothing returned (a callback
    collects what is kept)."""
    with warnings.catch_warnings():
        # The loaders serve ready-made blocks (no batch sampler, so Lightning cannot record
        # batch indices); the collector does not need them.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(module, datamodule=datamodule, return_predictions=False)


# Each scored set by name: the set and one `Scores` per block (severity).
ScoredSets = Mapping[str, tuple[ImageSet, Sequence[Scores]]]


def score_sets(
    module: L.LightningModule,
    datamodule: CIFARDataModule,
    make_trainer: Callable[[list[Callback]], L.Trainer],
    extra: Sequence[ImageSet] = (),
    keep: Mapping[str, Collection[str]] | None = None,
) -> dict[str, tuple[ImageSet, list[Scores]]]:
    """Every predict set of `datamodule`, then the `extra` sets (e.g. the training images an
    OOD detector fits on), through one `Trainer.predict` call of `module`; `keep` names, per set
    name, the outputs held whole (`Scores.outputs`)."""
    served = [*datamodule.load_predict_sets(), *extra]
    names = [image_set.name for image_set in served]
    if len(set(names)) < len(names):
        raise ValueError(f"scored sets need distinct names, got {names}")
    collector = PredictionCollector(sets=served, keep=keep)
    trainer = make_trainer([collector])
    with serving(datamodule, served):
        predict_quietly(trainer, module, datamodule)
    return {
        image_set.name: (image_set, collector.scores(i, image_set))
        for i, image_set in enumerate(served)
    }
