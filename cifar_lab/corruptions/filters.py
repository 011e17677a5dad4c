"""Primitives the corruptions share, vectorised over a batch of 32 x 32 images.

The published CIFAR-C generator (Hendrycks & Dietterich, 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", `make_cifar_c.py`) works image by image
with scikit-image, SciPy, OpenCV and ImageMagick. Each function here does what one of those calls
does, for a whole batch (N, H, W[, C]) at once: SciPy's filters on the spatial axes only, zooms
and blurs as precomputed linear maps, ImageMagick's motion blur as a sum of shifted copies.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from scipy import ndimage

SIZE = 32  # CIFAR's side; the published constants are tuned for it


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Floats on the 0..255 scale to uint8, truncating as the generator's `np.uint8(...)` did."""
    return np.clip(images, 0, 255).astype(np.uint8)


def gaussian(
    images: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> np.ndarray:
    """`skimage.filters.gaussian(image, sigma)` of each image: SciPy's Gaussian on axes 1 and 2
    (skimage's defaults: `mode="nearest"`, `truncate=4`); sigma 0 leaves the images as they are."""
    images = np.asarray(images, dtype=np.float32)
    if sigma <= 0:
        return images
    sigmas = (0.0, sigma, sigma) + (0.0,) * (images.ndim - 3)
    return ndimage.gaussian_filter(images, sigmas, mode=mode, truncate=truncate)


@functools.cache
def clipped_zoom_matrix(factor: float, size: int = SIZE) -> np.ndarray:
    """The generator's `clipped_zoom` along one axis as a (size, size) matrix.

    It crops the central ceil(size / factor) pixels, zooms them with `scipy.ndimage.zoom(order=1)`
    and keeps `size` pixels from (out - size) // 2. Zooming the identity gives each output
    pixel's weights; order-1 zoom is separable, so an image zooms as `A @ image @ A.T`.
    """
    crop = math.ceil(size / factor)
    top = (size - crop) // 2
    zoomed = ndimage.zoom(np.eye(size)[top : top + crop], (factor, 1), order=1)
    trim = (len(zoomed) - size) // 2
    return zoomed[trim : trim + size]


def clipped_zoom(images: np.ndarray, factor: float) -> np.ndarray:
    """`clipped_zoom` of each image in (N, H, W[, C])."""
    matrix = clipped_zoom_matrix(factor, images.shape[1]).astype(np.float32)
    rows = np.einsum("ij,nj...->ni...", matrix, images, optimize=True)
    return np.einsum("kl,nil...->nik...", matrix, rows, optimize=True)


@functools.cache
def zoom_blur_operator(factors: tuple[float, ...], size: int = SIZE) -> np.ndarray:
    """(size^2, size^2) map of zoom blur: the mean of the image and its clipped zooms.

    Every term is linear, so the whole blur is one matrix on flattened images (one BLAS call per
    batch instead of a SciPy zoom per image and factor).
    """
    total = np.eye(size * size)
    for factor in factors:
        matrix = clipped_zoom_matrix(factor, size)
        total += np.kron(matrix, matrix)
    return (total / (len(factors) + 1)).astype(np.float32)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The generator's anti-aliased disk for defocus blur, cropped to its non-zero support.

    A disk of `radius` on a 17 x 17 grid (wider above radius 8), normalised, then smoothed by a
    3 x 3 (5 x 5 above radius 8) `cv2.GaussianBlur` of sigma `alias_blur`. Cropping zeros leaves
    every filtered value unchanged and makes the filter cheap.
    """
    half = 8 if radius <= 8 else math.ceil(radius)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    span = np.arange(-half, half + 1)
    x, y = np.meshgrid(span, span)
    disk = (x**2 + y**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize, sigmaX=alias_blur)
    rows, cols = np.nonzero(kernel)
    return kernel[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's `MotionBlurImage` weights: a one-sided Gaussian over 2 * ceil(radius) + 1
    taps (`GetOptimalKernelWidth1D`), normalised to sum 1."""
    taps = np.arange(int(2 * math.ceil(radius) + 1))
    weights = np.exp(-(taps.astype(np.float64) ** 2) / (2 * sigma * sigma))
    return weights / weights.sum()


def motion_offsets(width: int, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's tap offsets (x, y), each (N, width), for per-image angles in degrees: tap i
    samples `ceil(i * cos(angle) - 0.5)` columns and `ceil(i * sin(angle) - 0.5)` rows away."""
    radians = np.pi * np.asarray(angles, dtype=np.float64)[:, None] / 180
    point_x, point_y = width * np.sin(radians), width * np.cos(radians)
    norm = np.hypot(point_x, point_y)
    taps = np.arange(width)[None, :]
    dx = np.ceil(taps * point_y / norm - 0.5).astype(np.intp)
    dy = np.ceil(taps * point_x / norm - 0.5).astype(np.intp)
    return dx, dy


def motion_blur(
    images: np.ndarray, radius: float, sigma: float, angles: np.ndarray, cutoff: float = 1e-6
) -> np.ndarray:
    """ImageMagick's `MotionBlurImage(radius, sigma, angle)` of each image, as 8-bit values.

    Each output pixel is the weighted sum of the pixels `i` taps along the angle (edge pixels
    repeat beyond the border, ImageMagick's default virtual pixels). ImageMagick (Q16) rounds the
    sum to 16 bits and the reference read it back from an 8-bit PNG, which truncates: 8-bit value
    = floor(round(257 v) / 257). Taps weighing under `cutoff` are skipped: together they move a
    value by under 0.01 of a grey level.
    """
    images = np.asarray(images, dtype=np.float32)
    n, height, width = images.shape[:3]
    weights = motion_kernel(radius, sigma)
    dx, dy = motion_offsets(len(weights), angles)
    index = np.arange(n)[:, None, None]
    rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
    out = np.zeros_like(images)
    for tap in np.flatnonzero(weights >= cutoff):
        r = np.clip(rows + dy[:, tap, None, None], 0, height - 1)
        c = np.clip(cols + dx[:, tap, None, None], 0, width - 1)
        out += np.float32(weights[tap]) * images[index, r, c]
    return np.floor(np.floor(out * 257 + 0.5) / 257)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """SciPy's `mode="reflect"` (half-sample symmetric: d c b a | a b c d | d c b a)."""
    period = np.mod(index, 2 * size)
    return np.where(period < size, period, 2 * size - 1 - period)


def bilinear_reflect(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.map_coordinates(order=1, mode="reflect")` of each (H, W, C) image at
    per-pixel (rows, cols), both (N, H, W); the channel coordinate stays integral."""
    n, height, width = images.shape[:3]
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    ra, rb = reflect_index(r0, height), reflect_index(r0 + 1, height)
    ca, cb = reflect_index(c0, width), reflect_index(c0 + 1, width)
    index = np.arange(n)[:, None, None]
    top = images[index, ra, ca] * (1 - fc) + images[index, ra, cb] * fc
    bottom = images[index, rb, ca] * (1 - fc) + images[index, rb, cb] * fc
    return top * (1 - fr) + bottom * fr
