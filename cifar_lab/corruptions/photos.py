"""The frost photographs the frost corruption overlays (Hendrycks & Dietterich, 2019).

They ship in the PyPI package `imagecorruptions==1.1.2` (Apache-2.0). Its `__init__` does not
import on current Pythons (it needs `pkg_resources`), and only its data is needed, so the folder
is found from the package's import spec without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from cifar_lab.errors import CifarLabError

PACKAGE = "imagecorruptions"
INSTALL = "pip install imagecorruptions==1.1.2"
# The CIFAR generator draws `randint(5)`, so frost6.jpg, which the package also ships, is unused.
FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
SCALE = 0.2  # the CIFAR generator shrinks each photograph to a fifth before cropping 32 x 32


def frost_dir() -> Path:
    """The `frost/` folder inside the installed `imagecorruptions` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CifarLabError(
            f"the frost corruption needs the frost photographs of the package {PACKAGE!r}, "
            f"which is not installed; run `{INSTALL}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


@functools.cache
def frost_photos() -> tuple[np.ndarray, ...]:
    """The photographs as RGB uint8, shrunk by `SCALE` (`cv2.resize`, bilinear), read once per
    process."""
    folder = frost_dir()
    photos = []
    for name in FILES:
        photo = cv2.imread(str(folder / name))
        if photo is None:
            raise CifarLabError(
                f"frost photograph {folder / name} is missing or unreadable; reinstall the "
                f"package with `{INSTALL} --force-reinstall`"
            )
        photo = cv2.resize(photo, (0, 0), fx=SCALE, fy=SCALE)
        photos.append(np.ascontiguousarray(photo[..., ::-1]))
    return tuple(photos)
