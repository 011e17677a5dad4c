"""The weather corruptions of CIFAR-C (Hendrycks & Dietterich, 2019): snow, frost, fog and the
extra spatter, with the constants of the published CIFAR generator."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cifar_lab.corruptions.filters import clipped_zoom, gaussian, motion_blur, to_uint8
from cifar_lab.corruptions.photos import frost_photos

GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # cv2.COLOR_RGB2GRAY
WATER = np.array([175, 238, 238], dtype=np.float32) / 255  # pale turquoise, RGB
MUD = np.array([63, 42, 20], dtype=np.float32) / 255  # mud brown, RGB
EDGE_KERNEL = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)


def snow(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    mean: float,
    std: float,
    zoom: float,
    threshold: float,
    blur_radius: float,
    blur_sigma: float,
    image_weight: float,
) -> np.ndarray:
    """Falling snow over a brightened, greyed image.

    A Gaussian flake layer is zoomed, thresholded, stored as 8 bits and motion-blurred at an angle
    from [-135, -45] degrees (ImageMagick in the reference, `filters.motion_blur` here); the layer
    and its 180-degree rotation are added to `w * x + (1 - w) * max(x, 1.5 * grey(x) + 0.5)`.
    """
    n = len(images)
    x = images.astype(np.float32) / 255
    flakes = rng.normal(mean, std, size=(n, *images.shape[1:3])).astype(np.float32)
    flakes = clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8)
    angles = rng.uniform(-135, -45, size=n)
    flakes = (motion_blur(flakes, blur_radius, blur_sigma, angles) / 255)[..., None]
    grey = (x @ GREY)[..., None]
    x = image_weight * x + (1 - image_weight) * np.maximum(x, grey * 1.5 + 0.5)
    return to_uint8((x + flakes + flakes[:, ::-1, ::-1]) * 255)


def frost(
    images: np.ndarray, rng: np.random.Generator, *, image_weight: float, frost_weight: float
) -> np.ndarray:
    """Ice crystals: `w_x * x + w_f * crop`, a random 32 x 32 crop of one of five frost photos.

    As published, the crop's corner is drawn with an exclusive upper bound, so the last row and
    column of corners are never used.
    """
    photos = frost_photos()
    n, height, width = images.shape[:3]
    which = rng.integers(len(photos), size=n)
    heights = np.array([p.shape[0] for p in photos])[which]
    widths = np.array([p.shape[1] for p in photos])[which]
    tops, lefts = rng.integers(0, heights - height), rng.integers(0, widths - width)
    crops = np.empty_like(images)
    for k, photo in enumerate(photos):
        chosen = which == k
        windows = sliding_window_view(photo, (height, width), axis=(0, 1))
        crops[chosen] = windows[tops[chosen], lefts[chosen]].transpose(0, 2, 3, 1)
    return to_uint8(image_weight * images.astype(np.float32) + frost_weight * crops)


def plasma_fractal(n: int, rng: np.random.Generator, decay: float, size: int = 32) -> np.ndarray:
    """(n, size, size) diamond-square height maps in [0, 1] (toroidal, as published).

    Each new point is the mean of its four neighbours plus `wibble * U(-wibble, wibble)`: the
    reference multiplies by `wibble` twice, so the roughness falls by `decay^2` per level. `wibble`
    starts at 100 and is divided by `decay` after each level.
    """
    heights = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def displaced(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        around = corners + np.roll(corners, -1, axis=1)
        around += np.roll(around, -1, axis=2)
        heights[:, half::step, half::step] = displaced(around)
        centres = heights[:, half::step, half::step]
        corners = heights[:, ::step, ::step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        heights[:, ::step, half::step] = displaced(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        heights[:, half::step, ::step] = displaced(top)
        step //= 2
        wibble /= decay
    heights -= heights.min(axis=(1, 2), keepdims=True)
    return heights / heights.max(axis=(1, 2), keepdims=True)


def fog(
    images: np.ndarray, rng: np.random.Generator, *, strength: float, decay: float
) -> np.ndarray:
    """Fog: a plasma fractal times `strength` added to x (on 0..1), rescaled by
    max / (max + strength) with max the image's brightest value."""
    x = images.astype(np.float32) / 255
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    haze = plasma_fractal(len(images), rng, decay, images.shape[1]).astype(np.float32)
    x += strength * haze[..., None]
    return to_uint8(x * peak / (peak + strength) * 255)


def water_mask(liquid: np.ndarray) -> np.ndarray:
    """The reference's water drops of one thresholded layer (0..1): Canny edges, distance to them
    (capped at 20), equalised, embossed and blurred, times the layer."""
    layer = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, EDGE_KERNEL), (3, 3)).astype(np.float32)
    mask = layer * dist
    peak = mask.max()
    return mask / peak if peak > 0 else mask


def spatter(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    mean: float,
    std: float,
    smoothing: float,
    threshold: float,
    strength: float,
    mud: int,
) -> np.ndarray:
    """Water or mud splashed on the lens, from a smoothed, thresholded Gaussian layer.

    Water (`mud=0`, severities 1-3): pale turquoise drops, `strength` their opacity. Mud (`mud=1`,
    severities 4-5): brown blots where the layer, blurred with sigma `strength`, reaches 0.8.
    The reference cast the layer to uint8 without clipping (wrapping past 1.0) and divided by a
    zero peak when a layer had no edges; here the layer is clipped and an empty mask adds nothing.
    """
    x = images.astype(np.float32) / 255
    liquid = gaussian(rng.normal(mean, std, size=images.shape[:3]), smoothing)
    liquid[liquid < threshold] = 0
    if not mud:
        masks = np.stack([water_mask(layer) for layer in liquid]) * np.float32(strength)
        return to_uint8((x + masks[..., None] * WATER) * 255)
    blots = gaussian((liquid > threshold).astype(np.float32), strength)
    blots[blots < 0.8] = 0
    blots = blots[..., None]
    return to_uint8((x * (1 - blots) + MUD * blots) * 255)
