"""What every entry point shares: user errors as one line, whether this is a multirun job, and
a run's output (quiet third-party noise, the whole log in the run's `<entry point>.log`).

Silenced at their source, because a user cannot act on them (README, "Quiet output"):
Lightning's litlogger/litmodels tips (a log filter), torch's `LeafSpec` deprecation that
Lightning's own pytree helper triggers (a warnings filter), wandb's "anonymous setting has no
effect" (`training.loggers` no longer passes the setting) and timm's "cosine annealing has no
effect" (`models.schedule` never builds a one-step cosine).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue

from cifar_lab.errors import CifarLabError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Lightning's own "bad setting" error (e.g. trainer=gpu on a machine without one) is one too.
USER_ERRORS = (CifarLabError, MisconfigurationException)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `CifarLabError` (or Lightning's settings error, with its own hint) as one line
    and exit 1; in a multirun let Hydra record it as a failed job instead, so the other jobs
    still run."""
    try:
        yield
    except MissingMandatoryValue as err:
        if in_multirun():
            raise
        key = err.full_key or "a key"
        print(f"error: {key} has no value: add {key}=... to the command line", file=sys.stderr)
        raise SystemExit(1) from None
    except (CifarLabError, MisconfigurationException, InstantiationException) as err:
        # hydra.utils.instantiate wraps what a constructor raised; unwrap a user error
        user_error = err.__cause__ if isinstance(err, InstantiationException) else err
        if in_multirun() or not isinstance(user_error, USER_ERRORS):
            raise
        first_line = (str(user_error).strip().splitlines() or [type(user_error).__name__])[0]
        print(f"error: {first_line}", file=sys.stderr)
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


def config_groups(config_name: str) -> set[str]:
    """The groups the defaults list of `conf/<config_name>.yaml` chooses (`data`, `experiment`)."""
    defaults = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()).get("defaults", [])
    return {
        key
        for entry in defaults
        if isinstance(entry, dict)
        for key in entry
        if "@" not in key and not key.startswith("override ")
    }


def reject_added_groups(config_name: str, argv: Sequence[str] | None = None) -> None:
    """`+data=cifar10` for a group the config already has: Hydra answers with YAML advice
    ("Multiple values for data"); say in one line that the option goes without the `+`."""
    groups = config_groups(config_name)
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if sep and key.startswith("+") and not key.startswith("++") and key[1:] in groups:
            print(
                f"error: {arg}: {key[1:]} is a config group of {config_name}, chosen without "
                f"a +: use {key[1:]}={value}",
                file=sys.stderr,
            )
            raise SystemExit(1)


class DropTips(logging.Filter):
    """Drops Lightning's advertising tips (litlogger, litmodels) and its note that it found
    our model summary (`training.progress.NetSummary`)."""

    DROPPED = ("💡 Tip", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROPPED)


def setup_run_output() -> None:
    """Silence the third-party noise listed above, send Python warnings to the log, and write
    Lightning's log lines into the run's log file beside cifar-lab's (Lightning's loggers do
    not propagate to the root logger that Hydra gives the file)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)
    logging.captureWarnings(True)
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [*logger.handlers, *files]:
            if not any(isinstance(f, DropTips) for f in handler.filters):
                handler.addFilter(DropTips())
        for handler in logger.handlers[:]:  # an earlier job's file, in a multirun
            if isinstance(handler, logging.FileHandler) and handler not in files:
                logger.removeHandler(handler)
        for handler in files:
            if handler not in logger.handlers:
                logger.addHandler(handler)
