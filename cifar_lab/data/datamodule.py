"""LightningDataModule for CIFAR-100/10: seeded train/val split, albumentations per image."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, RandomSampler, get_worker_info

from cifar_lab.data.batched_augment import from_albumentations, resolve_backend
from cifar_lab.data.batches import BatchedImages, batch_loader
from cifar_lab.data.datasets import ImageArrays, load_cifar
from cifar_lab.data.mixing import mixing_enabled
from cifar_lab.data.transforms import (
    augment_normalization,
    build_eval_transform,
    build_train_transform,
)
from cifar_lab.errors import CifarLabError
from cifar_lab.speed import usable_cores


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
        if self.transform is not None:
            return self.transform(image=image)["image"], int(self.labels[index])
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), int(
            self.labels[index]
        )


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


def resolve_num_workers(num_workers: int | str) -> int:
    """`auto` = one worker per core but one (the main process trains), at most 8."""
    if num_workers == "auto":
        return max(0, min(8, usable_cores() - 1))
    if not isinstance(num_workers, int) or num_workers < 0:
        raise CifarLabError(
            f"data.num_workers={num_workers!r} is invalid; expected 'auto' or an integer >= 0"
        )
    return num_workers


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut into (train, val) index arrays; same seed, same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise CifarLabError(
            f"data.val_fraction={val_fraction} is out of range; expected 0 <= val_fraction < 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class CIFARDataModule(L.LightningDataModule):
    """CIFAR-100 (or CIFAR-10) train/val/test loaders.

    With `val_fraction=0` the test split doubles as validation, as in many CIFAR papers;
    the reference recipe held out 20% of the training images instead.
    """

    def __init__(
        self,
        name: str = "cifar100",
        root: str = "data",
        download: bool = True,
        check_integrity: bool = True,
        num_classes: int = 100,
        img_size: int = 32,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        val_fraction: float = 0.1,
        pin_memory: bool = True,
        seed: int = 42,
        augment: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.augment = dict(augment or {})
        self.backend = resolve_backend(self.augment)
        self.train_pipeline: torch.nn.Module | None = None  # batched backend, data on a GPU
        self.eval_pipeline: torch.nn.Module | None = None
        self.mean, self.std = augment_normalization(self.augment, name)
        self.num_workers = resolve_num_workers(num_workers)
        self.root = Path(root).expanduser()
        self.drop_last_train = mixing_enabled(self.augment.get("mix"))
        if self.drop_last_train and batch_size % 2:
            raise CifarLabError(
                f"data.batch_size={batch_size} is odd but CutMix/MixUp pair images within a "
                f"batch; use an even batch size or set augment.mix=null"
            )
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.classes: list[str] = []

    # --- data on disk -------------------------------------------------------------------
    def _load(self, train: bool, download: bool = False) -> ImageArrays:
        hp = self.hparams
        return load_cifar(hp.name, self.root, train, download, hp.check_integrity)

    def prepare_data(self) -> None:
        if self.hparams.download:
            self._load(train=True, download=True)
            self._load(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train, test = self._load(train=True), self._load(train=False)
        if int(train.labels.max(initial=0)) >= hp.num_classes:
            raise CifarLabError(
                f"labels in {self.root} go up to {int(train.labels.max())} but "
                f"data.num_classes={hp.num_classes}; pick the matching data config"
            )
        self.classes = train.classes
        train_tf = build_train_transform(self.augment, hp.img_size, self.mean, self.std)
        eval_tf = self.eval_transform()
        if self.backend == "batched":
            train_tf, eval_tf = self._batched_pipelines(train_tf, eval_tf)
        if hp.val_fraction > 0:
            train_idx, val_idx = split_indices(len(train), hp.val_fraction, hp.seed)
            make = self._dataset
            self.train_set = make(train.images[train_idx], train.labels[train_idx], train_tf)
            self.val_set = make(train.images[val_idx], train.labels[val_idx], eval_tf)
        else:
            self.train_set = self._dataset(train.images, train.labels, train_tf)
            self.val_set = self._dataset(test.images, test.labels, eval_tf)
        self.test_set = self._dataset(test.images, test.labels, eval_tf)

    # --- batched backend: whole uint8 batches augmented by kornia -------------------------
    def data_device(self) -> torch.device:
        """Where the batched backend keeps the images: the trainer's device, else the CPU."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _batched_pipelines(self, train_tf: Callable, eval_tf: Callable) -> tuple[Any, Any]:
        """kornia versions of both pipelines. On a GPU they run in `on_after_batch_transfer`
        (the datasets serve raw uint8); on the CPU the datasets run them in the loader workers."""
        size = self.hparams.img_size
        train_pipe = from_albumentations(train_tf, size)
        eval_pipe = from_albumentations(eval_tf, size)
        if self.data_device().type == "cpu":
            return train_pipe, eval_pipe
        self.train_pipeline, self.eval_pipeline = train_pipe, eval_pipe
        return None, None

    def _dataset(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> Dataset:
        if self.backend == "batched":
            return BatchedImages(images, labels, transform, device=self.data_device())
        return ArrayDataset(images, labels, transform)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Batched backend with the data on a GPU: random augmentation for training batches,
        resize/CLAHE/normalise only for every other batch; anything not uint8 passes through."""
        if self.train_pipeline is None or not isinstance(batch, (tuple, list)):
            return batch
        images, *rest = batch
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            return batch
        training = self.trainer is not None and self.trainer.training
        pipeline = self.train_pipeline if training else self.eval_pipeline
        return (pipeline(images), *rest)

    def eval_transform(self) -> Callable:
        """The deterministic preprocessing of val/test, reused for OOD sets by `predict`."""
        return build_eval_transform(self.augment, self.hparams.img_size, self.mean, self.std)

    # --- loaders ------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        hp = self.hparams
        batch_size = hp.batch_size if train else (hp.eval_batch_size or hp.batch_size)
        if isinstance(dataset, BatchedImages):
            drop_last, workers = train and self.drop_last_train, self.num_workers
            return batch_loader(dataset, batch_size, train, drop_last, workers, seed_worker)
        # Workers are not persistent: each epoch's workers are seeded from the torch RNG,
        # which a checkpoint restores, so a resumed run draws the same augmentations.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=ReseedingRandomSampler(dataset) if train else None,
            drop_last=train and self.drop_last_train,
            num_workers=self.num_workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)
