"""LightningDataModule for CIFAR-100/10 and the OOD sets scored beside them.

Training: a seeded train/val split of the train images, the test split for `test`; with
`classes` (the open-set protocol) only those classes, relabelled 0..k-1. Prediction: the clean
test split (`predict_clean`), every file of the configured OOD set (`ood`), one loader each,
memory-mapped, whose batches never cross a severity block, and the OOD detection sets
(`detect`, `detection_sets`). For detectors and calibration it also serves a class-balanced part
of the training images (`fit_set`), the validation split (`calibration_set`) and any image set
with the eval transforms (`loader_of`). How images become model inputs is the input pipeline's
job (`cifar_lab.data.pipelines`), chosen once in `setup`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from cifar_lab.data.datasets import ImageArrays, load_cifar
from cifar_lab.data.detection_sets import DetectionSet
from cifar_lab.data.detection_sources import DetectionSources
from cifar_lab.data.mixing import mixing_enabled
from cifar_lab.data.ood import ImageSet, OODSet
from cifar_lab.data.open_set import ClassSubset
from cifar_lab.data.pipelines import (
    InputPipeline,
    build_input_pipeline,
    resolve_backend,
    resolve_batched_on,
)
from cifar_lab.data.subsets import balanced_subset, class_interleaved
from cifar_lab.data.transforms import Transforms, build_transforms
from cifar_lab.errors import CifarLabError
from cifar_lab.speed import usable_cores

CLEAN_SET = "clean"  # the name of the clean test split among the predict sets


def resolve_num_workers(num_workers: int | str) -> int:
    """`auto` = one worker per core but one (the main process trains), at most 8."""
    if num_workers == "auto":
        return max(0, min(8, usable_cores() - 1))
    if not isinstance(num_workers, int) or num_workers < 0:
        raise CifarLabError(
            f"data.num_workers={num_workers!r} is invalid; expected 'auto' or an integer >= 0"
        )
    return num_workers


def check_batch_size(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CifarLabError(
            f"data.{key}={value!r} is invalid; expected an integer >= 1, e.g. data.{key}=128"
        )


def check_img_size(value: Any) -> None:
    """The side models see; checked first, so no later check (TTA shifts, a resize) names it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 2048:
        raise CifarLabError(
            f"data.img_size={value!r} is invalid; expected an integer from 8 to 2048: 32 is "
            f"CIFAR's own size, 96 or 224 upscale for ImageNet-pretrained stems"
        )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut into (train, val) index arrays; same seed, same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise CifarLabError(
            f"data.val_fraction={val_fraction} is out of range; expected 0 <= val_fraction < 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if n_val == n or (val_fraction > 0 and n_val == 0):
        left = "no training image" if n_val == n else "no validation image"
        raise CifarLabError(
            f"data.val_fraction={val_fraction} of {n} training images leaves {left}; expected "
            f"a fraction that keeps both (0 < {n_val}/{n} < 1): change it, or set "
            f"data.val_fraction=0 to validate on the test split"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class CIFARDataModule(L.LightningDataModule):
    """CIFAR-100 (or CIFAR-10) train/val/test loaders, and predict loaders over OOD sets.

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
        ood: OODSet | None = None,
        predict_clean: bool = True,
        train_views: int = 1,
        classes: Sequence[int | str] | None = None,
        detect: DetectionSources | None = None,
    ):
        super().__init__()
        check_img_size(img_size)
        check_batch_size("batch_size", batch_size)
        if eval_batch_size is not None:
            check_batch_size("eval_batch_size", eval_batch_size)
        self.save_hyperparameters(logger=False, ignore=["ood", "detect"])
        self.augment = dict(augment or {})
        self.backend = resolve_backend(self.augment.get("backend"))
        self.batched_on = self.augment.get("batched_on")
        resolve_batched_on(self.batched_on)  # a bad value fails here, before any data is read
        self.transforms: Transforms = build_transforms(self.augment, name, img_size, train_views)
        self.num_workers = resolve_num_workers(num_workers)
        self.root = Path(root).expanduser()
        self.drop_last_train = mixing_enabled(self.augment.get("mix"))
        if self.drop_last_train and batch_size % 2:
            raise CifarLabError(
                f"data.batch_size={batch_size} is odd but CutMix/MixUp pair images within a "
                f"batch; use an even batch size or set augment.mix=null"
            )
        self.ood, self.predict_clean = ood, predict_clean
        self.detect = detect if detect is not None and not detect.empty else None
        self.detection_sets: list[DetectionSet] = []
        self.input: InputPipeline | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_sets: list[ImageSet] | None = None
        self.splits: tuple[ImageArrays, np.ndarray, np.ndarray, ImageArrays] | None = None
        self.classes: list[str] = []

    @property
    def eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    # --- data on disk -------------------------------------------------------------------
    def _load(self, train: bool, download: bool = False) -> ImageArrays:
        hp = self.hparams
        return load_cifar(hp.name, self.root, train, download, hp.check_integrity)

    def prepare_data(self) -> None:
        """Download what this stage reads: both splits to fit, the test split to predict."""
        if not self.hparams.download:
            return
        predicting = self.trainer is not None and self.trainer.state.fn == TrainerFn.PREDICTING
        if not predicting:
            self._load(train=True, download=True)
        if self.predict_clean or not predicting:
            self._load(train=False, download=True)

    def data_device(self) -> torch.device:
        """Where batches are built: the trainer's device, else the CPU."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def input_pipeline(self) -> InputPipeline:
        """The strategy of `augment.backend`, made once the trainer (and so the device) is known."""
        if self.input is None:
            self.input = build_input_pipeline(
                self.backend,
                self.transforms,
                self.num_workers,
                self.data_device(),
                self.hparams.pin_memory,
                self.batched_on,
            )
        return self.input

    def class_subset(self, split: ImageArrays) -> ClassSubset | None:
        """`classes` checked against the dataset's names (None: every class is known)."""
        hp = self.hparams
        if hp.classes is None:
            return None
        subset = ClassSubset.resolve(hp.classes, split.classes, hp.name)
        if len(subset.indices) != hp.num_classes:
            raise CifarLabError(
                f"data.classes lists {len(subset.indices)} classes but data.num_classes="
                f"{hp.num_classes}; the model must predict one output per known class: add "
                f"data.num_classes={len(subset.indices)}"
            )
        return subset

    def known(self, split: ImageArrays) -> ImageArrays:
        """The split as the model sees it: the known classes only under the open-set protocol."""
        subset = self.class_subset(split)
        return split if subset is None else subset.known(split)

    def train_split(self, download: bool = False) -> tuple[ImageArrays, np.ndarray, np.ndarray]:
        """The training images of the known classes and the seeded (train, val) indices into
        them that `train` used (val empty with `val_fraction=0`)."""
        hp = self.hparams
        train = self.known(self._load(train=True, download=download))
        if hp.val_fraction > 0:
            train_idx, val_idx = split_indices(len(train), hp.val_fraction, hp.seed)
            return train, train_idx, val_idx
        return train, np.arange(len(train)), np.arange(0)

    def load_splits(self) -> tuple[ImageArrays, np.ndarray, np.ndarray, ImageArrays]:
        """The known classes' training images with the seeded (train, val) indices into them,
        and the test split, read once and checked (labels within `num_classes`). `train` calls
        this before it starts a logger, so data that fails to load leaves no logger run."""
        if self.splits is None:
            hp = self.hparams
            train, train_idx, val_idx = self.train_split()
            test = self.known(self._load(train=False))
            for split, part in (("train", train), ("test", test)):  # before any epoch, not after
                if int(part.labels.max(initial=0)) >= hp.num_classes:
                    raise CifarLabError(
                        f"{split} labels in {self.root} go up to {int(part.labels.max())} but "
                        f"data.num_classes={hp.num_classes}; pick the matching data config"
                    )
            self.splits = (train, train_idx, val_idx, test)
        return self.splits

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.load_predict_sets()
            return
        if self.train_set is not None:
            return
        hp = self.hparams
        train, train_idx, val_idx, test = self.load_splits()
        self.classes = train.classes
        pipeline = self.input_pipeline()
        test_order = class_interleaved(test.labels)
        if hp.val_fraction > 0:
            self.train_set = pipeline.train_set(train.images[train_idx], train.labels[train_idx])
            val_idx = val_idx[class_interleaved(train.labels[val_idx])]
            self.val_set = pipeline.eval_set(train.images[val_idx], train.labels[val_idx])
        else:
            self.train_set = pipeline.train_set(train.images, train.labels)
            self.val_set = pipeline.eval_set(test.images[test_order], test.labels[test_order])
        self.test_set = pipeline.eval_set(test.images[test_order], test.labels[test_order])
        self.splits = None  # the sets above hold what they need

    def load_predict_sets(self) -> list[ImageSet]:
        """The clean test split (if `predict_clean`), the OOD set's files and the detection
        sets, checked (shapes, labels): `predict` calls this before scoring so bad files fail
        first. Detection sets are read into memory (each at most `detect.max_images`)."""
        if self.predict_sets is not None:
            return self.predict_sets
        hp = self.hparams
        sets: list[ImageSet] = []
        test = None
        if self.predict_clean:
            test = self._load(train=False, download=hp.download)
            known = self.known(test)
            self.classes = known.classes
            sets.append(ImageSet.in_memory(CLEAN_SET, known.images, known.labels))
        if self.ood is not None:
            sets += self.ood.image_sets()
        if self.detect is not None:
            heldout = None
            if hp.classes is not None:
                test = test if test is not None else self._load(False, download=hp.download)
                heldout = self.class_subset(test).heldout(test)
            self.detection_sets = self.detect.load(hp.name, heldout)
            sets += [detection_set.images for detection_set in self.detection_sets]
        self.predict_sets = sets
        return sets

    def fit_set(self, max_images: int, seed: int) -> ImageSet:
        """Up to `max_images` training images (not the validation split), class-balanced and
        chosen with `seed`, labels kept: what detectors that fit on features (Mahalanobis, KNN,
        ViM) see of the training distribution. Served by `loader_of` with the eval transforms."""
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise CifarLabError(
                f"{max_images!r} training images to fit a detector on is not a count; expected "
                f"an integer >= 1 (detect.fit_images)"
            )
        train, train_idx, _ = self.train_split(download=self.hparams.download)
        labels = train.labels[train_idx]
        chosen = balanced_subset(labels, min(max_images, len(labels)), seed, "detect.fit_images")
        rows = train_idx[chosen]
        return ImageSet.in_memory("fit", train.images[rows], train.labels[rows])

    def calibration_set(self) -> ImageSet:
        """The validation split `train` held out (`val_fraction`, `seed`), labels kept: where a
        temperature is fitted without touching the test split."""
        hp = self.hparams
        if not hp.val_fraction > 0:
            raise CifarLabError(
                "this model was trained with data.val_fraction=0 (the test split validated it), "
                "so no held-out training images are left to fit the temperature on, and fitting "
                "it on the test split would score the test split with itself: train with "
                "data.val_fraction=0.1 to calibrate"
            )
        train, _, val_idx = self.train_split(download=hp.download)
        return ImageSet.in_memory("calibration", train.images[val_idx], train.labels[val_idx])

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self.trainer is not None and self.trainer.training
        return self.input_pipeline().on_after_batch_transfer(batch, training)

    # --- loaders ------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self.input_pipeline().loader(
            self.train_set, self.hparams.batch_size, True, self.drop_last_train
        )

    def val_dataloader(self) -> DataLoader:
        return self.input_pipeline().loader(self.val_set, self.eval_batch_size, False, False)

    def test_dataloader(self) -> DataLoader:
        return self.input_pipeline().loader(self.test_set, self.eval_batch_size, False, False)

    def predict_dataloader(self) -> list[DataLoader]:
        """One loader per predict set, in `predict_sets` order (the clean split first)."""
        return [self.loader_of(image_set) for image_set in self.load_predict_sets()]

    def loader_of(self, image_set: ImageSet) -> DataLoader:
        """Batches of any image set's images (no labels) through the eval transforms, as the
        predict loaders serve them."""
        return self.input_pipeline().predict_loader(image_set, self.eval_batch_size)
