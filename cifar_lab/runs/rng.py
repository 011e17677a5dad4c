"""The random-number generators' states, which Lightning does not save in a checkpoint.

Kept in every checkpoint under `RNG_KEY` so a resumed run draws the same augmentations and
dropout masks as an uninterrupted one. Stored as tensors and plain containers, which
`torch.load(weights_only=True)` reads without running pickled code.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from cifar_lab.errors import CifarLabError

RNG_KEY = "rng_states"


def collect_rng_states() -> dict[str, Any]:
    """torch, numpy, Python (and CUDA) generator states as tensors and plain containers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], source: str = "the checkpoint") -> None:
    """Restore `collect_rng_states()`'s result; a damaged entry is one line naming `source`."""
    try:
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
    # Everything is caught on purpose: the states come from a shared file, and torch, numpy and
    # random refuse a damaged one in many ways (OverflowError, IndexError, TypeError, ...).
    except Exception as err:
        why = (str(err).splitlines() or [""])[0][:200]
        raise CifarLabError(
            f"{source}'s '{RNG_KEY}' entry is damaged ({type(err).__name__}: {why}); "
            f"resume from a last.ckpt/best.ckpt written by cifar_lab.train"
        ) from err
