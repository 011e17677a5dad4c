"""Corrupted-image sets on disk: the course leaderboard files and CIFAR-10/100-C.

Both hold one uint8 array (5 * n, 32, 32, 3) per corruption in severity-major blocks, the layout
`cifar_lab.data.cifar_c.CIFAR_C` describes. CIFAR-C adds `labels.npy` (the test labels repeated
per severity); the leaderboard set has no labels, it is scored by submission.

Files are memory-mapped (`np.load(mmap_mode="r")`), so only the pages being scored are read.
The datamodule serves each file as an `ImageSet` whose batches never cross a severity block.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.data.datasets import fetch_archive, fetch_file
from cifar_lab.data.subsets import balanced_subset
from cifar_lab.errors import CifarLabError


@dataclass(frozen=True)
class ImageSet:
    """Images `predict` scores: an in-memory array or a `.npy` file memory-mapped on each read,
    cut into `blocks` (e.g. severities) that no batch crosses, with optional labels per image."""

    name: str
    source: np.ndarray | Path
    blocks: tuple[slice, ...]
    labels: np.ndarray | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images [start, stop) as a uint8 (n, 32, 32, 3) array in memory. A file is mapped for
        this read only, so its pages are not held between batches."""
        if isinstance(self.source, Path):
            return np.array(np.load(self.source, mmap_mode="r")[start:stop])
        return self.source[start:stop]

    @property
    def num_images(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    @classmethod
    def in_memory(cls, name: str, images: np.ndarray, labels: np.ndarray | None) -> ImageSet:
        return cls(name, images, (slice(0, len(images)),), labels)


@dataclass(frozen=True)
class OODFile:
    """One corruption: its name (file stem), where it is and how many images per severity."""

    name: str
    path: Path
    per_severity: int

    def open(self) -> np.ndarray:
        """The images, memory-mapped: slicing reads only the pages it touches."""
        return np.load(self.path, mmap_mode="r")

    def severity_slices(self) -> list[slice]:
        return list(CIFAR_C.blocks(self.per_severity))

    def image_set(self, labels: np.ndarray | None = None) -> ImageSet:
        return ImageSet(self.name, self.path, tuple(self.severity_slices()), labels)


def first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def load_untrusted_npy(
    path: Path, what: str, kind: str, fix: str, mmap_mode: str | None = None
) -> np.ndarray:
    """An array from a `.npy` file someone else made, or a one-line error: pickled objects are
    refused (numpy's allow_pickle=False), never unpickled."""
    name = f"{what} {path}".strip()
    try:
        array = np.load(path, mmap_mode=mmap_mode)
    # Everything is caught on purpose: the file is untrusted, and numpy parses a damaged
    # header with Python's tokenizer (TokenError, SyntaxError, ...), not only ValueError.
    except Exception as err:
        raise CifarLabError(
            f"{name} is not a readable .npy array{kind} ({first_line(err)}); {fix}"
        ) from err
    if not isinstance(array, np.ndarray):  # an .npz archive under the .npy name
        raise CifarLabError(f"{name} is an .npz archive, not a .npy array; {fix}")
    return array


def check_images(path: Path) -> OODFile:
    """Validate the header of an image file (shape, dtype, length) without reading the pixels."""
    images = load_untrusted_npy(path, "OOD file", "", "delete it and download it again", "r")
    severities = len(CIFAR_C.severities)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != CIFAR_C.image_shape:
        raise CifarLabError(
            f"OOD file {path.name} has shape {images.shape} {images.dtype} but "
            f"{CIFAR_C.array_shape(f'{severities}*n')} uint8 was expected: re-download it or "
            f"point ood.root at the folder that holds it"
        )
    if len(images) == 0 or len(images) % severities:
        raise CifarLabError(
            f"OOD file {path.name} holds {len(images)} images, not a positive multiple of "
            f"{severities} (one block per severity): the file is truncated, re-download it"
        )
    return OODFile(path.stem, path, len(images) // severities)


def check_labels(path: Path, num_classes: int, expected_len: int) -> np.ndarray:
    """labels.npy as int64 (it is 400 kB, so it is read whole), checked against the images."""
    if not path.is_file():
        raise CifarLabError(
            f"{path.name} not found in {path.parent}: CIFAR-C sets need it beside the corruption "
            f"files; re-extract the archive or set ood.download=true"
        )
    labels = load_untrusted_npy(path, "", " of labels", "re-download the set")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CifarLabError(
            f"{path} has shape {labels.shape} {labels.dtype} but a 1-D integer array was "
            f"expected; re-download the set"
        )
    if len(labels) != expected_len:
        raise CifarLabError(
            f"{path} has {len(labels)} labels but the corruption files hold {expected_len} "
            f"images each; labels and images come from different sets, re-download them together"
        )
    per_severity = expected_len // len(CIFAR_C.severities)
    first = labels[CIFAR_C.blocks(per_severity)[0]]
    differs = [
        severity
        for severity, block in zip(CIFAR_C.severities, CIFAR_C.blocks(per_severity), strict=True)
        if not np.array_equal(labels[block], first)
    ]
    if differs:
        raise CifarLabError(
            f"{path} lists other labels for severities {differs} than for severity 1; CIFAR-C "
            f"repeats the same {per_severity} test labels in every severity block: the file is "
            f"damaged or from another set, re-download the set"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise CifarLabError(
            f"labels in {path} range over [{labels.min()}, {labels.max()}] but this set expects "
            f"{num_classes} classes (0..{num_classes - 1}); use ood=cifar10c for CIFAR-10-C "
            f"and ood=cifar100c for CIFAR-100-C"
        )
    return labels.astype(np.int64)


def fetch(url: str, root: Path, filename: str) -> Path:
    """Download `url` to `root/filename`, via a `.part` file so an interrupted download never
    looks like a complete one."""
    fix = f"check the URL (ood.url) and the network, or fetch {filename} by hand into {root}"
    return fetch_file(url, root, filename, fix)


class LeaderboardSet:
    """The course's OOD leaderboard: `distortion00.npy` ... `distortion18.npy`, no labels.

    `url` is the folder URL the files are fetched from, one by one, when `download` is true.
    """

    def __init__(
        self,
        root: str,
        names: Sequence[str],
        url: str | None = None,
        download: bool = False,
        name: str = "leaderboard",
    ):
        self.root, self.names = Path(root).expanduser(), list(names)
        self.url, self.download, self.name = url, download, name

    def files(self) -> list[OODFile]:
        """Every listed file, downloaded first if allowed; a submission needs all of them."""
        missing = [n for n in self.names if not (self.root / CIFAR_C.file_name(n)).is_file()]
        if missing and self.download:
            if not self.url:
                raise CifarLabError(
                    f"ood.download=true but ood.url is not set; set ood.url to the folder URL "
                    f"of the course's ood-test files, or copy {CIFAR_C.file_name(missing[0])} ... "
                    f"into {self.root}"
                )
            for stem in missing:
                file_name = CIFAR_C.file_name(stem)
                fetch(f"{self.url.rstrip('/')}/{file_name}", self.root, file_name)
        elif missing:
            raise CifarLabError(
                f"leaderboard file {CIFAR_C.file_name(missing[0])} not found in {self.root} "
                f"({len(missing)} of {len(self.names)} missing); set ood.download=true to fetch "
                f"them from {self.url or 'ood.url'}, or point ood.root at the folder that holds "
                f"them"
            )
        return [check_images(self.root / CIFAR_C.file_name(n)) for n in self.names]

    def image_sets(self) -> list[ImageSet]:
        """One unlabelled set per distortion file, in file order."""
        return [file.image_set() for file in self.files()]


class CorruptionSet:
    """CIFAR-10-C / CIFAR-100-C: `{corruption}.npy` (50000, 32, 32, 3) + `labels.npy`.

    `benchmark` are the corruptions a benchmark mean is over, `extra` the others read; null
    (None) means the layout's lists, the 15 papers average over and the paper's 4 others.
    Reads whichever of them are present; with `download` and any of them missing,
    fetches the archive (Zenodo) and unpacks it so the files sit directly in `root`.

    A subset, as RobustBench's `n_examples`: `names` scores only these corruptions, and
    `per_severity` only that many images of each severity block, class-balanced and chosen with
    `seed` (the same images in every block and every corruption).
    """

    def __init__(
        self,
        root: str,
        benchmark: Sequence[str] | None = None,
        extra: Sequence[str] | None = None,
        *,
        num_classes: int,
        url: str | None = None,
        md5: str | None = None,
        archive_folder: str | None = None,
        download: bool = False,
        reference_csv: str | None = None,
        name: str = "cifar100c",
        names: Sequence[str] | None = None,
        per_severity: int | None = None,
        seed: int = 0,
    ):
        self.root, self.name, self.num_classes = Path(root).expanduser(), name, num_classes
        self.benchmark = list(CIFAR_C.benchmark if benchmark is None else benchmark)
        extra = CIFAR_C.extra if extra is None else extra
        self.corruptions = self.benchmark + [c for c in extra if c not in self.benchmark]
        if names is not None:
            # `benchmark` stays whole: a mean over a part of it is named as partial
            self.corruptions = chosen_names(names, self.corruptions)
        if per_severity is not None and (
            not isinstance(per_severity, int) or isinstance(per_severity, bool) or per_severity < 1
        ):
            raise CifarLabError(
                f"ood.per_severity={per_severity!r} is not a number of images; expected an "
                f"integer >= 1 (e.g. ood.per_severity=1000) or null for every image"
            )
        self.per_severity, self.seed = per_severity, seed
        self.url, self.md5, self.archive_folder = url, md5, archive_folder
        self.download = download
        self.reference_csv = Path(reference_csv).expanduser() if reference_csv else None

    def _present(self) -> list[str]:
        return [c for c in self.corruptions if (self.root / CIFAR_C.file_name(c)).is_file()]

    def _fetch_archive(self) -> None:
        if not self.url:
            raise CifarLabError(
                f"ood.download=true but ood.url is not set; set it to the {self.name} archive "
                f"URL or unpack the archive into {self.root} by hand"
            )
        fetch_archive(
            self.url,
            self.root,
            f"check the network, or download and unpack it by hand so {self.root} holds "
            f"{CIFAR_C.labels_file} and the corruption .npy files",
            md5=self.md5,
            remove_finished=True,
        )
        # The archive unpacks into `archive_folder/`; move its files up so they sit in root.
        nested = self.root / (self.archive_folder or "")
        if self.archive_folder and nested.is_dir():
            for file in nested.iterdir():
                file.replace(self.root / file.name)
            nested.rmdir()

    def files(self) -> list[OODFile]:
        present = self._present()
        if self.download and (
            len(present) < len(self.corruptions) or not self.labels_path.is_file()
        ):
            self._fetch_archive()
            present = self._present()
        if not present:
            raise CifarLabError(
                f"no {self.name} corruption files in {self.root} (expected e.g. "
                f"{CIFAR_C.file_name(self.corruptions[0])} and {CIFAR_C.labels_file}); set "
                f"ood.download=true to fetch {self.url}, or point ood.root at the folder that "
                f"holds them"
            )
        files = [check_images(self.root / CIFAR_C.file_name(c)) for c in present]
        sizes = {f.name: CIFAR_C.images_per_file(f.per_severity) for f in files}
        if len(set(sizes.values())) > 1:
            raise CifarLabError(
                f"{self.name} files in {self.root} hold different numbers of images {sizes}; "
                f"they must all be the same test set, re-download the set"
            )
        return files

    @property
    def labels_path(self) -> Path:
        return self.root / CIFAR_C.labels_file

    def labels(self, files: Sequence[OODFile]) -> np.ndarray:
        expected = CIFAR_C.images_per_file(files[0].per_severity)
        return check_labels(self.labels_path, self.num_classes, expected)

    def image_sets(self) -> list[ImageSet]:
        """One labelled set per corruption file present; files and labels are checked first.
        With `per_severity`, each set holds only the chosen images, read once into memory."""
        files = self.files()
        labels = self.labels(files)
        if self.per_severity is None:
            return [file.image_set(labels) for file in files]
        per_file = files[0].per_severity
        key = "ood.per_severity"
        chosen = balanced_subset(labels[:per_file], self.per_severity, self.seed, key)
        rows = np.concatenate([chosen + block.start for block in CIFAR_C.blocks(per_file)])
        return [
            ImageSet(
                file.name,
                np.ascontiguousarray(file.open()[rows]),
                CIFAR_C.blocks(len(chosen)),
                labels[rows],
            )
            for file in files
        ]


def chosen_names(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """`ood.names`, checked against the set's corruptions (a did-you-mean for a typo)."""
    if isinstance(names, str) or not names:
        raise CifarLabError(
            f"ood.names={names!r} is not a list of corruptions; write e.g. ood.names=[fog,snow]"
        )
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise CifarLabError(
                f"ood.names has {name!r}, not a corruption of this set{guess}; expected some of "
                f"{', '.join(known)}"
            )
    return [c for c in known if c in names]


OODSet = LeaderboardSet | CorruptionSet
