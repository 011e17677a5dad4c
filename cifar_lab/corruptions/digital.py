"""The digital corruptions of CIFAR-C (Hendrycks & Dietterich, 2019): brightness, contrast,
elastic transform, pixelate, JPEG and the extra saturate, with the published CIFAR constants."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from cifar_lab.corruptions.filters import bilinear_reflect, gaussian, to_uint8

# cv2.getAffineTransform's anchor points for a 32 x 32 image, as the reference sets them:
# centre 16 +- a third of the side (10).
AFFINE_POINTS = np.float32([[26, 26], [26, 6], [6, 6]])
HUE_ZERO = np.array([0, 1, 1], dtype=np.float32)  # a grey pixel's channel shares at hue 0 (red)


def hsv_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, saturation and each channel's share (value - c) / (value - min) of RGB in [0, 1].

    With hue fixed, `skimage.color.hsv2rgb` gives c = v * (1 - s * share), so brightness and
    saturation change through these without computing the hue. A grey pixel has hue 0 there,
    i.e. shares (0, 1, 1): raising its saturation tints it red, as in the reference.
    """
    value = x.max(axis=-1, keepdims=True)
    spread = value - x.min(axis=-1, keepdims=True)
    saturation = np.divide(spread, value, out=np.zeros_like(value), where=spread > 0)
    share = np.broadcast_to(HUE_ZERO, x.shape).copy()
    np.divide(value - x, spread, out=share, where=spread > 0)
    return value, saturation, share


def brightness(images: np.ndarray, *, shift: float) -> np.ndarray:
    """HSV value + `shift` (clipped to 1), hue and saturation kept (skimage HSV in the
    reference)."""
    value, saturation, share = hsv_parts(images.astype(np.float32) / 255)
    value = np.clip(value + shift, 0, 1)
    return to_uint8(value * (1 - saturation * share) * 255)


def saturate(images: np.ndarray, *, factor: float, offset: float) -> np.ndarray:
    """HSV saturation * `factor` + `offset` (clipped to [0, 1]), hue and value kept."""
    value, saturation, share = hsv_parts(images.astype(np.float32) / 255)
    saturation = np.clip(saturation * factor + offset, 0, 1)
    return to_uint8(value * (1 - saturation * share) * 255)


def contrast(images: np.ndarray, *, factor: float) -> np.ndarray:
    """Each channel pulled towards its mean over the image: (x - mean) * factor + mean."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return to_uint8((x - mean) * np.float32(factor) + mean)


def elastic_transform(
    images: np.ndarray, rng: np.random.Generator, *, alpha: float, sigma: float, affine: float
) -> np.ndarray:
    """A random affine warp, then a smooth random displacement field (Simard et al., 2003).

    The affine moves three anchor points by U(-affine, affine) pixels (`cv2.warpAffine`, bilinear,
    mirrored border); the field is U(-1, 1) noise smoothed by a Gaussian of `sigma` (reflected,
    truncated at 3 sigma) times `alpha`, sampled bilinearly with reflection as
    `scipy.ndimage.map_coordinates` does. The published constants shrink the affine jitter as
    severity rises while the field grows, so severity 1 moves pixels furthest.
    """
    n, height, width = images.shape[:3]
    jitter = rng.uniform(-affine, affine, size=(n, *AFFINE_POINTS.shape)).astype(np.float32)
    fields = rng.uniform(-1, 1, size=(n, 2, height, width))
    warped = np.empty(images.shape, dtype=np.float32)
    for i, image in enumerate(images.astype(np.float32) / 255):
        matrix = cv2.getAffineTransform(AFFINE_POINTS, AFFINE_POINTS + jitter[i])
        warped[i] = cv2.warpAffine(
            image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101
        )
    dx, dy = (
        gaussian(fields[:, k], sigma, mode="reflect", truncate=3) * np.float32(alpha)
        for k in (0, 1)
    )
    rows = np.arange(height, dtype=np.float32)[None, :, None] + dy
    cols = np.arange(width, dtype=np.float32)[None, None, :] + dx
    return to_uint8(bilinear_reflect(warped, rows, cols) * 255)


def pixelate(images: np.ndarray, *, scale: float) -> np.ndarray:
    """Down to int(32 * scale) pixels and back up, both with Pillow's BOX filter, as published."""
    size = images.shape[1]
    small = int(size * scale)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        blocky = Image.fromarray(image).resize((small, small), Image.Resampling.BOX)
        out[i] = np.asarray(blocky.resize((size, size), Image.Resampling.BOX))
    return out


def jpeg_compression(images: np.ndarray, *, quality: int) -> np.ndarray:
    """A JPEG round trip at `quality`.

    The reference saved with Pillow; OpenCV's encoder and decoder (libjpeg, 4:2:0 chroma) give
    byte-identical images at these qualities on the photos checked, four times faster.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        _, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), params)
        out[i] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return out
