"""What every entry point shares: user errors as one line, the run dir, metrics.json."""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException

from cifar_lab.errors import CifarLabError

log = logging.getLogger("cifar_lab")

# Lightning's own "bad setting" error (e.g. trainer=gpu on a machine without one) is one too.
USER_ERRORS = (CifarLabError, MisconfigurationException)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `CifarLabError` as one line and exit 1; in a multirun let Hydra record it as
    a failed job instead, so the other jobs still run."""
    try:
        yield
    except (CifarLabError, MisconfigurationException, InstantiationException) as err:
        # hydra.utils.instantiate wraps what a constructor raised; unwrap a user error
        user_error = err.__cause__ if isinstance(err, InstantiationException) else err
        if in_multirun() or not isinstance(user_error, USER_ERRORS):
            raise
        hint = ""
        if isinstance(user_error, MisconfigurationException):
            hint = "; check the trainer settings (trainer=cpu runs without a GPU)"
        print(f"error: {user_error}{hint}", file=sys.stderr)
        raise SystemExit(1) from None


def to_number(value: Any) -> Any:
    """Tensor metric values as plain floats for JSON."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: to_number(v) for k, v in payload.items()}, indent=2) + "\n")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with a header row; None cells are written empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path
