"""The noise corruptions of CIFAR-C (Hendrycks & Dietterich, 2019): Gaussian, shot (Poisson),
impulse (salt and pepper) and speckle noise, drawn per pixel and channel.

Values are on the 0..255 scale; the paper's constants are on 0..1 and are scaled here.
"""

from __future__ import annotations

import numpy as np

from cifar_lab.corruptions.filters import to_uint8


def gaussian_noise(images: np.ndarray, rng: np.random.Generator, *, scale: float) -> np.ndarray:
    """Add N(0, scale^2) (on 0..1) to every value."""
    noisy = images.astype(np.float32)
    noisy += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(255 * scale)
    return to_uint8(noisy)


def shot_noise(images: np.ndarray, rng: np.random.Generator, *, photons: float) -> np.ndarray:
    """Photon counting: Poisson(x * photons) / photons, x on 0..1; fewer photons, more noise."""
    counts = rng.poisson(images * (photons / 255))
    return to_uint8(counts * (255 / photons))


def impulse_noise(images: np.ndarray, rng: np.random.Generator, *, amount: float) -> np.ndarray:
    """Salt and pepper as `skimage.util.random_noise(mode="s&p")`: each value independently
    becomes 0 or 255 (even odds) with probability `amount`.

    Untouched values are copied as uint8; the reference's round trip through x / 255 * 255 and
    truncation lowered a few of them by one grey level.
    """
    draw = rng.random(images.shape, dtype=np.float32)
    noisy = images.copy()
    noisy[draw < amount] = 0
    noisy[draw < amount / 2] = 255
    return noisy


def speckle_noise(images: np.ndarray, rng: np.random.Generator, *, scale: float) -> np.ndarray:
    """Multiplicative noise: x + x * N(0, scale^2)."""
    values = images.astype(np.float32)
    factor = rng.standard_normal(images.shape, dtype=np.float32) * np.float32(scale)
    return to_uint8(values + values * factor)
