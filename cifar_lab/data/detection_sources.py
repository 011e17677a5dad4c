"""The `detect` config's OOD sets, read and brought to CIFAR's shape for `predict` to score.

Sets (`detect.sets`) and the group whose mean each counts in (OpenOOD's CIFAR benchmark):
- near: `other_cifar` (CIFAR-10 for a CIFAR-100 model and the reverse; or name it, `cifar10` /
  `cifar100`), `heldout_classes` (the test images of the classes an open-set run,
  `data.classes`, left out of training);
- far: `svhn`, `textures`, `places365`, `mnist`, `fashion_mnist` (`torchvision_sets`);
- sanity: `noise_gaussian`, `noise_uniform` (seeded noise images, no file: any detector worth
  the name tells them apart from photos);
- a user's own: `detect.folder` (PNG/JPEG images) and `detect.npy` (an array of images), in
  `detect.user_group`, named after the folder or file.

Each set keeps at most `detect.max_images` images, class-balanced where it has labels and chosen
with `detect.seed`, so Places365's 36,500 photos are not all decoded. A set of fewer than 2
images is refused: a detection metric (AUROC, FPR at 95% TPR) over one OOD image says nothing.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cifar_lab.data.cifar_c import IMAGE_SHAPE
from cifar_lab.data.detection_sets import GROUPS, DetectionSet
from cifar_lab.data.image_files import Candidates, CifarShape
from cifar_lab.data.ood import ImageSet
from cifar_lab.data.subsets import balanced_subset
from cifar_lab.data.torchvision_sets import FILE_SETS
from cifar_lab.data.user_sets import folder_set, npy_set, set_name
from cifar_lab.errors import CifarLabError

log = logging.getLogger(__name__)

OTHER_CIFAR = "other_cifar"
HELDOUT = "heldout_classes"
NOISE = ("noise_gaussian", "noise_uniform")
GROUP_OF = {
    OTHER_CIFAR: "near",
    "cifar10": "near",
    "cifar100": "near",
    HELDOUT: "near",
    "svhn": "far",
    "textures": "far",
    "places365": "far",
    "mnist": "far",
    "fashion_mnist": "far",
    **dict.fromkeys(NOISE, "sanity"),
}
MIN_IMAGES = 2  # fewer make no detection metric: AUROC needs OOD images to rank against


def noise_images(kind: str, n: int, seed: int) -> np.ndarray:
    """uint8 noise images: Gaussian around mid-grey (sd 64, clipped) or uniform over 0..255,
    a stream of their own per kind and seed."""
    rng = np.random.default_rng([seed, NOISE.index(kind)])
    shape = (n, *IMAGE_SHAPE)
    if kind == "noise_gaussian":
        return np.clip(np.rint(rng.normal(127.5, 64.0, shape)), 0, 255).astype(np.uint8)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def count_setting(key: str, value: object, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_IMAGES:
        null = " or null for every image" if allow_null else ""
        raise CifarLabError(
            f"detect.{key}={value!r} is not a number of images; expected an integer >= "
            f"{MIN_IMAGES}{null}, e.g. detect.{key}=2000"
        )


def chosen_rows(candidates: Candidates, max_images: int | None, seed: int) -> np.ndarray:
    """At most `max_images` of the set's images: class-balanced where it has labels, else a
    seeded random choice; all of them when it holds no more."""
    n = candidates.count
    if max_images is None or max_images >= n:
        return np.arange(n)
    if candidates.labels is not None:
        return balanced_subset(candidates.labels, max_images, seed, "detect.max_images")
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_images])


class DetectionSources:
    """What `detect` asks for, checked when built (names, numbers); `load` reads it."""

    def __init__(
        self,
        sets: Sequence[str] = (),
        root: str = "data",
        download: bool = False,
        check_integrity: bool = True,
        max_images: int | None = 2000,
        seed: int = 0,
        noise_images: int = 1000,
        folder: str | None = None,
        npy: str | None = None,
        user_group: str = "far",
    ):
        if isinstance(sets, str) or not all(isinstance(name, str) for name in sets):
            raise CifarLabError(
                f"detect.sets={sets!r} is not a list of set names; write e.g. "
                f"detect.sets=[svhn,textures]"
            )
        for name in sets:
            if name not in GROUP_OF:
                close = difflib.get_close_matches(name, list(GROUP_OF), n=1)
                guess = f" (did you mean {close[0]}?)" if close else ""
                raise CifarLabError(
                    f"detect.sets has {name!r}, not a known OOD set{guess}; expected some of "
                    f"{', '.join(GROUP_OF)} (a folder or .npy of your own: detect.folder, "
                    f"detect.npy)"
                )
        for key, value in (("download", download), ("check_integrity", check_integrity)):
            if not isinstance(value, bool):
                raise CifarLabError(f"detect.{key}={value!r} is not true or false")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise CifarLabError(f"detect.seed={seed!r} is not a seed; expected an integer >= 0")
        count_setting("max_images", max_images, allow_null=True)
        count_setting("noise_images", noise_images)
        if user_group not in GROUPS:
            raise CifarLabError(
                f"detect.user_group={user_group!r} is not a group; expected one of {GROUPS}"
            )
        self.sets = list(dict.fromkeys(sets))
        self.root = Path(root).expanduser()
        self.download, self.check_integrity = download, check_integrity
        self.max_images, self.seed, self.noise_images = max_images, seed, noise_images
        self.folder = Path(folder).expanduser() if folder else None
        self.npy = Path(npy).expanduser() if npy else None
        self.user_group = user_group

    @property
    def empty(self) -> bool:
        return not self.sets and self.folder is None and self.npy is None

    def resolved(self, name: str, dataset: str, open_set: bool) -> str:
        """A name of `sets` for a model of `dataset`: `other_cifar` named, each checked to make
        sense for it."""
        if name == OTHER_CIFAR:
            name = "cifar10" if dataset == "cifar100" else "cifar100"
        if name == dataset:
            raise CifarLabError(
                f"detect.sets has {name}, the dataset this model was trained on, which is not "
                f"out of its distribution; use {OTHER_CIFAR} for the other CIFAR"
            )
        if name == HELDOUT and not open_set:
            raise CifarLabError(
                f"detect.sets has {HELDOUT} but this model was trained on every class of "
                f"{dataset} (data.classes=null); train with the open-set protocol, e.g. "
                f"data=cifar10 data.classes=[0,1,2,3,4,5], or drop {HELDOUT}"
            )
        return name

    def check_present(self, named: dict[str, str]) -> None:
        """Without `download`, every file set is there, or one line naming all that are not;
        `named` maps each name of `sets` to the set it reads."""
        if self.download:
            return
        missing = {
            name: FILE_SETS[name].missing(self.root)[0]
            for name in dict.fromkeys(named.values())
            if name in FILE_SETS and FILE_SETS[name].missing(self.root)
        }
        if not missing:
            return
        listed = ", ".join(f"{name} ({path})" for name, path in missing.items())
        kept = [given for given, name in named.items() if name not in missing]
        raise CifarLabError(
            f"OOD sets not found under detect.root={self.root}: {listed}; set "
            f"detect.download=true to fetch them, point detect.root at the folder that holds "
            f"them, or leave them out: detect.sets=[{','.join(kept)}]"
        )

    def candidates(self, dataset: str, heldout: Candidates | None) -> dict[str, tuple]:
        """{set name: (group, its candidate images)}, every file checked before any decoding."""
        named = {given: self.resolved(given, dataset, heldout is not None) for given in self.sets}
        self.check_present(named)
        found: dict[str, tuple] = {}
        for name in dict.fromkeys(named.values()):
            if name == HELDOUT:
                found[name] = ("near", heldout)
            elif name in NOISE:
                images = noise_images(name, self.noise_images, self.seed)
                found[name] = ("sanity", Candidates.of_arrays(images))
            else:
                source = FILE_SETS[name]
                candidates = source.open(self.root, self.download, self.check_integrity)
                found[name] = (GROUP_OF[name], candidates)
        for path, read in ((self.folder, folder_set), (self.npy, npy_set)):
            if path is None:
                continue
            name = set_name(path)
            if name in found or name in GROUP_OF or name == "clean":
                raise CifarLabError(
                    f"{path} would be scored as {name!r}, the name of another set; rename it"
                )
            found[name] = (self.user_group, read(path))
        return found

    def load(self, dataset: str, heldout: Candidates | None = None) -> list[DetectionSet]:
        """The sets for a model of `dataset` (`cifar10`/`cifar100`); `heldout` are the test
        images of the classes an open-set model was not trained on (None: all were)."""
        sets, notes = [], []
        for name, (group, candidates) in self.candidates(dataset, heldout).items():
            if candidates.count < MIN_IMAGES:
                raise CifarLabError(
                    f"OOD set {name} holds {candidates.count} image(s); a detection metric needs "
                    f"at least {MIN_IMAGES}: add images or leave the set out"
                )
            shape = CifarShape()
            images = candidates.take(chosen_rows(candidates, self.max_images, self.seed), shape)
            sets.append(DetectionSet(ImageSet.in_memory(name, images, None), group))
            if shape.note():
                notes.append(f"{name} ({shape.note()})")
        if sets:
            log.info(
                "OOD detection sets: %s",
                ", ".join(f"{s.name} ({s.group}, {s.images.num_images})" for s in sets),
            )
        if notes:
            log.info(
                "made CIFAR-shaped (grey to 3 channels; shorter side to 32 px, centre crop): %s",
                "; ".join(notes),
            )
        return sets
