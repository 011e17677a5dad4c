"""Per-image augmentation pipelines built with albumentations from an `augment` config.

The config names each step of the reference recipe with its probability and range (see
`conf/augment/seed.yaml`); a step set to null is off. Keeping the steps as plain values, not as
albumentations class paths, lets the batched GPU path read the same file.

Every transform is built with `strict=True`: albumentations 2.x otherwise ignores a misspelt
argument (e.g. `var_limit` on GaussNoise) and silently trains without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from cifar_lab.data.datasets import NATIVE_SIZE
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


TRAIN_STEPS = (
    "crop",
    "hflip",
    "brightness_contrast",
    "gauss_noise",
    "rotate",
    "color_jitter",
    "jpeg",
)


def normalization_stats(stats: str, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std for `augment.stats`: `dataset` (the data's own) or a named set like `imagenet`."""
    key = dataset if stats == "dataset" else stats
    if key not in NORMALIZATION_STATS:
        raise CifarLabError(
            f"augment.stats={stats!r} is unknown; expected 'dataset' or one of "
            f"{sorted(NORMALIZATION_STATS)}"
        )
    return NORMALIZATION_STATS[key]


def _strict(cls: type[A.BasicTransform], **kwargs: Any) -> A.BasicTransform:
    try:
        return cls(**kwargs, strict=True)
    except (ValueError, TypeError) as err:
        raise CifarLabError(
            f"bad arguments for albumentations.{cls.__name__}: {err}; fix the augment config"
        ) from err


CROP_KEYS = ("kind", "pad", "scale", "ratio")


def _crop(spec: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
    """Reflect-pad by `pad` pixels, then a random (resized) crop back to `img_size`."""
    unknown = sorted(set(spec) - set(CROP_KEYS))
    if unknown:
        raise CifarLabError(
            f"augment.crop has unknown keys {unknown}; expected only {list(CROP_KEYS)}: fix the "
            f"spelling or remove them"
        )
    kind = spec.get("kind", "random")
    pad = int(spec.get("pad", 4))
    padded = img_size + 2 * pad
    steps: list[A.BasicTransform] = []
    if pad > 0:
        steps.append(
            _strict(
                A.PadIfNeeded,
                min_height=padded,
                min_width=padded,
                border_mode=cv2.BORDER_REFLECT_101,
            )
        )
    if kind == "random":
        steps.append(_strict(A.RandomCrop, height=img_size, width=img_size))
    elif kind == "random_resized":
        steps.append(
            _strict(
                A.RandomResizedCrop,
                size=(img_size, img_size),
                scale=tuple(spec.get("scale", (0.8, 1.0))),
                ratio=tuple(spec.get("ratio", (0.75, 4 / 3))),
            )
        )
    else:
        raise CifarLabError(
            f"augment.crop.kind={kind!r} is unknown; expected 'random' or 'random_resized'"
        )
    return steps


def _train_step(name: str, spec: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
    spec = dict(spec)
    if name == "crop":
        return _crop(spec, img_size)
    if name == "hflip":
        return [_strict(A.HorizontalFlip, **spec)]
    if name == "brightness_contrast":
        return [_strict(A.RandomBrightnessContrast, **spec)]
    if name == "gauss_noise":
        return [_strict(A.GaussNoise, std_range=tuple(spec.pop("std_range")), **spec)]
    if name == "rotate":
        return [_strict(A.Rotate, border_mode=cv2.BORDER_REFLECT_101, **spec)]
    if name == "color_jitter":
        return [_strict(A.ColorJitter, **spec)]
    if name == "jpeg":
        return [_strict(A.ImageCompression, quality_range=tuple(spec.pop("quality_range")), **spec)]
    raise AssertionError(name)


def _preprocess(augment: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
    """Steps every image gets, train and eval alike: resize to `img_size`, then CLAHE if on."""
    steps: list[A.BasicTransform] = []
    if img_size != NATIVE_SIZE:
        steps.append(
            _strict(A.Resize, height=img_size, width=img_size, interpolation=cv2.INTER_CUBIC)
        )
    clahe = augment.get("clahe")
    if clahe:
        spec = dict(clahe) if isinstance(clahe, Mapping) else {}
        steps.append(
            _strict(
                A.CLAHE,
                clip_limit=spec.get("clip_limit", 2.0),
                tile_grid_size=tuple(spec.get("tile_grid_size", (4, 4))),
                p=1.0,
            )
        )
    return steps


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[A.BasicTransform]:
    return [
        _strict(A.Normalize, mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]


def build_train_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """uint8 HWC image -> float CHW tensor, with the augment config's random steps."""
    unknown = unknown_steps(augment)
    if unknown:
        raise CifarLabError(
            f"augment config has unknown keys {unknown}; expected steps from {list(TRAIN_STEPS)} "
            f"or 'clahe', 'stats', 'mix', 'backend': check the spelling"
        )
    steps = _preprocess(augment, img_size)
    for name in TRAIN_STEPS:
        spec = augment.get(name)
        if spec:
            steps += _train_step(name, spec, img_size)
    return A.Compose(steps + _finish(mean, std), strict=True)


def build_eval_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """The deterministic part of the pipeline, shared by validation, test and every OOD set."""
    return A.Compose(_preprocess(augment, img_size) + _finish(mean, std), strict=True)


def unknown_steps(augment: Mapping[str, Any]) -> list[str]:
    """Keys of an augment config that no step reads (a typo would otherwise be ignored)."""
    known = set(TRAIN_STEPS) | {"name", "clahe", "stats", "mix", "backend"}
    return sorted(set(augment) - known)


@dataclass(frozen=True)
class Transforms:
    """The per-image train and eval pipelines of one `augment` config, and their normalisation."""

    train: A.Compose
    eval: A.Compose
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int


def build_transforms(augment: Mapping[str, Any], dataset: str, img_size: int) -> Transforms:
    """Both pipelines of `augment` for `dataset` at `img_size`: what the datamodule, the
    augmentation preview and the benchmarks all use."""
    mean, std = augment_normalization(augment, dataset)
    return Transforms(
        train=build_train_transform(augment, img_size, mean, std),
        eval=build_eval_transform(augment, img_size, mean, std),
        mean=tuple(mean),
        std=tuple(std),
        img_size=img_size,
    )
