"""CIFAR-10/100 (Krizhevsky, 2009) on disk: torchvision's layout, URL and MD5s, our reader.

torchvision's dataset classes name the files, the download URL and the official MD5s, and
fetch the archive. The batch files themselves are pickles, which torchvision reads with
`pickle.load`: that runs whatever code a crafted file names, and with `data.check_integrity=false`
(a rebuilt copy) no MD5 vouches for the files. So they are read here with `RestrictedUnpickler`,
which builds only what the real files hold (dicts, lists, strings, bytes, numbers and numpy
arrays), whatever the MD5 check says. This module also adds the opt-out of the MD5 check for
rebuilt copies in the same format, and errors that name the path, what was expected and the fix
instead of "Dataset not found or corrupted".
"""

from __future__ import annotations

import pickle
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity as md5_matches
from torchvision.datasets.utils import download_and_extract_archive, download_url

try:  # numpy 2 (pickles written by numpy 1.x name numpy.core, which it maps here)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

from cifar_lab.data.cifar_c import IMAGE_SHAPE, NATIVE_SIZE
from cifar_lab.errors import CifarLabError

DATASETS: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as pickles of byte strings (protocol 2) use it: latin-1 text only."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of {type(text).__name__} as {encoding!r}")
    return text.encode("latin1")


# Every global a CIFAR batch file names: numpy arrays and scalars (as numpy 1.x or 2.x pickle
# them, protocols 2 to 5) and the byte strings of protocol 2. Nothing here can run other code.
PICKLE_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
PICKLE_GLOBALS[("numpy", "dtype")] = np.dtype
PICKLE_GLOBALS[("_codecs", "encode")] = _latin1_encode
for _package in ("numpy.core", "numpy._core"):
    PICKLE_GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    PICKLE_GLOBALS[(f"{_package}.multiarray", "scalar")] = _multiarray.scalar
    PICKLE_GLOBALS[(f"{_package}.numeric", "_frombuffer")] = _numeric._frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `PICKLE_GLOBALS`: a file naming any other function or
    class (`os.system`, `builtins.eval`, a `__reduce__` payload) fails to load instead of
    running it (see the "Restricting Globals" section of the `pickle` docs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PICKLE_GLOBALS:
            return PICKLE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}, which CIFAR files never hold")


def read_pickle(path: Path) -> Any:
    """The object in a CIFAR pickle, built by `RestrictedUnpickler`; any failure is one line.

    Every exception is caught on purpose: the file is untrusted, and a damaged pickle fails in
    many ways (EOFError, ValueError, KeyError, MemoryError, ...), all meaning "not CIFAR"."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise CifarLabError(
            f"{path} is not a CIFAR batch file ({type(err).__name__}: {first_line}); expected "
            f"torchvision's pickle layout: re-download it (delete the folder, data.download=true)"
        ) from err


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


def outer_root(name: str, root: str | Path) -> Path:
    """`data.root` as given, or its parent when it names the dataset's own folder (a user who
    points at `.../cifar-10-batches-py` means the folder that holds it)."""
    root = Path(root)
    return root.parent if root.name == dataset_class(name).base_folder else root


def dataset_dir(name: str, root: str | Path) -> Path:
    """The folder torchvision reads, e.g. `<root>/cifar-100-python`."""
    return outer_root(name, root) / dataset_class(name).base_folder


def other_cifar_hint(name: str, root: str | Path) -> str:
    """A hint when `root` holds the other CIFAR's folder (cifar-10 for cifar100 or back): right
    for training (choose that dataset) and for scoring (point data.root elsewhere)."""
    others = [other for other in DATASETS if other != name and dataset_dir(other, root).is_dir()]
    return "".join(
        f"; {root} holds {dataset_dir(other, root).name} ({other}): to train on it add "
        f"data={other}; to score a {name} checkpoint point data.root at a folder holding "
        f"{dataset_dir(name, root).name}"
        for other in others
    )


def failing_files(cls: type[CIFAR10], folder: Path, train: bool) -> list[str]:
    """The split's files (and the class names) that are missing in `folder` or fail their MD5
    (None: presence only); the other split may be absent (a folder of the test split alone)."""
    split = cls.train_list if train else cls.test_list
    files = [*split, [cls.meta["filename"], cls.meta["md5"]]]
    return [file for file, md5 in files if not md5_matches(str(folder / file), md5)]


def _labels(batch: dict, n: int) -> np.ndarray | None:
    labels = batch.get("labels", batch.get("fine_labels"))
    if not isinstance(labels, (list, np.ndarray)):
        return None
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):
        return None
    if labels.shape != (n,) or labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        return None
    if n and labels.min() < 0:
        return None
    return labels.astype(np.int64)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: uint8 images (N, 32, 32, 3) and int64 labels (N,), checked."""
    batch = read_pickle(path)
    data = batch.get("data") if isinstance(batch, dict) else None
    pixels = int(np.prod(IMAGE_SHAPE))
    ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    labels = _labels(batch, len(data)) if ok and data.shape[1] == pixels else None
    if labels is None:
        raise CifarLabError(
            f"{path} does not hold a CIFAR batch (a dict with 'data': uint8 (N, {pixels}) and "
            f"'labels' or 'fine_labels': N integers >= 0); re-download it (delete the folder, "
            f"data.download=true)"
        )
    images = data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE).transpose(0, 2, 3, 1)  # to HWC
    return images, labels


def read_classes(cls: type[CIFAR10], folder: Path) -> list[str]:
    path, key = folder / cls.meta["filename"], cls.meta["key"]
    meta = read_pickle(path)
    classes = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CifarLabError(
            f"{path} does not hold the class names (a dict with {key!r}: a list of strings); "
            f"re-download it (delete the folder, data.download=true)"
        )
    return classes


def download_error(
    err: Exception, url: str, root: str | Path, fix: str, what: str
) -> CifarLabError:
    source = f"{what} from {url}" if what else url
    why = (str(err).splitlines() or [type(err).__name__])[0]
    return CifarLabError(f"could not download {source} into {root} ({why}); {fix}")


def fetch_archive(url: str, root: str | Path, fix: str, what: str = "", **kwargs: Any) -> None:
    """torchvision's download and unpack of `url` into `root`; a network failure or an archive
    that fails its MD5 is one line ending in `fix`."""
    try:
        download_and_extract_archive(url, str(root), **kwargs)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise download_error(err, url, root, fix, what) from err


def fetch_file(
    url: str, root: Path, filename: str, fix: str, what: str = "", md5: str | None = None
) -> Path:
    """torchvision's download of `url` to `root/filename` (checked against `md5` if given), via a
    `.part` file so an interrupted download never looks like a complete one; a failure is one
    line ending in `fix`."""
    root.mkdir(parents=True, exist_ok=True)
    part = root / f"{filename}.part"
    part.unlink(missing_ok=True)  # torchvision would take a leftover file as already fetched
    try:
        download_url(url, str(root), part.name, md5)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        part.unlink(missing_ok=True)
        raise download_error(err, url, root, fix, what) from err
    return part.rename(root / filename)


def split_files(name: str, train: bool) -> list[str]:
    """The files one split of `name` is read from, class names included."""
    cls = dataset_class(name)
    return [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]


def fetch_cifar(name: str, root: str | Path, check_integrity: bool = True) -> None:
    """torchvision's archive of `name`, downloaded and unpacked into `root` (MD5-checked unless
    `check_integrity` is off)."""
    cls = dataset_class(name, check_integrity)
    fetch_archive(
        cls.url,
        root,
        f"check the network, or download {cls.filename} elsewhere and unpack it into "
        f"{root}{other_cifar_hint(name, root)}",
        what=name,
        filename=cls.filename,
        md5=cls.tgz_md5,
    )


def load_cifar(
    name: str,
    root: str | Path,
    train: bool,
    download: bool = False,
    check_integrity: bool = True,
) -> ImageArrays:
    """Read one split into memory (CIFAR is 180 MB as uint8), downloading it first if asked."""
    cls = dataset_class(name, check_integrity)
    root = outer_root(name, root)
    folder = dataset_dir(name, root)
    files = [f for f, _ in cls.train_list + cls.test_list]
    if not download and not folder.is_dir():
        raise CifarLabError(
            f"{name} not found: {folder} does not exist (expected torchvision's "
            f"'{cls.base_folder}' folder with {files}); set data.download=true to fetch it, or "
            f"point data.root at the folder that holds it{other_cifar_hint(name, root)}"
        )
    # Files that are here are never downloaded again, not even when they fail the MD5 check
    # (torchvision would re-fetch them): the error below names the failing file instead.
    present = all((folder / f).is_file() for f in [*files, cls.meta["filename"]])
    if download and not present:
        fetch_cifar(name, root, check_integrity)
    failing = failing_files(cls, folder, train)
    missing = [file for file in failing if not (folder / file).is_file()]
    if missing:
        raise CifarLabError(
            f"{name} files {missing} are missing in {folder}; delete the folder and set "
            f"data.download=true to fetch them, or point data.root at a full copy"
            f"{other_cifar_hint(name, root)}"
        )
    if failing:
        raise CifarLabError(
            f"{name} file {failing[0]} in {folder} fails the official MD5 check: delete {folder} "
            f"and set data.download=true for the official files; a rebuilt copy in the same "
            f"format loads with data.check_integrity=false (read safely either way)"
        )
    parts = [read_batch(folder / file) for file, _ in (cls.train_list if train else cls.test_list)]
    return ImageArrays(
        images=np.ascontiguousarray(np.concatenate([images for images, _ in parts])),
        labels=np.concatenate([labels for _, labels in parts]),
        classes=read_classes(cls, folder),
    )
