"""The input pipeline: how uint8 images become model inputs, chosen once per datamodule.

Two strategies read the same `augment` config (`augment.backend`):
- `PerImageInput` (albumentations): each image is augmented on its own in DataLoader workers.
- `BatchedInput` (kornia): whole uint8 batches are augmented at once, each image with its own
  random parameters; with the data on a GPU the batches are cut and augmented there, in
  `on_after_batch_transfer`, otherwise in the loader workers.

Each strategy owns its datasets, its loaders and its `on_after_batch_transfer` part, so the
datamodule never asks which backend is on. Evaluation images (val, test, the clean split and
every OOD set that `predict` scores) all go through the strategy's one eval preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, RandomSampler, get_worker_info

from cifar_lab.data.batched_augment import BatchedPipeline, from_albumentations
from cifar_lab.data.batches import BatchedImages, batch_loader, to_nchw
from cifar_lab.data.ood import ImageSet
from cifar_lab.data.transforms import Transforms
from cifar_lab.errors import CifarLabError

BACKENDS = ("albumentations", "batched")
# augment.batched_on: where the batched backend holds and augments the images. auto: on the
# trainer's device when that is a GPU, else in the loader workers; device: on the trainer's device
# whatever it is (the GPU path, runnable on a CPU), in `on_after_batch_transfer`, no workers.
BATCHED_ON = ("auto", "device", "workers")

Preprocess = Callable[[np.ndarray], torch.Tensor]  # uint8 (n, H, W, 3) -> a model-ready batch


class ArrayDataset(Dataset):
    """uint8 HWC images + labels in memory; `transform` is an albumentations pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def reseed(self, seed: int) -> None:
        """albumentations 2.x draws from its own generator, not numpy's global one."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        label = int(self.labels[index])
        if self.transform is not None:
            return self.transform(image=image)["image"], label
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), label


class BlockBatches(Dataset):
    """The batches of an `ImageSet`, preprocessed; one item is one batch, never across blocks.

    A worker reads one contiguous slice per item (of a memory-mapped file: only those pages),
    and a block scores the same whatever is scored beside it.
    """

    def __init__(self, image_set: ImageSet, preprocess: Preprocess, batch_size: int):
        self.image_set, self.preprocess = image_set, preprocess
        self.index = [
            (start, min(start + batch_size, block.stop))
            for block in image_set.blocks
            for start in range(block.start, block.stop, batch_size)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.image_set.read(*self.index[i]))


def seed_worker(worker_id: int) -> None:
    """Give each worker, each epoch, its own augmentation stream derived from the torch seed.

    Forked workers would otherwise share one copy of the albumentations generator and draw
    identical augmentation parameters; deriving it from torch's per-worker seed also makes
    runs repeat under `seed_everything` and resume with the restored RNG.
    """
    pl_worker_init_function(worker_id)
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, ArrayDataset):
        info.dataset.reseed(torch.initial_seed() % 2**32)


class ReseedingRandomSampler(RandomSampler):
    """A RandomSampler that, in the main process (`num_workers=0`), reseeds the dataset's
    augmentation from the torch RNG each epoch, for the same reasons as `seed_worker`."""

    def __iter__(self):
        self.data_source.reseed(int(torch.randint(2**31, ()).item()))
        yield from super().__iter__()


def block_loader(dataset: BlockBatches, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=None,  # items are batches already
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )


class PerImageInput:
    """albumentations per image, in `num_workers` DataLoader processes."""

    def __init__(self, transforms: Transforms, num_workers: int, pin_memory: bool = True):
        self.transforms, self.num_workers = transforms, num_workers
        self.pin_memory = pin_memory and torch.cuda.is_available()

    def train_set(self, images: np.ndarray, labels: np.ndarray) -> Dataset:
        return ArrayDataset(images, labels, self.transforms.train_views or self.transforms.train)

    def eval_set(self, images: np.ndarray, labels: np.ndarray) -> Dataset:
        return ArrayDataset(images, labels, self.transforms.eval)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """The eval preprocessing of a uint8 block, image by image as `eval_set` applies it."""
        return torch.stack([self.transforms.eval(image=image)["image"] for image in images])

    def loader(self, dataset: Dataset, batch_size: int, train: bool, drop_last: bool) -> DataLoader:
        # Workers are not persistent: each epoch's workers are seeded from the torch RNG,
        # which a checkpoint restores, so a resumed run draws the same augmentations.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=ReseedingRandomSampler(dataset) if train else None,
            drop_last=train and drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=seed_worker,
        )

    def predict_loader(self, image_set: ImageSet, batch_size: int) -> DataLoader:
        return block_loader(BlockBatches(image_set, self.preprocess, batch_size), self.num_workers)

    def on_after_batch_transfer(self, batch: Any, training: bool) -> Any:
        return batch


class BatchedInput:
    """kornia on whole uint8 batches. `on_device` (the default on a GPU): the images are held on
    `device` as one tensor and augmented after transfer, with no workers; otherwise they are held
    on the CPU and the loader workers augment them."""

    def __init__(
        self,
        transforms: Transforms,
        num_workers: int,
        device: torch.device,
        on_device: bool | None = None,
    ):
        if transforms.train_views is not None:
            raise CifarLabError(
                "loss=jsd needs a clean and two augmented views of each image, which only the "
                "per-image pipeline makes; use augment.backend=albumentations"
            )
        size = transforms.img_size
        self.train_pipeline: BatchedPipeline = from_albumentations(transforms.train, size)
        self.eval_pipeline: BatchedPipeline = from_albumentations(transforms.eval, size)
        self.device, self.num_workers = device, num_workers
        self.on_device = device.type != "cpu" if on_device is None else on_device

    def _images(self, images: np.ndarray, labels: np.ndarray, pipeline: BatchedPipeline):
        if self.on_device:
            return BatchedImages(images, labels, None, device=self.device)
        return BatchedImages(images, labels, pipeline)

    def train_set(self, images: np.ndarray, labels: np.ndarray) -> Dataset:
        return self._images(images, labels, self.train_pipeline)

    def eval_set(self, images: np.ndarray, labels: np.ndarray) -> Dataset:
        return self._images(images, labels, self.eval_pipeline)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """A uint8 block as NCHW; on the CPU also resized/normalised, on a device after transfer."""
        batch = to_nchw(images)
        return batch if self.on_device else self.eval_pipeline(batch)

    def loader(self, dataset: Dataset, batch_size: int, train: bool, drop_last: bool) -> DataLoader:
        workers = 0 if self.on_device else self.num_workers
        return batch_loader(dataset, batch_size, train, train and drop_last, workers, seed_worker)

    def predict_loader(self, image_set: ImageSet, batch_size: int) -> DataLoader:
        return block_loader(BlockBatches(image_set, self.preprocess, batch_size), self.num_workers)

    def on_after_batch_transfer(self, batch: Any, training: bool) -> Any:
        """Data on the device: random augmentation for training batches, resize/CLAHE/normalise
        only for every other batch; anything that is not a uint8 batch passes through."""
        if not self.on_device:
            return batch
        if isinstance(batch, (tuple, list)):
            images, rest = batch[0], tuple(batch[1:])
        else:
            images, rest = batch, None
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            return batch
        images = (self.train_pipeline if training else self.eval_pipeline)(images)
        return images if rest is None else (images, *rest)


InputPipeline = PerImageInput | BatchedInput


def resolve_backend(backend: str | None) -> str:
    backend = backend or "albumentations"
    if backend not in BACKENDS:
        raise CifarLabError(f"augment.backend={backend!r} is unknown; expected one of {BACKENDS}")
    return backend


def resolve_batched_on(batched_on: str | None) -> bool | None:
    """`augment.batched_on` as `BatchedInput`'s `on_device` (None = decide by the device)."""
    batched_on = batched_on or "auto"
    if batched_on not in BATCHED_ON:
        raise CifarLabError(
            f"augment.batched_on={batched_on!r} is unknown; expected one of {BATCHED_ON}"
        )
    return {"auto": None, "device": True, "workers": False}[batched_on]


def build_input_pipeline(
    backend: str | None,
    transforms: Transforms,
    num_workers: int,
    device: torch.device,
    pin_memory: bool = True,
    batched_on: str | None = "auto",
) -> InputPipeline:
    """The strategy `augment.backend` names, for data served on `device`; `batched_on` says
    where the batched backend holds and augments the images."""
    on_device = resolve_batched_on(batched_on)
    if resolve_backend(backend) == "batched":
        return BatchedInput(transforms, num_workers, device, on_device)
    return PerImageInput(transforms, num_workers, pin_memory)
