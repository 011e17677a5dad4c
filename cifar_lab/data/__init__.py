"""Datasets, transforms and the LightningDataModule.

The package's names load on first use (PEP 562), so a light module such as
`cifar_lab.data.cifar_c` can be imported (by `cifar_lab.corruptions`) without loading Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cifar_lab.data.datamodule import CIFARDataModule
    from cifar_lab.data.datasets import ImageArrays, load_cifar

__all__ = ["CIFARDataModule", "ImageArrays", "load_cifar"]
_HOMES = {
    "CIFARDataModule": "cifar_lab.data.datamodule",
    "ImageArrays": "cifar_lab.data.datasets",
    "load_cifar": "cifar_lab.data.datasets",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
