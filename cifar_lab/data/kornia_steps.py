"""The per-batch (kornia, Riba et al.) side of the augment steps: each albumentations transform
the per-image side builds, translated into a kornia module from its own parsed attributes
(`p`, `limit`, `std_range`, ...), so both backends read every probability and range from one
place; an option kornia cannot reproduce raises an error instead of training on something else.

Three steps are small kornia augmentations written here, because kornia has no op with the
albumentations semantics: brightness+contrast under one probability, Gaussian noise whose std is
drawn per image from a range, and JPEG at an integer quality per image. On the CPU that JPEG goes
through libjpeg (torchvision.io) for the selected images only: on one core of the lab's CPU,
kornia's tensor codec ran at about 5,000 images/s (over the whole batch, whatever `p`), libjpeg
at about 19,000. On a GPU the tensor codec needs no host round trip.

Random erasing is timm's own, which already erases each sample of a batch on its own. The policy
augmentations (RandAugment, TrivialAugment, AugMix) are refused: kornia's policies draw one
sub-policy per batch, not per image, and kornia has no AugMix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import kornia.augmentation as K
import torch
from albumentations.pytorch import ToTensorV2
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.augmentation.random_generator import PlainUniformGenerator
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.enhance import adjust_brightness, adjust_contrast, jpeg_codec_differentiable
from timm.data.random_erasing import RandomErasing
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg

from cifar_lab.data.albumentations_steps import RandomErasingStep, TorchvisionPolicy
from cifar_lab.errors import CifarLabError

Params = dict[str, torch.Tensor]


def per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) parameter (kornia draws them on the CPU) as (B, 1, 1, 1) on `like`'s device and
    dtype; the copy is asynchronous, so a GPU step does not wait for the queued kernels."""
    return value.to(device=like.device, dtype=like.dtype, non_blocking=True).view(-1, 1, 1, 1)


class RandomBrightnessContrast(IntensityAugmentationBase2D):
    """albumentations' RandomBrightnessContrast: x * (1 + c) + b, clipped once; c, b per image."""

    def __init__(
        self, brightness_limit: Sequence[float], contrast_limit: Sequence[float], p: float = 0.5
    ):
        super().__init__(p=p)
        self._param_generator = PlainUniformGenerator(
            (tuple(contrast_limit), "contrast", None, None),
            (tuple(brightness_limit), "brightness", None, None),
        )

    def apply_transform(self, input, params: Params, flags, transform=None) -> torch.Tensor:
        alpha = per_sample(1 + params["contrast"], input)
        beta = per_sample(params["brightness"], input)
        return adjust_brightness(adjust_contrast(input, alpha, clip_output=False), beta)


class RandomGaussianNoiseRange(IntensityAugmentationBase2D):
    """albumentations' GaussNoise: zero-mean noise per pixel and channel, its std drawn per image
    from `std_range` (a fraction of the maximum value), clipped to [0, 1]."""

    def __init__(self, std_range: Sequence[float], p: float = 0.5):
        super().__init__(p=p)
        self._param_generator = PlainUniformGenerator((tuple(std_range), "std", None, None))

    def apply_transform(self, input, params: Params, flags, transform=None) -> torch.Tensor:
        noise = torch.randn_like(input) * per_sample(params["std"], input)
        return (input + noise).clamp_(0.0, 1.0)


def libjpeg_roundtrip(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] through uint8 JPEG encode/decode, image i at `quality[i]`."""
    as_uint8 = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    out = torch.empty_like(images)
    for q in quality.unique().tolist():
        index = (quality == q).nonzero().flatten()
        decoded = decode_jpeg(encode_jpeg(list(as_uint8[index]), quality=int(q)))
        out[index] = torch.stack(decoded).to(images.dtype).div_(255)
    return out


class RandomJPEG(IntensityAugmentationBase2D):
    """albumentations' ImageCompression (JPEG): an integer quality per image, uniform over
    `quality_range` inclusive. CPU batches re-encode only the selected images with libjpeg;
    GPU batches run kornia's tensor codec on the whole batch (no host round trip, no sync)."""

    def __init__(self, quality_range: Sequence[int], p: float = 0.5):
        super().__init__(p=p)
        low, high = (int(q) for q in quality_range)
        self.high = high
        # floor(U[low, high + 1)) is uniform over the integers low..high, like randint.
        self._param_generator = PlainUniformGenerator(((low, high + 1), "quality", None, None))

    def apply_transform(self, input, params: Params, flags, transform=None) -> torch.Tensor:
        quality = params["quality"].floor().clamp(max=self.high)
        if input.device.type != "cpu":
            quality = quality.to(device=input.device, dtype=input.dtype, non_blocking=True)
            return jpeg_codec_differentiable(input, quality).clamp_(0.0, 1.0)
        out = input.clone()
        selected = (params["batch_prob"] > 0.5).nonzero().flatten()
        if len(selected):
            out[selected] = libjpeg_roundtrip(input[selected], quality[selected])
        return out


class RandomClaheLightness(K.RandomClahe):
    """CLAHE on the L channel of CIE-Lab, as albumentations (OpenCV) applies it to RGB images;
    kornia's RandomClahe alone equalises each RGB channel separately."""

    def apply_transform(self, input, params: Params, flags, transform=None) -> torch.Tensor:
        lab = rgb_to_lab(input.clamp(0.0, 1.0))
        lightness = super().apply_transform(lab[:, :1] / 100, params, flags, transform) * 100
        return lab_to_rgb(torch.cat([lightness, lab[:, 1:]], dim=1))


class BatchRandomErasing(nn.Module):
    """timm's RandomErasing on a normalised batch: timm erases each sample of a batch on its own
    (its box, and whether it erases at all, drawn per sample); the fill is made on the batch's
    device."""

    def __init__(self, step: RandomErasingStep):
        super().__init__()
        self.erasing = RandomErasing(probability=step.p, device="cpu", **step.erasing_args)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.erasing.device = images.device
        self.erasing(images)
        return images


# --- albumentations transform -> kornia module ---------------------------------------------
# Each converter takes the albumentations transform and the image side length at that point;
# None means the transform has nothing to do on a batch.
Converter = Callable[[Any, int], nn.Module | None]
RESAMPLE = {cv2.INTER_NEAREST: "nearest", cv2.INTER_LINEAR: "bilinear", cv2.INTER_CUBIC: "bicubic"}


def unsupported(step: A.BasicTransform, option: str) -> CifarLabError:
    return CifarLabError(
        f"augment step {type(step).__name__} with {option} has no batched (kornia) equivalent; "
        f"drop that option or use augment.backend=albumentations"
    )


def _resample(step: A.BasicTransform) -> str:
    if step.interpolation not in RESAMPLE:
        raise unsupported(step, f"interpolation={step.interpolation}")
    return RESAMPLE[step.interpolation]


def refuse_policy(step: TorchvisionPolicy, size: int) -> nn.Module:
    # kornia's RandAugment/TrivialAugment apply one sub-policy to the whole batch, and it has no
    # AugMix: nothing draws a policy per image, so the batched backend refuses them.
    raise CifarLabError(
        f"augment.{step.name} has no batched (kornia) equivalent that draws its policy per "
        f"image; use augment.backend=albumentations"
    )


def pad(step: A.PadIfNeeded, size: int) -> nn.Module:
    if step.border_mode != cv2.BORDER_REFLECT_101 or step.position != "center":
        raise unsupported(step, f"border_mode={step.border_mode}, position={step.position}")
    pad_h, pad_w = max(step.min_height - size, 0), max(step.min_width - size, 0)
    # torch's "reflect" padding is OpenCV's BORDER_REFLECT_101 (the edge pixel is not repeated).
    return nn.ReflectionPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def random_crop(step: A.RandomCrop, size: int) -> nn.Module:
    return K.RandomCrop((step.height, step.width), cropping_mode="resample", p=step.p)


def random_resized_crop(step: A.RandomResizedCrop, size: int) -> nn.Module:
    return K.RandomResizedCrop(
        step.size,
        scale=step.scale,
        ratio=step.ratio,
        resample=_resample(step),
        cropping_mode="resample",
        p=step.p,
    )


def horizontal_flip(step: A.HorizontalFlip, size: int) -> nn.Module:
    return K.RandomHorizontalFlip(p=step.p)


def rotate(step: A.Rotate, size: int) -> nn.Module:
    # grid_sample's reflection about pixel centres (align_corners=True) is BORDER_REFLECT_101.
    modes = {cv2.BORDER_REFLECT_101: ("reflection", True), cv2.BORDER_REPLICATE: ("border", True)}
    black_border = step.border_mode == cv2.BORDER_CONSTANT and not step.fill
    if step.border_mode not in modes and not black_border:
        raise unsupported(step, f"border_mode={step.border_mode}, fill={step.fill}")
    padding_mode, align_corners = modes.get(step.border_mode, ("zeros", False))
    return K.RandomAffine(
        degrees=step.limit,
        resample=_resample(step),
        padding_mode=padding_mode,
        align_corners=align_corners,
        p=step.p,
    )


def brightness_contrast(step: A.RandomBrightnessContrast, size: int) -> nn.Module:
    if not step.brightness_by_max or step.ensure_safe_range:
        raise unsupported(step, "brightness_by_max=false or ensure_safe_range=true")
    return RandomBrightnessContrast(step.brightness_limit, step.contrast_limit, p=step.p)


def gauss_noise(step: A.GaussNoise, size: int) -> nn.Module:
    if tuple(step.mean_range) != (0.0, 0.0) or not step.per_channel or step.noise_scale_factor != 1:
        raise unsupported(step, "mean_range, per_channel=false or noise_scale_factor")
    return RandomGaussianNoiseRange(step.std_range, p=step.p)


def color_jitter(step: A.ColorJitter, size: int) -> nn.Module:
    return K.ColorJitter(step.brightness, step.contrast, step.saturation, step.hue, p=step.p)


def jpeg(step: A.ImageCompression, size: int) -> nn.Module:
    if step.compression_type != "jpeg":
        raise unsupported(step, f"compression_type={step.compression_type}")
    return RandomJPEG(step.quality_range, p=step.p)


def clahe(step: A.CLAHE, size: int) -> nn.Module:
    return RandomClaheLightness(step.clip_limit, tuple(step.tile_grid_size), p=step.p)


def random_erasing(step: RandomErasingStep, size: int) -> nn.Module:
    return BatchRandomErasing(step)


def resize(step: A.Resize, size: int) -> nn.Module:
    # Bicubic overshoots [0, 1]; albumentations clips it by working in uint8 (Hardtanh = clamp).
    scale = K.Resize((step.height, step.width), resample=_resample(step), align_corners=False)
    return nn.Sequential(scale, nn.Hardtanh(0.0, 1.0))


def normalize(step: A.Normalize, size: int) -> nn.Module:
    if step.normalization != "standard" or step.max_pixel_value != 255.0:
        raise unsupported(step, f"normalization={step.normalization}")
    return K.Normalize(mean=torch.tensor(step.mean), std=torch.tensor(step.std))


# The transforms every pipeline has whatever the augment config: no config key builds them.
PIPELINE_CONVERTERS: dict[type, Converter] = {
    A.Resize: resize,
    A.Normalize: normalize,
    ToTensorV2: lambda step, size: None,  # batches are tensors already
}
