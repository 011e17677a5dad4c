"""What `Trainer.predict` yields, kept small: the top-k classes and probabilities per image.

The module's predict step returns class probabilities (averaged over its TTA views); a
`PredictionCollector` callback keeps only each image's `k` most probable classes, so scoring
the 950,000 leaderboard images holds a few tens of MB instead of every softmax. Batches are
timed as they arrive, so each set reports its own images/s.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    """Per predict loader (one `ImageSet` each), the top-k of every batch and its wall time; a
    line per finished set (images, img/s, sets left, ETA), so a long scoring run shows progress
    also without a progress bar."""

    def __init__(self, top_k: int = TOP_K, sets: Sequence[ImageSet] = ()):
        super().__init__(write_interval="batch")
        self.top_k = top_k
        self.sets = list(sets)
        self.parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.seconds: dict[int, float] = {}
        self._clock = 0.0
        self._current: int | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.parts, self.seconds, self._current = {}, {}, None
        self._clock = time.perf_counter()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(self._current)

    def _report(self, index: int | None) -> None:
        """The progress line of the set of predict loader `index`, once it is scored."""
        if index is None or index >= len(self.sets):
            return
        done = sum(len(c) for parts in self.parts.values() for c, _ in parts)
        seconds = sum(self.seconds.values())
        total = sum(image_set.num_images for image_set in self.sets)
        images = sum(len(c) for c, _ in self.parts.get(index, []))
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

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != self._current:
            self._report(self._current)
            self._current = dataloader_idx
        k = min(self.top_k, prediction.shape[1])
        top = prediction.float().topk(k, dim=1)
        self.parts.setdefault(dataloader_idx, []).append((top.indices.cpu(), top.values.cpu()))
        now = time.perf_counter()
        self.seconds[dataloader_idx] = self.seconds.get(dataloader_idx, 0.0) + now - self._clock
        self._clock = now

    def scores(self, index: int, image_set: ImageSet) -> list[Scores]:
        """One `Scores` per block of `image_set`, the set served by predict loader `index`."""
        parts = self.parts.get(index, [])
        classes = torch.cat([c for c, _ in parts]).numpy() if parts else np.zeros((0, 1), int)
        probs = torch.cat([p for _, p in parts]).numpy() if parts else np.zeros((0, 1), "f4")
        total = max(len(classes), 1)
        seconds = self.seconds.get(index, 0.0)
        start = image_set.blocks[0].start if image_set.blocks else 0
        out = []
        for block in image_set.blocks:
            rows = slice(block.start - start, block.stop - start)
            n = rows.stop - rows.start
            out.append(Scores(classes[rows], probs[rows], seconds * n / total))
        return out


# Each scored set by name: the set and one `Scores` per block (severity).
ScoredSets = Mapping[str, tuple[ImageSet, Sequence[Scores]]]


def score_sets(
    module: L.LightningModule,
    datamodule: CIFARDataModule,
    make_trainer: Callable[[list[Callback]], L.Trainer],
) -> dict[str, tuple[ImageSet, list[Scores]]]:
    """Every predict set of `datamodule` through one `Trainer.predict` call of `module`."""
    collector = PredictionCollector(sets=datamodule.load_predict_sets())
    trainer = make_trainer([collector])
    with warnings.catch_warnings():
        # The loaders serve ready-made blocks (no batch sampler, so Lightning cannot record
        # batch indices); the collector does not need them.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
    return {
        image_set.name: (image_set, collector.scores(i, image_set))
        for i, image_set in enumerate(datamodule.predict_sets)
    }
