"""The network as an attack sees it: [0, 1] pixels in, logits out, with the preprocessing inside.

The input pipeline normalises images before the network sees them (`data.transforms`:
`A.Normalize` per image, or its kornia translation on batches), so budgets measured on the
network's input would be in units of the per-channel std. Attacks and adversarial training
therefore perturb [0, 1] pixels and run this wrapper: resize (when the run upscales), then
normalise, then the network. Only differentiable steps can be inside; an eval pipeline with
another step (CLAHE) cannot be attacked through its gradients and is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import albumentations as A
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2
from torch import nn

from cifar_lab.data.cifar_c import NATIVE_SIZE
from cifar_lab.data.transforms import Transforms
from cifar_lab.errors import CifarLabError

# The eval steps this wrapper reproduces with differentiable tensor operations.
DIFFERENTIABLE_STEPS = (A.Resize, A.Normalize, ToTensorV2)


class Normalization(nn.Module):
    """(x - mean) / std per channel on [0, 1] pixels, and its inverse."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        """Normalised images back on the [0, 1] scale, clipped there (random erasing fills its
        boxes with noise that lies outside)."""
        return (normalised * self.std + self.mean).clamp_(0, 1)


class PixelModel(nn.Module):
    """`model` (normalised input -> logits) as a function of [0, 1] pixels: bicubic resize to
    `size` (as the eval pipeline's `A.Resize`, when the run upscales), then normalisation."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        mean: Sequence[float],
        std: Sequence[float],
        size: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.normalization = Normalization(mean, std)
        self.size = size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.size is not None and pixels.shape[-1] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bicubic")
        return self.model(self.normalization(pixels))


def pixel_model(model: nn.Module, transforms: Transforms) -> PixelModel:
    """`model` behind the eval preprocessing of `transforms`, refused in one line when that
    preprocessing has a step without a gradient."""
    other = [
        type(step).__name__
        for step in transforms.eval.transforms
        if not isinstance(step, DIFFERENTIABLE_STEPS)
    ]
    if other:
        raise CifarLabError(
            f"the checkpoint's eval preprocessing has {', '.join(other)}, which has no gradient, "
            f"so a gradient attack cannot reach the pixels through it; score a checkpoint "
            f"trained without it (e.g. augment.clahe=false)"
        )
    size = transforms.img_size if transforms.img_size != NATIVE_SIZE else None
    return PixelModel(model, transforms.mean, transforms.std, size)


def check_gradients(model: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> None:
    """One line when the loss of `model` on `pixels` has no finite, non-zero gradient with
    respect to them: gradient attacks would then measure nothing."""
    probe = pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(probe)
        if not logits.requires_grad:
            gradient = None
        else:
            # the margin of the top class over the next: unlike the cross-entropy of the
            # predicted class, its gradient does not vanish on confidently classified images
            top2 = logits.float().topk(2, dim=1).values
            (gradient,) = torch.autograd.grad(
                (top2[:, 0] - top2[:, 1]).sum(), probe, allow_unused=True
            )
    if gradient is None or not torch.isfinite(gradient).all() or not gradient.abs().sum() > 0:
        what = "none" if gradient is None else "no finite, non-zero one"
        raise CifarLabError(
            f"the checkpoint's model gives its input {what} gradient, so gradient attacks "
            f"cannot be run on it; score a network that is differentiable end to end"
        )
