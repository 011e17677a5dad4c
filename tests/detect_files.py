"""Tiny OOD detection sets in their real on-disk layouts (torchvision's), so the real readers run:
SVHN's MATLAB file, MNIST/Fashion-MNIST IDX files (raw or .gz), DTD's folders and split lists,
Places365's validation list and 256 px folder. Each image is one flat colour per label
(`colour_of`), so a test can tell which images a reader took after resizing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def colour_of(label: int) -> tuple[int, int, int]:
    """A colour per label, far enough apart to survive resizing and JPEG."""
    return (40 + 20 * label, 200 - 15 * label, 60 + 30 * (label % 5))


def labels_of(images: np.ndarray, labels: int = 10) -> list[int]:
    """The label whose colour is nearest each image's centre pixel (JPEG shifts it a little)."""
    colours = np.array([colour_of(label) for label in range(labels)], dtype=np.int64)
    centres = images[:, 16, 16].astype(np.int64)
    return np.abs(centres[:, None] - colours[None]).sum(-1).argmin(1).tolist()


def write_svhn(root: Path, labels: list[int]) -> Path:
    """`root/svhn/test_32x32.mat`: X (32, 32, 3, n), y (n, 1) with 10 for the digit 0."""
    images = np.stack([np.full((32, 32, 3), colour_of(label), np.uint8) for label in labels])
    images[:, 0, 0] = 0  # one dark corner pixel, to check the axes come out as (n, H, W, C)
    y = np.array([[label or 10] for label in labels], dtype=np.uint8)
    folder = root / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "test_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
    return folder / "test_32x32.mat"


def idx_bytes(array: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + (array.astype(np.uint8).tobytes())
    )


def write_idx_set(root: Path, class_name: str, labels: list[int], packed: bool = False) -> Path:
    """`root/<class_name>/raw/t10k-{images-idx3,labels-idx1}-ubyte[.gz]`: 28 x 28 grey digits
    whose grey level is 20 * label + 30."""
    folder = root / class_name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full((28, 28), 20 * label + 30, np.uint8) for label in labels])
    for stem, array in (
        ("t10k-images-idx3-ubyte", images),
        ("t10k-labels-idx1-ubyte", np.array(labels)),
    ):
        data = idx_bytes(array)
        if packed:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return folder


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_dtd(root: Path, classes: list[str], per_class: int) -> Path:
    """`root/dtd/dtd/images/<class>/<class>_000i.jpg` (40 x 60 px, one colour per class) and
    labels/{train,val,test}1.txt splitting them, as DTD's partition 1 does."""
    folder = root / "dtd" / "dtd"
    lines: list[str] = []
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_image(
                folder / "images" / name / f"{name}_{i:04d}.jpg", colour_of(label), (40, 60)
            )
            lines.append(f"{name}/{name}_{i:04d}.jpg")
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for part, list_name in enumerate(("train1.txt", "val1.txt", "test1.txt")):
        (folder / "labels" / list_name).write_text("\n".join(lines[part::3]) + "\n")
    return folder


def write_places365(root: Path, labels: list[int], side: int = 48) -> Path:
    """`root/places365/places365_val.txt` ('<file> <label>' lines) and `val_256/<file>` images
    (smaller than 256 px, to stay tiny)."""
    folder = root / "places365"
    lines = []
    for i, label in enumerate(labels):
        name = f"Places365_val_{i + 1:08d}.jpg"
        write_image(folder / "val_256" / name, colour_of(label), (side, side))
        lines.append(f"{name} {label}")
    (folder / "places365_val.txt").write_text("\n".join(lines) + "\n")
    return folder
