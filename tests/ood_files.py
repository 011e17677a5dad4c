"""Tiny OOD sets in the real on-disk layouts: leaderboard `distortionNN.npy` and CIFAR-C
`{corruption}.npy` + `labels.npy`, uint8 (5 * n, 32, 32, 3), severity-major."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

LEADERBOARD_NAMES = [f"distortion{i:02d}" for i in range(19)]


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def write_leaderboard(
    root: Path, per_severity: int, names: Sequence[str] = LEADERBOARD_NAMES
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        np.save(root / f"{name}.npy", random_images(5 * per_severity, seed=i))
    return root


def write_corruption_set(root: Path, images: dict[str, np.ndarray], labels: np.ndarray) -> Path:
    """`images[name]` is saved as `{name}.npy`; `labels` (5 * n,) as `labels.npy` (uint8, as
    in the released CIFAR-C files)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, array in images.items():
        np.save(root / f"{name}.npy", array)
    np.save(root / "labels.npy", labels.astype(np.uint8))
    return root
