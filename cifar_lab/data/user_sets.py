"""A user's own OOD set: a folder of PNG/JPEG images or one `.npy` array of images.

Both come from other people, so they are read as the other shared files are: images decoded by
Pillow's PNG/JPEG decoders only, nothing followed out of the folder (`image_files`), the array
loaded with numpy's `allow_pickle=False` and its header checked before any pixel is read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cifar_lab.data.image_files import MAX_PIXELS, Candidates, image_files
from cifar_lab.data.ood import load_untrusted_npy
from cifar_lab.errors import CifarLabError

NPY_FIX = "save uint8 images (n, H, W, 3) or grey (n, H, W) with numpy.save"


def set_name(path: Path) -> str:
    """A set's name from its folder or file name, as a metric key can hold it ('my photos' ->
    'my_photos')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_.") or "user"


def folder_set(folder: Path) -> Candidates:
    """Every PNG/JPEG image under `folder` (`detect.folder`), in sorted path order."""
    paths = image_files(folder, "detect.folder")
    if not paths:
        raise CifarLabError(
            f"detect.folder={folder} holds no PNG or JPEG image (*.png, *.jpg, *.jpeg, in it or "
            f"its subfolders); put the images there or point detect.folder at another folder"
        )
    return Candidates.of_files(paths)


def npy_set(path: Path) -> Candidates:
    """The images of `detect.npy`: uint8 (n, H, W, 3), (n, H, W, 1) or (n, H, W), memory-mapped
    so only the chosen images are read."""
    if not path.is_file():
        raise CifarLabError(f"detect.npy={path} is not a file; expected a .npy file of images")
    images = load_untrusted_npy(path, "detect.npy", " of images", NPY_FIX, mmap_mode="r")
    shape = images.shape
    grey_or_rgb = images.ndim == 3 or (images.ndim == 4 and shape[3] in (1, 3))
    if images.dtype != np.uint8 or not grey_or_rgb or min(shape[1:3], default=0) < 1:
        raise CifarLabError(
            f"detect.npy={path} holds {images.dtype} {shape}; expected uint8 images (n, H, W, 3) "
            f"or grey (n, H, W): {NPY_FIX}"
        )
    if shape[1] * shape[2] > MAX_PIXELS:
        raise CifarLabError(
            f"detect.npy={path} holds {shape[2]}x{shape[1]} px images, over {MAX_PIXELS:,} "
            f"pixels each; refusing to read them: shrink them first"
        )
    return Candidates.of_arrays(images)
