"""Tiny CIFAR-10/100 folders in torchvision's real pickle layout, so the real reading code runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

LAYOUTS = {
    # name: (folder, train files, test file, label key, meta file, meta key, classes)
    "cifar100": (
        "cifar-100-python",
        ["train"],
        "test",
        "fine_labels",
        "meta",
        "fine_label_names",
        100,
    ),
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "labels",
        "batches.meta",
        "label_names",
        10,
    ),
}


def class_patterns(num_classes: int, seed: int = 0) -> np.ndarray:
    """One fixed colour per class, so a model can really learn the tiny set."""
    return np.random.default_rng(seed).integers(0, 256, (num_classes, 3), dtype=np.uint8)


def make_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 3072) uint8 rows in CIFAR's channel-major order: class colour plus noise."""
    colours = class_patterns(num_classes)[labels].astype(np.int16)  # (N, 3)
    noise = rng.integers(-40, 41, (len(labels), 3, 32, 32), dtype=np.int16)
    images = np.clip(colours[:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return images.reshape(len(labels), 3072)


def write_cifar(
    root: Path, name: str = "cifar100", n_train: int = 120, n_test: int = 40, seed: int = 0
) -> Path:
    """Write `<root>/<folder>/...` pickles with n_train/n_test images; returns `root`."""
    folder, train_files, test_file, label_key, meta_file, meta_key, num_classes = LAYOUTS[name]
    base = Path(root) / folder
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(file: str, n: int) -> None:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        batch = {
            "data": make_images(labels, num_classes, rng),
            label_key: labels.tolist(),
            "filenames": [f"img_{i}.png" for i in range(n)],
        }
        if name == "cifar100":
            batch["coarse_labels"] = (labels // 5).tolist()
        with open(base / file, "wb") as f:
            pickle.dump(batch, f)

    per_file = np.array_split(np.arange(n_train), len(train_files))
    for file, part in zip(train_files, per_file, strict=False):
        dump(file, len(part))
    dump(test_file, n_test)
    meta = {meta_key: [f"class_{i:03d}" for i in range(num_classes)]}
    if name == "cifar100":
        meta["coarse_label_names"] = [f"super_{i:02d}" for i in range(20)]
    with open(base / meta_file, "wb") as f:
        pickle.dump(meta, f)
    return Path(root)


class CreatesFile:
    """A pickle payload: `pickle.load` of it opens `marker` for writing, creating the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def write_malicious_batch(path: Path, marker: Path, n: int = 10, label_key: str = "fine_labels"):
    """A batch file in the real layout whose `filenames` entry would create `marker`."""
    labels = np.arange(n) % 10
    batch = {
        "data": make_images(labels, 10, np.random.default_rng(0)),
        label_key: labels.tolist(),
        "filenames": CreatesFile(marker),
    }
    path.write_bytes(pickle.dumps(batch))
    return path
