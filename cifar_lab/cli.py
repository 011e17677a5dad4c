"""What every entry point shares: user errors as one line, whether this is a multirun job."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


class KeepEarlierRunRecords(Callback):
    """Hydra writes the run's `.hydra/` config files before the entry point can refuse a folder
    that holds an earlier run (`hydra.run.dir=<existing folder>`); this callback fixes the run
    folder once (`${now:...}` would otherwise resolve twice) and, when that folder already has
    `.hydra/`, sends this run's records to `.hydra-<time>/` so the earlier ones stay intact."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        subdir = config.hydra.get("output_subdir")
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = str(run_dir)
            if subdir and (run_dir / subdir).exists():
                stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
                config.hydra.output_subdir = f"{subdir}-{stamp}"
