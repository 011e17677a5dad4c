"""What every entry point shares: user errors as one line, whether this is a multirun job."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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
