"""CIFAR-10/100 (Krizhevsky, 2009) on disk, read through torchvision's dataset classes.

torchvision owns the pickle format, the download URL and the official MD5s. This module adds
what it lacks: an opt-out of the MD5 check for rebuilt copies in the same format, and errors
that name the path, what was expected and the fix instead of "Dataset not found or corrupted".
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity as matches_md5

from cifar_lab.errors import CifarLabError

DATASETS: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}
# CIFAR images (and every CIFAR-C / leaderboard image) are 32 x 32 RGB.
NATIVE_SIZE = 32
IMAGE_SHAPE = (NATIVE_SIZE, NATIVE_SIZE, 3)


@dataclass(frozen=True)
class ImageArrays:
    """One split held as arrays: uint8 images (N, 32, 32, 3) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def dataset_class(name: str, check_integrity: bool = True) -> type[CIFAR10]:
    """torchvision's class for `name`, or a subclass that checks file presence but not MD5s."""
    if name not in DATASETS:
        raise CifarLabError(
            f"data.name={name!r} is not a known dataset; expected one of {sorted(DATASETS)}"
        )
    base = DATASETS[name]
    if check_integrity:
        return base
    # md5=None makes torchvision's check_integrity test only that each file exists.
    return type(
        f"Unverified{base.__name__}",
        (base,),
        {
            "tgz_md5": None,
            "train_list": [[file, None] for file, _ in base.train_list],
            "test_list": [[file, None] for file, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def dataset_dir(name: str, root: str | Path) -> Path:
    """The folder torchvision reads, e.g. `<root>/cifar-100-python`."""
    return Path(root) / dataset_class(name).base_folder


def other_cifar_hint(name: str, root: str | Path) -> str:
    """A hint when `root` holds the other CIFAR's folder (cifar-10 for cifar100 or back)."""
    others = [other for other in DATASETS if other != name and dataset_dir(other, root).is_dir()]
    return "".join(
        f"; {root} holds {dataset_dir(other, root).name}: add data={other} to use it"
        for other in others
    )


def failing_file(cls: type[CIFAR10], folder: Path) -> str:
    """The first file of `folder` that fails its official MD5 (all of them exist)."""
    for file, md5 in [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]:
        if not matches_md5(str(folder / file), md5):
            return file
    return "a file"


def load_cifar(
    name: str,
    root: str | Path,
    train: bool,
    download: bool = False,
    check_integrity: bool = True,
) -> ImageArrays:
    """Read one split into memory (CIFAR is 180 MB as uint8), downloading it first if asked."""
    cls = dataset_class(name, check_integrity)
    folder = dataset_dir(name, root)
    split = "train" if train else "test"
    files = [f for f, _ in cls.train_list + cls.test_list]
    if not download and not folder.is_dir():
        raise CifarLabError(
            f"{name} not found: {folder} does not exist (expected torchvision's "
            f"'{cls.base_folder}' folder with {files}); set data.download=true to fetch it, or "
            f"point data.root at the folder that holds it{other_cifar_hint(name, root)}"
        )
    # torchvision re-downloads files that fail the MD5 check: never for files that are here
    present = all((folder / f).is_file() for f in [*files, cls.meta["filename"]])
    try:
        dataset = cls(root=str(root), train=train, download=download and not present)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise CifarLabError(
            f"could not download {name} from {cls.url} into {root}: {err}; check the network, "
            f"or download {cls.filename} elsewhere and unpack it into {root}"
            f"{other_cifar_hint(name, root)}"
        ) from err
    except RuntimeError as err:
        if "corrupted" not in str(err) and "not found" not in str(err).lower():
            raise
        if present and check_integrity:
            raise CifarLabError(
                f"{name} file {failing_file(cls, folder)} in {folder} fails the official MD5 "
                f"check; set data.check_integrity=false if this is a rebuilt copy in the same "
                f"format, or delete {folder} and set data.download=true for the official files"
            ) from err
        raise CifarLabError(
            f"{name} {split} files in {folder} are missing (expected {files}); delete the "
            f"folder and set data.download=true to fetch them, or point data.root at a full "
            f"copy{other_cifar_hint(name, root)}"
        ) from err
    return ImageArrays(
        images=np.ascontiguousarray(dataset.data, dtype=np.uint8),
        labels=np.asarray(dataset.targets, dtype=np.int64),
        classes=list(dataset.classes),
    )
