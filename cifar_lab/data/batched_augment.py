"""The `augment` config applied to whole uint8 batches on their device, with kornia (Riba et al.).

The same config that `transforms.py` turns into an albumentations pipeline is turned into that
pipeline first, and each albumentations step is then translated into its kornia counterpart from
the step's own parsed attributes (`p`, `limit`, `std_range`, ...), by the converter its record in
`cifar_lab.data.augment_steps` names (the converters are `cifar_lab.data.kornia_steps`). Both
backends therefore read every probability and range from one place and cannot drift apart; a step
or an option kornia cannot reproduce raises an error instead of training on something else.

Every sample draws its own parameters (kornia's `same_on_batch=False`), as albumentations does
per image. Known differences: kornia's ColorJitter draws one order of its four colour operations
per batch (albumentations: per image); intermediate results stay float instead of being rounded
to uint8 after each step, except around the JPEG step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import torch
from torch import nn

from cifar_lab.data.augment_steps import step_converters
from cifar_lab.data.cifar_c import NATIVE_SIZE
from cifar_lab.data.kornia_steps import PIPELINE_CONVERTERS, Converter
from cifar_lab.data.transforms import build_eval_transform, build_train_transform
from cifar_lab.errors import CifarLabError

CONVERTERS: dict[type, Converter] = {**PIPELINE_CONVERTERS, **step_converters()}


class BatchedPipeline(nn.Module):
    """uint8 (B, 3, H, W) on any device -> normalised float32 (B, 3, S, S) on that device."""

    def __init__(self, steps: Sequence[nn.Module]):
        super().__init__()
        self.steps = nn.Sequential(*steps)
        self.device = torch.device("cpu")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise CifarLabError(
                f"the batched augmentation got a {images.dtype} tensor of shape "
                f"{tuple(images.shape)}; expected uint8 (B, 3, H, W) images"
            )
        if images.device != self.device:
            self.to(images.device)
            self.device = images.device
        return self.steps(images.float().div_(255))


def from_albumentations(
    pipeline: A.Compose, img_size: int, source_size: int = NATIVE_SIZE
) -> BatchedPipeline:
    """The kornia equivalent of an albumentations pipeline built by `transforms.py`."""
    steps, size = [], source_size
    for step in pipeline.transforms:
        convert = CONVERTERS.get(type(step))
        if convert is None:
            raise CifarLabError(
                f"albumentations.{type(step).__name__} has no batched (kornia) equivalent; "
                f"use augment.backend=albumentations"
            )
        module = convert(step, size)
        if module is not None:
            steps.append(module)
        if isinstance(step, A.Resize):
            size = img_size
    return BatchedPipeline(steps)


def build_batched_train(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> BatchedPipeline:
    """The training pipeline of `augment` (random steps per sample), for whole batches."""
    return from_albumentations(build_train_transform(augment, img_size, mean, std), img_size)


def build_batched_eval(
    augment: Mapping[str, Any], img_size: int, mean: Sequence[float], std: Sequence[float]
) -> BatchedPipeline:
    """The deterministic preprocessing (resize, CLAHE, normalise), for whole batches."""
    return from_albumentations(build_eval_transform(augment, img_size, mean, std), img_size)
