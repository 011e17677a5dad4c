"""Per-image augmentation pipelines built with albumentations from an `augment` config.

The config names each step of the reference recipe with its probability and range (see
`conf/augment/seed.yaml`); a step set to null is off. Keeping the steps as plain values, not as
albumentations class paths, lets the batched GPU path read the same file. Each step is one record
of `cifar_lab.data.augment_steps`, which says how it is built; this module puts the steps the
config switches on in order, between the resize and the normalisation.

`loss=jsd` trains on `SplitViews`: the clean image and two augmented views of the same
crop/flip (AugMix's Jensen-Shannon input, timm's AugMixDataset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from cifar_lab.data.albumentations_steps import strict
from cifar_lab.data.augment_steps import AUGMENT_STEPS, SETTINGS, TRAIN_STEPS, Stage
from cifar_lab.data.cifar_c import NATIVE_SIZE
from cifar_lab.errors import CifarLabError

# Per-channel mean/std of the training images, on the 0-1 scale.
NORMALIZATION_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def augment_normalization(
    augment: Mapping[str, Any], dataset: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std that an `augment` config asks for (its `stats` key, `dataset` by default)."""
    return normalization_stats(augment.get("stats", "dataset"), dataset)


def normalization_stats(stats: str, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for `augment.stats`: `dataset` (the data's own) or a named set like `imagenet`."""
    key = dataset if stats == "dataset" else stats
    if key not in NORMALIZATION_STATS:
        raise CifarLabError(
            f"augment.stats={stats!r} is unknown; expected 'dataset' or one of "
            f"{sorted(NORMALIZATION_STATS)}"
        )
    return NORMALIZATION_STATS[key]


# The steps that `loss=jsd` leaves out of the clean view: everything after crop and flip.
VIEW_BASE_STEPS = ("crop", "hflip")


def _steps(
    augment: Mapping[str, Any], img_size: int, stage: Stage, names: Sequence[str] | None = None
) -> list[A.BasicTransform]:
    """The transforms of the `stage` steps (of `names`, if given) the config switches on, in
    the order of `AUGMENT_STEPS`."""
    built: list[A.BasicTransform] = []
    for step in AUGMENT_STEPS:
        spec = augment.get(step.name)
        if step.stage == stage and (names is None or step.name in names) and step.is_on(spec):
            built += step.per_image(spec, img_size)
    return built


def _preprocess(augment: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
    """Steps every image gets, train and eval alike: resize to `img_size`, then CLAHE if on."""
    steps: list[A.BasicTransform] = []
    if img_size != NATIVE_SIZE:
        steps.append(
            strict(A.Resize, height=img_size, width=img_size, interpolation=cv2.INTER_CUBIC)
        )
    return steps + _steps(augment, img_size, "preprocess")


def _finish(
    mean: Sequence[float], std: Sequence[float], normalised: Sequence[A.BasicTransform] = ()
) -> list[A.BasicTransform]:
    """Normalise, then the `normalised` steps (random erasing when training), then CHW tensor."""
    normalize = strict(A.Normalize, mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)
    return [normalize, *normalised, ToTensorV2()]


def _check_keys(augment: Mapping[str, Any]) -> None:
    unknown = unknown_steps(augment)
    if unknown:
        others = {*SETTINGS, *(step.name for step in AUGMENT_STEPS)} - set(TRAIN_STEPS)
        raise CifarLabError(
            f"augment config has unknown keys {unknown}; expected steps from {list(TRAIN_STEPS)} "
            f"or {sorted(others)}: check the spelling"
        )


def build_train_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """uint8 HWC image -> float CHW tensor, with the augment config's random steps."""
    _check_keys(augment)
    steps = _preprocess(augment, img_size) + _steps(augment, img_size, "train")
    normalised = _steps(augment, img_size, "normalised")
    return A.Compose(steps + _finish(mean, std, normalised), strict=True)


class SplitViews:
    """AugMix's input for the Jensen-Shannon loss (Hendrycks et al., 2020; timm's
    AugMixDataset): one crop/flip of the image, then the clean view (normalised only) and
    `views - 1` views through the config's other random steps, stacked as (views, C, H, W)."""

    def __init__(self, base: A.Compose, clean: A.Compose, augmented: A.Compose, views: int):
        self.base, self.clean, self.augmented, self.views = base, clean, augmented, views

    def set_random_seed(self, seed: int) -> None:
        for offset, pipeline in enumerate((self.base, self.clean, self.augmented)):
            pipeline.set_random_seed(seed + offset)

    def __call__(self, *, image: np.ndarray) -> dict[str, torch.Tensor]:
        cropped = self.base(image=image)["image"]
        views = [self.clean(image=cropped)["image"]]
        views += [self.augmented(image=cropped)["image"] for _ in range(self.views - 1)]
        return {"image": torch.stack(views)}


def build_split_views(
    augment: Mapping[str, Any],
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    views: int = 3,
) -> SplitViews:
    """The `loss=jsd` training input of `augment`: crop and flip shared by all views, the
    other random steps (and random erasing) in the augmented views only."""
    _check_keys(augment)
    others = [name for name in TRAIN_STEPS if name not in VIEW_BASE_STEPS]
    augmented = _steps(augment, img_size, "train", others)
    if not augmented:
        raise CifarLabError(
            f"loss=jsd compares the clean image with augmented views, but augment="
            f"{augment.get('name')} has no augmentation beyond crop and flip; use augment=augmix"
        )
    base = _preprocess(augment, img_size) + _steps(augment, img_size, "train", VIEW_BASE_STEPS)
    return SplitViews(
        base=A.Compose(base, strict=True),
        clean=A.Compose(_finish(mean, std), strict=True),
        augmented=A.Compose(
            augmented + _finish(mean, std, _steps(augment, img_size, "normalised")), strict=True
        ),
        views=views,
    )


def build_eval_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """The deterministic part of the pipeline, shared by validation, test and every OOD set."""
    return A.Compose(_preprocess(augment, img_size) + _finish(mean, std), strict=True)


def unknown_steps(augment: Mapping[str, Any]) -> list[str]:
    """Keys of an augment config that no step reads (a typo would otherwise be ignored)."""
    return sorted(set(augment) - {step.name for step in AUGMENT_STEPS} - set(SETTINGS))


@dataclass(frozen=True)
class Transforms:
    """The per-image train and eval pipelines of one `augment` config, and their normalisation."""

    train: A.Compose
    eval: A.Compose
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int
    train_views: SplitViews | None = None  # loss=jsd: what training images go through instead


def build_transforms(
    augment: Mapping[str, Any], dataset: str, img_size: int, train_views: int = 1
) -> Transforms:
    """Both pipelines of `augment` for `dataset` at `img_size`: what the datamodule, the
    augmentation preview and the benchmarks all use; `train_views > 1` adds `SplitViews`."""
    mean, std = augment_normalization(augment, dataset)
    views = None
    if train_views > 1:
        views = build_split_views(augment, img_size, mean, std, train_views)
    return Transforms(
        train=build_train_transform(augment, img_size, mean, std),
        eval=build_eval_transform(augment, img_size, mean, std),
        mean=tuple(mean),
        std=tuple(std),
        img_size=img_size,
        train_views=views,
    )
