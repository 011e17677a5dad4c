"""The per-image (albumentations) side of the augment steps: each step's transforms, built
from its config values, and the two transforms written here.

Every transform is built with `strict=True`: albumentations 2.x otherwise ignores a misspelt
argument (e.g. `var_limit` on GaussNoise) and silently trains without it.

The policy augmentations (RandAugment, Cubuk et al., 2020; TrivialAugment, Muller & Hutter,
2021; AugMix, Hendrycks et al., 2020) are torchvision's, wrapped as albumentations steps on the
uint8 image, because albumentations 2.0 has none of them; random erasing (Zhong et al., 2020) is
timm's, on the normalised image. `cifar_lab.data.augment_steps` says which step uses which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2

from cifar_lab.errors import CifarLabError

# A step's builder: (its config mapping, the image side) -> albumentations transforms.
PerImage = Callable[[Mapping[str, Any], int], list[A.BasicTransform]]


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


def policy(name: str, spec: Mapping[str, Any]) -> TorchvisionPolicy:
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


def strict(cls: type[A.BasicTransform], **kwargs: Any) -> A.BasicTransform:
    try:
        return cls(**kwargs, strict=True)
    except (ValueError, TypeError) as err:
        raise CifarLabError(
            f"bad arguments for albumentations.{cls.__name__}: {err}; fix the augment config"
        ) from err


CROP_KEYS = ("kind", "pad", "scale", "ratio")


def crop(spec: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
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
            strict(
                A.PadIfNeeded,
                min_height=padded,
                min_width=padded,
                border_mode=cv2.BORDER_REFLECT_101,
            )
        )
    if kind == "random":
        steps.append(strict(A.RandomCrop, height=img_size, width=img_size))
    elif kind == "random_resized":
        steps.append(
            strict(
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


def single(cls: type[A.BasicTransform], tuples: Sequence[str] = (), **fixed: Any) -> PerImage:
    """The builder of a step that is one albumentations transform taking the config's values as
    its arguments: `tuples` are the YAML lists it wants as tuples, `fixed` arguments we set."""

    def build(spec: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
        spec = dict(spec)
        spec.update({key: tuple(spec.pop(key)) for key in tuples})
        return [strict(cls, **fixed, **spec)]

    return build


def policy_step(name: str) -> PerImage:
    """The builder of the torchvision policy `name` (see `policy`)."""
    return lambda spec, img_size: [policy(name, spec)]


def clahe(spec: Any, img_size: int) -> list[A.BasicTransform]:
    """CLAHE from `augment.clahe`: true (clip limit 2, 4 x 4 tiles) or
    `{clip_limit, tile_grid_size}`; always applied (p=1), as it is preprocessing."""
    spec = dict(spec) if isinstance(spec, Mapping) else {}
    return [
        strict(
            A.CLAHE,
            clip_limit=spec.get("clip_limit", 2.0),
            tile_grid_size=tuple(spec.get("tile_grid_size", (4, 4))),
            p=1.0,
        )
    ]


def random_erasing(spec: Mapping[str, Any], img_size: int) -> list[A.BasicTransform]:
    return [RandomErasingStep(**dict(spec))]
