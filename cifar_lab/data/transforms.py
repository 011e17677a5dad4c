"""Per-image augmentation pipelines built with albumentations from an `augment` config.

The config names each step of the reference recipe with its probability and range (see
`conf/augment/seed.yaml`); a step set to null is off. Keeping the steps as plain values, not as
albumentations class paths, lets the batched GPU path read the same file.

Every transform is built with `strict=True`: albumentations 2.x otherwise ignores a misspelt
argument (e.g. `var_limit` on GaussNoise) and silently trains without it.

The policy augmentations (RandAugment, Cubuk et al., 2020; TrivialAugment, Muller & Hutter,
2021; AugMix, Hendrycks et al., 2020) are torchvision's, wrapped as albumentations steps on the
uint8 image, because albumentations 2.0 has none of them; random erasing (Zhong et al., 2020) is
timm's, on the normalised image. `loss=jsd` trains on `SplitViews`: the clean image and two
augmented views of the same crop/flip (AugMix's Jensen-Shannon input, timm's AugMixDataset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2

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
    "randaugment",
    "trivialaugment",
    "augmix",
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


# The steps that `loss=jsd` leaves out of the clean view: everything after crop and flip.
VIEW_BASE_STEPS = ("crop", "hflip")


class TorchvisionPolicy(A.ImageOnlyTransform):
    """A torchvision.transforms.v2 policy (RandAugment, TrivialAugmentWide, AugMix) as an
    albumentations step on a uint8 HWC image, per image.

    albumentations 2.0 has no RandAugment, TrivialAugment or AugMix, and torchvision's are the
    maintained reference versions (they run on uint8 CHW tensors). They draw from torch's global
    generator, not albumentations' own: Lightning seeds it in every loader worker and a
    checkpoint restores it, so runs still repeat and resume exactly (forking a generator seeded
    per image cost about half a millisecond, half of RandAugment's own time).
    """

    def __init__(self, policy: Callable[[torch.Tensor], torch.Tensor], name: str, p: float = 1.0):
        super().__init__(p=p)
        self.policy, self.name = policy, name

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        out = self.policy(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


class RandomErasingStep(A.ImageOnlyTransform):
    """timm's RandomErasing on a normalised float HWC image (after Normalize), with
    probability `p`; `mode` pixel fills the box with per-pixel normal noise, as timm's recipes.
    timm draws from Python's and torch's global generators (see `TorchvisionPolicy`)."""

    def __init__(self, p: float = 0.25, **erasing: Any):
        super().__init__(p=p)
        self.erasing_args = {"mode": "pixel", **erasing}
        try:
            self.erasing = RandomErasing(probability=1.0, device="cpu", **self.erasing_args)
        except (TypeError, AssertionError) as err:
            raise CifarLabError(
                f"augment.random_erasing={erasing} has an argument timm's RandomErasing does not "
                f"take ({err or 'bad mode'}); expected p, mode (const|rand|pixel), min_area, "
                f"max_area, min_aspect, max_aspect, min_count, max_count"
            ) from err

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        img = np.array(img, dtype=np.float32, copy=True)
        self.erasing(torch.from_numpy(img).permute(2, 0, 1))  # in place, through the view
        return img


def _policy(name: str, spec: Mapping[str, Any]) -> TorchvisionPolicy:
    """torchvision's policy for `augment.<name>`. AugMix keeps `all_ops: false`, the paper's
    operation set, which leaves out brightness, contrast, colour and sharpness because they
    overlap the test corruptions (torchvision's default `all_ops=True` adds them back)."""
    spec = dict(spec)
    p = float(spec.pop("p", 1.0))
    factories = {
        "randaugment": v2.RandAugment,
        "trivialaugment": v2.TrivialAugmentWide,
        "augmix": lambda **kw: v2.AugMix(**{"all_ops": False, **kw}),
    }
    try:
        policy = factories[name](**spec)
    except TypeError as err:
        raise CifarLabError(
            f"augment.{name}={spec} has an argument torchvision's policy does not take ({err}); "
            f"fix the augment config"
        ) from err
    return TorchvisionPolicy(policy, name, p=p)


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
    if name in ("randaugment", "trivialaugment", "augmix"):
        return [_policy(name, spec)]
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


def _finish(
    mean: Sequence[float], std: Sequence[float], erasing: Mapping[str, Any] | None = None
) -> list[A.BasicTransform]:
    """Normalise, then random erasing if `augment.random_erasing.p` > 0, then CHW tensor."""
    steps = [_strict(A.Normalize, mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)]
    if erasing and erasing.get("p", 0.0) > 0:
        steps.append(RandomErasingStep(**dict(erasing)))
    return [*steps, ToTensorV2()]


def _random_steps(
    augment: Mapping[str, Any], img_size: int, names: Sequence[str]
) -> list[A.BasicTransform]:
    steps: list[A.BasicTransform] = []
    for name in names:
        spec = augment.get(name)
        if spec:
            steps += _train_step(name, spec, img_size)
    return steps


def _check_keys(augment: Mapping[str, Any]) -> None:
    unknown = unknown_steps(augment)
    if unknown:
        raise CifarLabError(
            f"augment config has unknown keys {unknown}; expected steps from {list(TRAIN_STEPS)} "
            f"or {sorted(SETTINGS)}: check the spelling"
        )


def build_train_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """uint8 HWC image -> float CHW tensor, with the augment config's random steps."""
    _check_keys(augment)
    steps = _preprocess(augment, img_size) + _random_steps(augment, img_size, TRAIN_STEPS)
    return A.Compose(steps + _finish(mean, std, augment.get("random_erasing")), strict=True)


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
    augmented = _random_steps(augment, img_size, others)
    if not augmented:
        raise CifarLabError(
            f"loss=jsd compares the clean image with augmented views, but augment="
            f"{augment.get('name')} has no augmentation beyond crop and flip; use augment=augmix"
        )
    base = _preprocess(augment, img_size) + _random_steps(augment, img_size, VIEW_BASE_STEPS)
    return SplitViews(
        base=A.Compose(base, strict=True),
        clean=A.Compose(_finish(mean, std), strict=True),
        augmented=A.Compose(
            augmented + _finish(mean, std, augment.get("random_erasing")), strict=True
        ),
        views=views,
    )


def build_eval_transform(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> A.Compose:
    """The deterministic part of the pipeline, shared by validation, test and every OOD set."""
    return A.Compose(_preprocess(augment, img_size) + _finish(mean, std), strict=True)


SETTINGS = ("name", "clahe", "stats", "mix", "backend", "batched_on", "random_erasing")


def unknown_steps(augment: Mapping[str, Any]) -> list[str]:
    """Keys of an augment config that no step reads (a typo would otherwise be ignored)."""
    return sorted(set(augment) - set(TRAIN_STEPS) - set(SETTINGS))


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
