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


def checkpoint_wandb_id(checkpoint: dict[str, Any]) -> str | None:
    """The wandb run id stored in a checkpoint, so a resumed training continues that run."""
    return checkpoint[CHECKPOINT_KEY].get("wandb_id")


def ensure_weights_fit(
    model: torch.nn.Module, checkpoint: dict[str, Any], path: str | Path
) -> None:
    """Raise a one-line error when the checkpoint's weights are not those of `model`'s layout
    (another backbone, width or number of classes), before Lightning's long key-mismatch dump."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or reshaped):
        return
    trained = checkpoint[CHECKPOINT_KEY].get("config", {}).get("model", {})
    detail = "; ".join(
        f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("other shape", reshaped),
        )
        if keys
    )
    raise CifarLabError(
        f"checkpoint {path} holds another model than this config builds ({detail}); it was "
        f"trained with model={trained.get('name', trained.get('_target_'))} "
        f"num_classes={checkpoint[CHECKPOINT_KEY].get('num_classes')}: use the same model and "
        f"data overrides as that run"
    )
