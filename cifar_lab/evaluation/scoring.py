"""Class probabilities for uint8 image arrays: one model, one preprocessing, one Trainer.

Clean and corrupted images take this same path (the datamodule's eval transform per image,
`Trainer.predict` with the module's TTA-aware `predict_step`), so an OOD file that copies the
test set scores exactly like the test set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cifar_lab.evaluation.tta import TestTimeAugmentation
from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.train import resolve_precision


class ImageBatches(Dataset):
    """Preprocessed batches cut from uint8 (N, H, W, 3) arrays, never across two arrays.

    One item is one batch, so a loader worker reads it as one contiguous slice (a memory-mapped
    array reads only those pages) and a block scores the same whatever is scored beside it.
    """

    def __init__(self, blocks: Sequence[np.ndarray], transform: Callable, batch_size: int):
        self.blocks, self.transform = list(blocks), transform
        self.index = [
            (b, start, min(start + batch_size, len(block)))
            for b, block in enumerate(self.blocks)
            for start in range(0, len(block), batch_size)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        b, start, stop = self.index[i]
        return torch.stack([self.transform(image=im)["image"] for im in self.blocks[b][start:stop]])


@dataclass
class Scores:
    """Probabilities (N, C) of one block of images and its share of the scoring wall time."""

    probs: torch.Tensor
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.probs) / max(self.seconds, 1e-9)

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(dim=1).numpy()

    @property
    def confidence(self) -> float:
        """Mean max-softmax: how sure the model is, readable without labels."""
        return float(self.probs.max(dim=1).values.mean())

    def accuracy(self, labels: np.ndarray, top_k: int = 1) -> float:
        """Fraction of images whose label is among the `top_k` most probable classes."""
        labels = np.asarray(labels)
        if top_k == 1:
            return float(np.mean(self.predictions == labels))
        top = self.probs.topk(top_k, dim=1).indices.numpy()
        return float(np.mean((top == labels[:, None]).any(axis=1)))


class Scorer:
    """Runs `module` over uint8 (N, H, W, 3) arrays; memory-mapped arrays stay on disk."""

    def __init__(
        self,
        module: CIFARClassifier,
        transform: Callable,
        trainer: L.Trainer,
        batch_size: int = 256,
        num_workers: int = 0,
    ):
        self.module, self.transform, self.trainer = module, transform, trainer
        self.batch_size, self.num_workers = batch_size, num_workers

    def score(self, blocks: Sequence[np.ndarray]) -> list[Scores]:
        """One `Scores` per block, all blocks in one `Trainer.predict` call."""
        dataset = ImageBatches(blocks, self.transform, self.batch_size)
        loader = DataLoader(
            dataset,
            batch_size=None,  # items are batches already
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        start = time.perf_counter()
        outputs = self.trainer.predict(self.module, dataloaders=loader)
        seconds = time.perf_counter() - start
        dataset.blocks = []  # the Trainer keeps the loader; let go of (memory-mapped) images
        per_block: list[list[torch.Tensor]] = [[] for _ in blocks]
        for (b, _, _), probs in zip(dataset.index, outputs, strict=True):
            per_block[b].append(probs)
        total = max(sum(len(block) for block in blocks), 1)
        return [
            Scores(torch.cat(parts), seconds * len(block) / total)
            for parts, block in zip(per_block, blocks, strict=True)
        ]


def score_arrays(
    module: CIFARClassifier,
    images: np.ndarray,
    labels: np.ndarray | None,
    transform: Callable,
    tta: TestTimeAugmentation | None = None,
    batch_size: int = 256,
    trainer: L.Trainer | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """Top-1 accuracy (when `labels` are given) and images/s of `module` with `tta` on `images`:
    the one-call form for benchmarks. `tta` replaces the module's own for this call."""
    trainer = trainer or L.Trainer(
        accelerator="auto",
        devices=1,
        precision=resolve_precision("auto"),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    previous, module.tta = module.tta, tta
    try:
        (scores,) = Scorer(module, transform, trainer, batch_size, num_workers).score([images])
    finally:
        module.tta = previous
    result = {
        "images": float(len(images)),
        "seconds": scores.seconds,
        "images_per_s": scores.images_per_s,
    }
    if labels is not None:
        result["acc"] = scores.accuracy(labels)
    return result
