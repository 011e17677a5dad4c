"""The OOD sets of OpenOOD's CIFAR benchmark on disk, in torchvision's layouts, with our readers.

Near-OOD: the other CIFAR (CIFAR-10 for a CIFAR-100 model and the reverse). Far-OOD: SVHN,
MNIST, Fashion-MNIST, Textures (DTD, Cimpoi et al., 2014) and Places365 (Zhou et al., 2017), as
in OpenOOD v1.5 (Zhang et al., 2023). Under `detect.root` each lives where torchvision's class
puts it (the first two in a folder of their own, as torchvision reads them from its root):

    cifar-10-batches-py/ or cifar-100-python/     the test split (`cifar_lab.data.datasets`)
    svhn/test_32x32.mat                            SVHN's test split, a MATLAB file
    MNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte[.gz]          (FashionMNIST/raw/ likewise)
    dtd/dtd/images/<class>/*.jpg + dtd/dtd/labels/{train,val,test}1.txt
    places365/places365_val.txt + places365/val_256/*.jpg        (the 256 px validation images)

torchvision's classes name the files, URLs and MD5s, and its download functions fetch them;
files already there are never fetched again. They are read here rather than by the classes:
the list files of DTD and Places365 name image paths (here refused when they lead out of the
folder), MNIST's class would `torch.load` a `processed/` file if one is there, and the classes
read whole sets where a bounded subset needs only a few images decoded.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
from torchvision.datasets import DTD, MNIST, SVHN, FashionMNIST, Places365
from torchvision.datasets.utils import check_integrity as md5_matches

from cifar_lab.data.datasets import (
    dataset_dir,
    fetch_archive,
    fetch_cifar,
    fetch_file,
    load_cifar,
    outer_root,
    split_files,
)
from cifar_lab.data.image_files import Candidates, inside
from cifar_lab.errors import CifarLabError

# the largest decompressed MNIST file read: its train images are 47 MB
MAX_IDX_BYTES = 256 * 2**20


def fetch_fix(what: str, folder: Path) -> str:
    return f"check the network, or download {what} by hand into {folder}"


def check_md5(name: str, path: Path, md5: str | None, check_integrity: bool) -> None:
    """The official MD5 of a file torchvision lists one for; a failure is one line, never a
    download over the file."""
    if check_integrity and md5 and not md5_matches(str(path), md5):
        raise CifarLabError(
            f"{name} file {path} fails the official MD5 check: delete it and set "
            f"detect.download=true for the official file; a rebuilt copy in the same format "
            f"loads with detect.check_integrity=false"
        )


def not_layout(name: str, path: Path, expected: str, why: str = "") -> CifarLabError:
    because = f" ({why})" if why else ""
    return CifarLabError(
        f"{path} is not {name}'s file{because}; expected {expected}: delete it and set "
        f"detect.download=true, or point detect.root at a folder in torchvision's layout"
    )


def read_lines(name: str, path: Path) -> list[str]:
    """The non-empty lines of a list file, or one line saying it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise not_layout(name, path, "a text file of image names", type(err).__name__) from err
    return [line.strip() for line in text.splitlines() if line.strip()]


class FileSet:
    """One set on disk: what of it is missing, how to fetch it and how to read it."""

    name = ""

    def folder(self, root: Path) -> Path:
        raise NotImplementedError

    def missing(self, root: Path) -> list[Path]:
        """The files or folders it reads that are not there."""
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        raise NotImplementedError

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        raise NotImplementedError

    def open(self, root: Path, download: bool, check_integrity: bool) -> Candidates:
        """Its images, fetched first only when something is missing and `download` is on."""
        if download and self.missing(root):
            self.fetch(root)
        return self.read(root, check_integrity)


class CifarTest(FileSet):
    """The test split of CIFAR-10 or CIFAR-100 (the near-OOD set of a model of the other)."""

    def __init__(self, name: str):
        self.name = name

    def folder(self, root: Path) -> Path:
        return dataset_dir(self.name, root)

    def missing(self, root: Path) -> list[Path]:
        folder = self.folder(root)
        files = [folder / file for file in split_files(self.name, train=False)]
        return [file for file in files if not file.is_file()]

    def fetch(self, root: Path) -> None:
        fetch_cifar(self.name, outer_root(self.name, root))

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        test = load_cifar(self.name, root, train=False, check_integrity=check_integrity)
        return Candidates.of_arrays(test.images, test.labels)


class SVHNTest(FileSet):
    """SVHN's test split (Netzer et al., 2011): `X` uint8 (32, 32, 3, n), `y` 1..10 (10 is the
    digit 0, as torchvision relabels it)."""

    name = "svhn"
    url, filename, md5 = SVHN.split_list["test"]

    def folder(self, root: Path) -> Path:
        return root / "svhn"

    def missing(self, root: Path) -> list[Path]:
        path = self.folder(root) / self.filename
        return [] if path.is_file() else [path]

    def fetch(self, root: Path) -> None:
        folder = self.folder(root)
        fix = fetch_fix(self.filename, folder)
        fetch_file(self.url, folder, self.filename, fix, self.name, self.md5)

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        import scipy.io  # torchvision reads SVHN with it too; loaded only for this set

        path = self.folder(root) / self.filename
        check_md5(self.name, path, self.md5, check_integrity)
        expected = "a MATLAB file with X uint8 (32, 32, 3, n) and y (n, 1) digits 1..10"
        try:
            mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
        # Everything is caught on purpose: the file is untrusted and a damaged MATLAB file
        # fails in many ways (ValueError, TypeError, OSError, MatReadError, ...).
        except Exception as err:
            why = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise not_layout(self.name, path, expected, why) from err
        images, labels = mat.get("X"), mat.get("y")
        ok = isinstance(images, np.ndarray) and images.dtype == np.uint8
        ok = ok and images.ndim == 4 and images.shape[:3] == (32, 32, 3)
        ok = ok and isinstance(labels, np.ndarray) and labels.size == images.shape[-1]
        ok = ok and np.issubdtype(labels.dtype, np.number)
        ok = ok and bool(np.isin(labels, np.arange(1, 11)).all())
        if not ok:
            raise not_layout(self.name, path, expected)
        images = np.ascontiguousarray(images.transpose(3, 0, 1, 2))
        return Candidates.of_arrays(images, labels.reshape(-1).astype(np.int64) % 10)


def read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file (LeCun's MNIST format: 0, 0, 0x08, ndim, big-endian sizes, bytes), raw
    or gzipped. Written here because torchvision's reader takes no .gz and checks with asserts."""
    expected = f"an IDX file of uint8 with {ndim} dimensions (raw or .gz)"
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise not_layout(name, path, expected, type(err).__name__) from err
    header = 4 + 4 * ndim
    if len(data) > MAX_IDX_BYTES or len(data) < header or data[:4] != bytes([0, 0, 8, ndim]):
        raise not_layout(name, path, expected)
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape, dtype=np.int64)):
        raise not_layout(name, path, expected, f"{len(data) - header} bytes for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class IdxTest(FileSet):
    """The 10,000 test images of MNIST (LeCun et al., 1998) or Fashion-MNIST (Xiao et al., 2017):
    28 x 28 grey, in `<Class>/raw/`; the unpacked files, or the .gz torchvision downloads."""

    stems = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def __init__(self, name: str, cls: type[MNIST]):
        self.name, self.cls = name, cls
        self.md5 = dict(cls.resources)

    def folder(self, root: Path) -> Path:
        return root / self.cls.__name__ / "raw"

    def _path(self, root: Path, stem: str) -> Path | None:
        raw, packed = self.folder(root) / stem, self.folder(root) / f"{stem}.gz"
        return raw if raw.is_file() else packed if packed.is_file() else None

    def missing(self, root: Path) -> list[Path]:
        return [self.folder(root) / s for s in self.stems if self._path(root, s) is None]

    def fetch(self, root: Path) -> None:
        folder = self.folder(root)
        for stem in self.stems:
            if self._path(root, stem) is not None:
                continue
            file = f"{stem}.gz"
            for i, mirror in enumerate(self.cls.mirrors):
                try:
                    fix = fetch_fix(file, folder)
                    fetch_archive(
                        f"{mirror}{file}", folder, fix, self.name, filename=file, md5=self.md5[file]
                    )
                    break
                except CifarLabError:
                    if i == len(self.cls.mirrors) - 1:
                        raise

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        arrays = []
        for stem, ndim in zip(self.stems, (3, 1), strict=True):
            path = self._path(root, stem)
            if path is None:
                raise not_layout(self.name, self.folder(root) / stem, "the file to be there")
            if path.suffix == ".gz":  # the unpacked files have no official MD5
                check_md5(self.name, path, self.md5.get(path.name), check_integrity)
            arrays.append(read_idx(self.name, path, ndim))
        images, labels = arrays
        if len(images) != len(labels) or labels.max(initial=0) > 9:
            raise not_layout(self.name, self.folder(root), "as many labels 0..9 as images")
        return Candidates.of_arrays(images, labels.astype(np.int64))


def listed_files(name: str, folder: Path, lines: list[str], list_file: Path) -> list[Path]:
    """Image paths a list file names relative to `folder`, each checked to lie inside it."""
    paths = []
    for line in lines:
        relative = Path(line.lstrip("/"))
        if ".." in relative.parts:
            raise CifarLabError(
                f"{list_file} names {line!r}, a path out of {folder}; refusing to read it: "
                f"re-download {name}"
            )
        paths.append(inside(folder, folder / relative, str(list_file)))
    return paths


class TexturesSet(FileSet):
    """The Describable Textures Dataset: 5,640 photos of 47 textures, 300 to 640 px; the three
    lists of partition 1 (train1, val1, test1) together name every image once."""

    name = "textures"
    lists = ("train1.txt", "val1.txt", "test1.txt")

    def folder(self, root: Path) -> Path:
        return root / "dtd" / "dtd"

    def missing(self, root: Path) -> list[Path]:
        folder = self.folder(root)
        needed = [folder / "images", *(folder / "labels" / name for name in self.lists)]
        return [path for path in needed if not path.exists()]

    def fetch(self, root: Path) -> None:
        where = root / "dtd"
        fix = fetch_fix(Path(DTD._URL).name, where)
        fetch_archive(DTD._URL, where, fix, self.name, md5=DTD._MD5, remove_finished=True)

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        folder = self.folder(root)
        listed_in: dict[str, Path] = {}  # each image's line -> the list file naming it
        for list_name in self.lists:
            list_file = folder / "labels" / list_name
            for line in read_lines(self.name, list_file):
                if line.count("/") != 1:
                    raise not_layout(self.name, list_file, "lines <class>/<image>.jpg")
                listed_in.setdefault(line, list_file)
        names = sorted(listed_in)
        classes = sorted({line.split("/")[0] for line in names})
        labels = np.array([classes.index(line.split("/")[0]) for line in names], dtype=np.int64)
        paths = [
            listed_files(self.name, folder / "images", [line], listed_in[line])[0] for line in names
        ]
        return Candidates.of_files(paths, labels)


class Places365Val(FileSet):
    """Places365-Standard's 36,500 validation photos (100 per scene), the 256 px version."""

    name = "places365"
    list_file, list_md5 = Places365._FILE_LIST_META["val"]
    devkit, devkit_md5 = Places365._DEVKIT_META["standard"]
    images_tar, images_md5 = Places365._IMAGES_META[("val", True)]
    images_dir = "val_256"

    def folder(self, root: Path) -> Path:
        return root / "places365"

    def missing(self, root: Path) -> list[Path]:
        folder = self.folder(root)
        needed = [folder / self.list_file, folder / self.images_dir]
        return [path for path in needed if not path.exists()]

    def fetch(self, root: Path) -> None:
        folder = self.folder(root)
        parts = [(self.devkit, self.devkit_md5, folder / self.list_file)]
        parts.append((self.images_tar, self.images_md5, folder / self.images_dir))
        for archive, md5, unpacked in parts:
            if not unpacked.exists():
                url = urljoin(Places365._BASE_URL, archive)
                fix = fetch_fix(archive, folder)
                fetch_archive(url, folder, fix, self.name, md5=md5, remove_finished=True)

    def read(self, root: Path, check_integrity: bool) -> Candidates:
        folder = self.folder(root)
        list_file = folder / self.list_file
        check_md5(self.name, list_file, self.list_md5, check_integrity)
        names, labels = [], []
        for line in read_lines(self.name, list_file):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise not_layout(self.name, list_file, "lines '<image>.jpg <label>'")
            names.append(parts[0])
            labels.append(int(parts[1]))
        paths = listed_files(self.name, folder / self.images_dir, names, list_file)
        return Candidates.of_files(paths, np.array(labels, dtype=np.int64))


FILE_SETS: dict[str, FileSet] = {
    "cifar10": CifarTest("cifar10"),
    "cifar100": CifarTest("cifar100"),
    "svhn": SVHNTest(),
    "mnist": IdxTest("mnist", MNIST),
    "fashion_mnist": IdxTest("fashion_mnist", FashionMNIST),
    "textures": TexturesSet(),
    "places365": Places365Val(),
}
