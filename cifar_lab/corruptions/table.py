"""The 19 corruptions and their 5 severities: one table, so every tool reads the same constants.

Constants are those of the authors' published CIFAR generator (`make_cifar_c.py` in
hendrycks/robustness), which are milder than the ImageNet-C ones because the images are 32 px.
Each severity is a dict of keyword arguments for the corruption's function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cifar_lab.corruptions import blur, digital, noise, weather
from cifar_lab.data.cifar_c import CIFAR_C, NATIVE_SIZE, SEVERITIES
from cifar_lab.errors import CifarLabError


@dataclass(frozen=True)
class Corruption:
    """One corruption: `function(images, [rng,] **params[severity - 1])`, uint8 in and out."""

    name: str
    function: Callable[..., np.ndarray]
    params: tuple[Mapping[str, Any], ...]  # one entry per severity 1..5
    random: bool  # takes a numpy Generator after the images

    @property
    def family(self) -> str:
        """noise, blur, weather or digital, as grouped in the paper (see `CIFAR_C`)."""
        return CIFAR_C.family(self.name)

    @property
    def benchmark(self) -> bool:
        """One of the 15 that CIFAR-C means average over (else one of the 4 extra)."""
        return self.name in CIFAR_C.benchmark

    def __call__(
        self, images: np.ndarray, severity: int, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Corrupt a batch (N, 32, 32, 3) uint8 at `severity` (1..5)."""
        if severity not in SEVERITIES:
            raise CifarLabError(
                f"severity {severity!r} of {self.name} is out of range; expected one of "
                f"{list(SEVERITIES)}"
            )
        shape = CIFAR_C.image_shape
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
            raise CifarLabError(
                f"{self.name} got images of shape {images.shape} {images.dtype} but "
                f"{CIFAR_C.array_shape('N')} uint8 was expected; pass CIFAR images as loaded"
            )
        params = self.params[SEVERITIES.index(severity)]
        if not self.random:
            return self.function(images, **params)
        if rng is None:
            raise CifarLabError(
                f"{self.name} is random and needs a numpy Generator; pass "
                f"rng=corruption_rng(seed, {self.name!r}, {severity})"
            )
        return self.function(images, rng, **params)


def levels(names: str, rows: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """Per-severity keyword arguments from parameter names and one row (or value) per severity."""
    keys = names.split()
    rows = [row if isinstance(row, tuple) else (row,) for row in rows]
    return tuple(dict(zip(keys, row, strict=True)) for row in rows)


def _entry(name: str, function: Callable, names: str, rows: Sequence) -> Corruption:
    random = "rng" in inspect.signature(function).parameters
    return Corruption(name, function, levels(names, rows), random)


S = NATIVE_SIZE  # the generator writes elastic constants as multiples of the image side
# fmt: off
_TABLE = [
    _entry("gaussian_noise", noise.gaussian_noise, "scale", [0.04, 0.06, 0.08, 0.09, 0.1]),
    _entry("shot_noise", noise.shot_noise, "photons", [500, 250, 100, 75, 50]),
    _entry("impulse_noise", noise.impulse_noise, "amount", [0.01, 0.02, 0.03, 0.05, 0.07]),
    _entry(
        "defocus_blur", blur.defocus_blur, "radius alias_blur",
        [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    ),
    _entry(
        "glass_blur", blur.glass_blur, "sigma max_delta iterations",
        [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    ),
    _entry(
        "motion_blur", blur.motion_blur, "radius sigma",
        [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    ),
    _entry(
        "zoom_blur", blur.zoom_blur, "max_zoom step",
        [(1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)],
    ),
    _entry(
        "snow", weather.snow,
        "mean std zoom threshold blur_radius blur_sigma image_weight",
        [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ],
    ),
    _entry(
        "frost", weather.frost, "image_weight frost_weight",
        [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    ),
    _entry(
        "fog", weather.fog, "strength decay",
        [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    ),
    _entry("brightness", digital.brightness, "shift", [0.05, 0.1, 0.15, 0.2, 0.3]),
    _entry("contrast", digital.contrast, "factor", [0.75, 0.5, 0.4, 0.3, 0.15]),
    _entry(
        "elastic_transform", digital.elastic_transform, "alpha sigma affine",
        [
            (S * 0, S * 0, S * 0.08),
            (S * 0.05, S * 0.2, S * 0.07),
            (S * 0.08, S * 0.06, S * 0.06),
            (S * 0.1, S * 0.04, S * 0.05),
            (S * 0.1, S * 0.03, S * 0.03),
        ],
    ),
    _entry("pixelate", digital.pixelate, "scale", [0.95, 0.9, 0.85, 0.75, 0.65]),
    _entry("jpeg_compression", digital.jpeg_compression, "quality", [80, 65, 58, 50, 40]),
    _entry("speckle_noise", noise.speckle_noise, "scale", [0.06, 0.1, 0.12, 0.16, 0.2]),
    _entry("gaussian_blur", blur.gaussian_blur, "sigma", [0.4, 0.6, 0.7, 0.8, 1]),
    _entry(
        "spatter", weather.spatter, "mean std smoothing threshold strength mud",
        [
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ],
    ),
    _entry(
        "saturate", digital.saturate, "factor offset",
        [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    ),
]
# fmt: on

CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _TABLE}
BENCHMARK, EXTRA = CIFAR_C.benchmark, CIFAR_C.extra


def corruption_rng(seed: int, name: str, severity: int) -> np.random.Generator:
    """The random stream of one corruption at one severity, from the seed and the name alone, so
    a run over a subset of corruptions draws the same as the full run."""
    return np.random.default_rng([int(seed), severity, *name.encode()])


def get_corruptions(names: Sequence[str] | None = None) -> list[Corruption]:
    """The named corruptions in the order given (all 19 in table order for None)."""
    if names is None:
        return list(_TABLE)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise CifarLabError(
            f"unknown corruption(s) {unknown}; expected some of {list(CORRUPTIONS)}"
        )
    return [CORRUPTIONS[n] for n in names]


def describe(corruption: Corruption) -> list[dict[str, Any]]:
    """Its parameters per severity, JSON-ready, for the manifest."""
    return [dict(p) for p in corruption.params]
