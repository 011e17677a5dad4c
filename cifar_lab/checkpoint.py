"""Reading checkpoints safely: `weights_only` unpickling and errors that say what the file is."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cifar_lab.errors import CifarLabError
from cifar_lab.models.classifier import CHECKPOINT_KEY


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A cifar-lab checkpoint as a dict, on the CPU, without running pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CifarLabError(
            f"checkpoint {path} does not exist; give the path of a best.ckpt/last.ckpt under "
            f"outputs/<run>/checkpoints/"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError) as err:
        raise CifarLabError(
            f"{path} is not a readable PyTorch checkpoint ({str(err).splitlines()[0]}); "
            f"expected a .ckpt written by cifar_lab.train"
        ) from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CifarLabError(
            f"{path} is a PyTorch file but not a cifar-lab checkpoint (no '{CHECKPOINT_KEY}' "
            f"entry); expected a .ckpt written by cifar_lab.train"
        )
    return checkpoint


def checkpoint_wandb_id(path: str | Path) -> str | None:
    """The wandb run id stored in a checkpoint, so a resumed training continues that run."""
    return load_checkpoint(path)[CHECKPOINT_KEY].get("wandb_id")
