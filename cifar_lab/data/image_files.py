"""Images of any size from files other people made, as CIFAR's uint8 (32, 32, 3).

OOD sets (Textures, Places365, a user's folder, MNIST's 28 px grey digits) come in other sizes
and channel counts than the model was trained on. They are brought to CIFAR's shape the way
OpenOOD's CIFAR benchmark does: grey (or palette, or RGBA) to 3 channels, the shorter side
resized to 32 px and the centre cropped square.

Reading is as careful as the other readers of shared files: only the PNG and JPEG decoders of
Pillow run (`Image.open(formats=...)`), an image's pixel count is checked from its header before
it is decoded (a crafted 1e5 x 1e5 PNG would ask for 30 GB), and a file must lie inside the
folder it was listed in: a symlink or a `..` in a list file that leads out of it is refused,
never followed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cifar_lab.data.cifar_c import IMAGE_SHAPE, NATIVE_SIZE
from cifar_lab.errors import CifarLabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")
# the largest image decoded: 64 Mpx is 192 MB as RGB, far above any photo an OOD set holds
MAX_PIXELS = 64_000_000
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def inside(folder: Path, path: Path, listed_in: str) -> Path:
    """`path` resolved (symlinks followed) if it still lies inside `folder`; else one line."""
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise CifarLabError(
            f"{listed_in} names {path}, which leads outside {folder} (to {resolved}); refusing "
            f"to read it: copy the image into the folder instead of linking it"
        )
    return resolved


def image_files(folder: Path, what: str) -> list[Path]:
    """The PNG/JPEG files under `folder` (subfolders too, sorted), each inside it: symlinked
    folders are not entered, and a symlinked file that points out of `folder` is refused."""
    if not folder.is_dir():
        raise CifarLabError(
            f"{what}={folder} is not a folder; expected a folder of PNG/JPEG images"
        )
    found = []
    for parent, _, names in os.walk(folder, followlinks=False):
        for name in names:
            path = Path(parent) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                path = inside(folder, path, f"{what}={folder}")
                if not path.is_file():  # a pipe or device would block or never end
                    raise CifarLabError(
                        f"{what}={folder} holds {path}, which is not a regular file; remove it"
                    )
                found.append(path)
    return sorted(found)


class CifarShape:
    """Turns images into uint8 (32, 32, 3) and remembers what it changed, so a set's
    conversion is said once in the log (`note`) rather than per image."""

    def __init__(self) -> None:
        self.grey = 0
        self.sizes: Counter[tuple[int, int]] = Counter()

    def from_pil(self, image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
        """`image` as uint8 (32, 32, 3); `size` is its size on file when it is decoded smaller
        (a JPEG draft), for the note."""
        if image.mode in GREY_MODES:
            self.grey += 1
        if (size or image.size) != (NATIVE_SIZE, NATIVE_SIZE):
            self.sizes[size or image.size] += 1
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (NATIVE_SIZE, NATIVE_SIZE):
            size = (NATIVE_SIZE, NATIVE_SIZE)
            image = ImageOps.fit(image, size, method=Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def from_arrays(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W), (n, H, W, 1) or (n, H, W, 3) as (n, 32, 32, 3)."""
        if images.ndim == 4 and images.shape[1:] == IMAGE_SHAPE:
            return np.ascontiguousarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        return np.stack([self.from_pil(Image.fromarray(image)) for image in images])

    def note(self) -> str | None:
        """What was changed, e.g. 'grey to 3 channels, 28x28 px to 32x32'; None if nothing."""
        parts = ["grey to 3 channels"] if self.grey else []
        if self.sizes:
            sides = sorted(self.sizes)
            shown = f"{sides[0][0]}x{sides[0][1]}"
            if len(sides) > 1:
                shown += f" .. {sides[-1][0]}x{sides[-1][1]}"
            parts.append(f"{shown} px to {NATIVE_SIZE}x{NATIVE_SIZE}")
        return ", ".join(parts) or None


def read_image(path: Path, shape: CifarShape) -> np.ndarray:
    """One PNG/JPEG file as uint8 (32, 32, 3); any failure to decode it is one line."""
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise CifarLabError(
                    f"image {path} is {width}x{height} px, over {MAX_PIXELS:,} pixels; refusing "
                    f"to decode it: shrink it or remove it from the set"
                )
            # JPEG decodes straight at 1/2..1/8 scale when that still covers 2x the target
            image.draft("RGB", (2 * NATIVE_SIZE, 2 * NATIVE_SIZE))
            return shape.from_pil(image, (width, height))
    except CifarLabError:
        raise
    # Everything is caught on purpose: the file is untrusted, and a damaged image fails in
    # many ways (UnidentifiedImageError, OSError, SyntaxError, ValueError, DecompressionBomb...).
    except Exception as err:
        why = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise CifarLabError(
            f"image {path} cannot be read as PNG or JPEG ({type(err).__name__}: {why}); remove "
            f"it or replace it with a readable copy"
        ) from err


def read_images(paths: Sequence[Path], shape: CifarShape) -> np.ndarray:
    """The files as one uint8 (n, 32, 32, 3) array."""
    images = np.empty((len(paths), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(paths):
        images[i] = read_image(path, shape)
    return images


@dataclass(frozen=True)
class Candidates:
    """The images a set offers, before any is decoded: how many, their labels (None if the set
    has none) and how to read a chosen few as uint8 (n, 32, 32, 3), so a set of 36,500 photos
    costs only the images a bounded subset takes."""

    count: int
    labels: np.ndarray | None
    take: Callable[[np.ndarray, CifarShape], np.ndarray]

    @classmethod
    def of_arrays(cls, images: np.ndarray, labels: np.ndarray | None = None) -> Candidates:
        return cls(len(images), labels, lambda rows, shape: shape.from_arrays(images[rows]))

    @classmethod
    def of_files(cls, paths: Sequence[Path], labels: np.ndarray | None = None) -> Candidates:
        return cls(
            len(paths), labels, lambda rows, shape: read_images([paths[i] for i in rows], shape)
        )
