"""A uint8 image set held as one tensor (CIFAR-100 train: 150 MB), served a batch at a time.

On a GPU the tensor is moved there once and each batch is one index operation on the device, as
in airbench (Jordan, 2024): no worker processes, no per-image Python, no host-to-device copy per
step. On the CPU the batch is built, and augmented by a `BatchedPipeline`, inside the loader's
worker processes, so the augmentation runs beside the training step instead of before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

Batch = tuple[torch.Tensor, torch.Tensor]


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) arrays -> one contiguous (N, 3, H, W) tensor, the layout kornia and
    the convolutions expect."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


class BatchedImages(Dataset):
    """uint8 (N, 3, H, W) images and int64 labels on `device`; `pipeline` maps each uint8 batch
    (e.g. to augmented, normalised floats) where the batch is built."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        pipeline: nn.Module | None = None,
        device: torch.device | str = "cpu",
    ):
        self.images = to_nchw(images).to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
        self.pipeline = pipeline

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The whole batch in one index operation (the DataLoader calls this instead of
        `__getitem__` per sample when it exists)."""
        index = torch.as_tensor(indices, dtype=torch.int64).to(self.device, non_blocking=True)
        images = self.images[index]
        if self.pipeline is not None:
            images = self.pipeline(images)
        return images, self.labels[index]


def keep_batch(batch: Batch) -> Batch:
    """The collate function of batch loaders: `__getitems__` already returns the batch."""
    return batch


def batch_loader(
    dataset: BatchedImages,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    num_workers: int = 0,
    worker_init_fn: Callable[[int], Any] | None = None,
    num_samples: int | None = None,
) -> DataLoader:
    """A DataLoader that fetches whole batches; a standard BatchSampler, so Lightning can swap
    in a DistributedSampler under DDP. Data on a GPU is read in the main process.
    `num_samples` (shuffled only) draws that many samples, going through the set repeatedly."""
    if shuffle:
        sampler = RandomSampler(dataset, num_samples=num_samples)
    else:
        sampler = SequentialSampler(dataset)
    workers = num_workers if dataset.device.type == "cpu" else 0
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last),
        collate_fn=keep_batch,
        num_workers=workers,
        worker_init_fn=worker_init_fn if workers else None,
    )
