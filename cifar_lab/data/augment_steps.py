"""One record per augment step, the way timm keeps one `OptimInfo` per optimizer: its key in
the `augment` config, how the per-image (albumentations) and batched (kornia) backends build it,
where in the pipeline it runs, and which CIFAR-C corruptions it reproduces.

The per-image pipeline, the batched one and the seen/unseen labelling of OOD scores
(`cifar_lab.evaluation.overlap`) all read `AUGMENT_STEPS`, so a new step is one record here.

A step `covers` a corruption when it applies the same kind of distortion: Gaussian noise in
training makes `gaussian_noise` at test a seen distortion, not a measure of robustness to an
unknown shift. AugMix's operation set leaves out every operation that overlaps a CIFAR-C
corruption by design (Hendrycks et al., 2020, section 3); `augment.augmix.all_ops=true` brings
brightness, contrast, colour and sharpness back, and so the photometric corruptions.
RandAugment's and TrivialAugment's Sharpness below 1 softens an image a little; it is not
counted as covering the blurs, whose kernels are far wider.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import albumentations as A
import cv2

from cifar_lab.data import albumentations_steps as per_image
from cifar_lab.data import kornia_steps as per_batch
from cifar_lab.data.albumentations_steps import PerImage, RandomErasingStep, TorchvisionPolicy
from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.data.kornia_steps import Converter

# preprocess: every image, train and eval alike, after the resize; train: training images only,
# before normalising; normalised: training images only, on the normalised image.
Stage = Literal["preprocess", "train", "normalised"]
# Keys of the augment config that choose how the pipeline runs, not a step in it.
SETTINGS = ("name", "stats", "mix", "backend", "batched_on")
PHOTOMETRIC = ("brightness", "contrast", "saturate")


def _always(spec: Any) -> bool:
    return True


def _with_all_ops(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec.get("all_ops"))


def _p_above_zero(spec: Any) -> bool:
    return bool(spec) and spec.get("p", 0.0) > 0


@dataclass(frozen=True)
class AugmentStep:
    """One augment step. `per_batch` maps each albumentations transform `per_image` builds to
    its kornia converter; `covers` (when `covers_if(spec)`) are the corruptions it reproduces,
    `why` says why it does or does not; `is_on(spec)` says whether the config switches it on."""

    name: str
    per_image: PerImage
    per_batch: Mapping[type, Converter]
    why: str
    covers: tuple[str, ...] = ()
    covers_if: Callable[[Any], bool] = _always
    stage: Stage = "train"
    is_on: Callable[[Any], bool] = bool


def _one_transform(
    name: str,
    cls: type[A.BasicTransform],
    convert: Converter,
    why: str,
    covers: tuple[str, ...] = (),
    tuples: tuple[str, ...] = (),
    **fixed: Any,
) -> AugmentStep:
    """A step that is one albumentations transform taking the config's values as arguments
    (see `albumentations_steps.single`)."""
    return AugmentStep(name, per_image.single(cls, tuples, **fixed), {cls: convert}, why, covers)


def _policy(name: str, why: str, **options: Any) -> AugmentStep:
    """A torchvision policy: per image only, and its Brightness, Contrast and Color operations
    are the photometric corruptions."""
    converters = {TorchvisionPolicy: per_batch.refuse_policy}
    return AugmentStep(name, per_image.policy_step(name), converters, why, PHOTOMETRIC, **options)


GEOMETRY = "changes geometry, not the pixel statistics of any corruption"
AUGMENT_STEPS: tuple[AugmentStep, ...] = (
    AugmentStep(
        "clahe",
        per_image.clahe,
        {A.CLAHE: per_batch.clahe},
        "contrast equalisation of every image, test images too: preprocessing, not a shift",
        stage="preprocess",
    ),
    AugmentStep(
        "crop",
        per_image.crop,
        {
            A.PadIfNeeded: per_batch.pad,
            A.RandomCrop: per_batch.random_crop,
            A.RandomResizedCrop: per_batch.random_resized_crop,
        },
        GEOMETRY,
    ),
    _one_transform("hflip", A.HorizontalFlip, per_batch.horizontal_flip, GEOMETRY),
    _policy("randaugment", "RandAugment's Brightness, Contrast and Color (saturation) operations"),
    _policy(
        "trivialaugment", "TrivialAugment's Brightness, Contrast and Color (saturation) operations"
    ),
    _policy(
        "augmix",
        "AugMix with all_ops=true adds Brightness, Contrast and Color",
        covers_if=_with_all_ops,
    ),
    _one_transform(
        "brightness_contrast",
        A.RandomBrightnessContrast,
        per_batch.brightness_contrast,
        "random brightness shift and contrast scaling",
        covers=("brightness", "contrast"),
    ),
    _one_transform(
        "gauss_noise",
        A.GaussNoise,
        per_batch.gauss_noise,
        "per-pixel random noise, the family of all four noise corruptions",
        covers=CIFAR_C.families["noise"],
        tuples=("std_range",),
    ),
    _one_transform(
        "rotate", A.Rotate, per_batch.rotate, GEOMETRY, border_mode=cv2.BORDER_REFLECT_101
    ),
    _one_transform(
        "color_jitter",
        A.ColorJitter,
        per_batch.color_jitter,
        "random brightness, contrast and saturation (and hue)",
        covers=PHOTOMETRIC,
    ),
    _one_transform(
        "jpeg",
        A.ImageCompression,
        per_batch.jpeg,
        "JPEG re-encoding at random quality",
        covers=("jpeg_compression",),
        tuples=("quality_range",),
    ),
    AugmentStep(
        "random_erasing",
        per_image.random_erasing,
        {RandomErasingStep: per_batch.random_erasing},
        "erases a random box: reproduces no corruption's pixel statistics",
        stage="normalised",
        is_on=_p_above_zero,
    ),
)
STEP_BY_NAME = {step.name: step for step in AUGMENT_STEPS}
# The random training steps, in the order the pipeline applies them.
TRAIN_STEPS = tuple(step.name for step in AUGMENT_STEPS if step.stage == "train")


def step_converters() -> dict[type, Converter]:
    """Every albumentations transform a step builds -> its kornia converter."""
    return {kind: convert for step in AUGMENT_STEPS for kind, convert in step.per_batch.items()}
