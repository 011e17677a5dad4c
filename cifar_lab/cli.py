"""What every entry point shares: user errors as one line, whether this is a multirun job, and
a run's output (quiet third-party noise, the whole log in the run's `<entry point>.log`).

Silenced at their source, because a user cannot act on them (README, "Quiet output"):
Lightning's litlogger/litmodels tips (a log filter), torch's `LeafSpec` deprecation that
Lightning's own pytree helper triggers (a warnings filter), wandb's "anonymous setting has no
effect" (`training.loggers` no longer passes the setting), timm's "cosine annealing has no
effect" (`models.schedule` never builds a one-step cosine) and pytorch-ood's progress lines
(its logger at WARNING).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf, ValueNode, open_dict, read_write
from omegaconf.errors import MissingMandatoryValue

from cifar_lab.errors import CifarLabError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Lightning's own "bad setting" error (e.g. trainer=gpu on a machine without one) is one too.
USER_ERRORS = (CifarLabError, MisconfigurationException)
# Lightning's settings errors that say what is wrong but not what to do
LIGHTNING_FIXES = {
    "No supported gpu backend found": " trainer=gpu needs a CUDA GPU: on this machine use "
    "trainer=cpu (or trainer=default, which picks the device)",
}
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
LOG_INTERVAL_NOTICE = r".*is smaller than the logging interval Trainer\(log_every_n_steps"
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class JobError(CompactHydraException):
    """A multirun job's user error: Hydra prints a compact exception as its message alone, under
    its own "Error executing job with overrides: [...]" line, instead of a traceback."""


def user_error_line(err: BaseException) -> str | None:
    """The one line a user error prints (`error: ...`, with a hint for Lightning's settings
    errors), or None for anything else, which keeps its traceback."""
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a key"
        return f"error: {key} has no value: add {key}=... to the command line"
    # hydra.utils.instantiate wraps what a constructor raised; unwrap a user error
    user_error = err.__cause__ if isinstance(err, InstantiationException) else err
    if isinstance(err, InstantiationException) and not isinstance(user_error, USER_ERRORS):
        return refused_settings_line(err)
    if not isinstance(user_error, USER_ERRORS):
        return None
    first_line = (str(user_error).strip().splitlines() or [type(user_error).__name__])[0]
    hint = next((fix for found, fix in LIGHTNING_FIXES.items() if found in first_line), "")
    return f"error: {first_line}{hint}"


def refused_settings_line(err: InstantiationException) -> str | None:
    """A constructor that refused the settings the config built it with (an unknown
    `model.act_layer`, Lightning's ValueError for `trainer.precision=bogus`): one line naming
    the command line's values it was given, those that its error message quotes first. Hydra's
    own answer is three lines without the key; HYDRA_FULL_ERROR=1 keeps the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    cause = err.__cause__ or err
    why = " ".join(str(cause).split())[:200] or "no message"
    found = re.search(r"target '([\w.]+)'", str(err))
    target = found.group(1) if found else "an object of the config"
    parts = {part.lower() for part in target.split(".")}
    given = dict(command_line_values())
    # the values of the groups the target belongs to (model.* for ...models.convnet...)
    near = {k: v for k, v in given.items() if any(p.startswith(k.split(".")[0]) for p in parts)}
    quoted = [
        f"{k}={v}"
        for k, v in (near or given).items()
        if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", why)
    ]
    suspects = quoted or [f"{k}={v}" for k, v in near.items()]
    what = f"{' or '.join(suspects[:3])} is" if suspects else "the config's settings are"
    return (
        f"error: {what} refused by {target} ({type(cause).__name__}: {why}); give a value it "
        f"takes (--help lists the options; HYDRA_FULL_ERROR=1 shows where it failed)"
    )


def command_line_values() -> list[tuple[str, str]]:
    """(key, value) of this job's command-line overrides, the last one of each key."""
    if not HydraConfig.initialized():
        return []
    values: dict[str, str] = {}
    for override in HydraConfig.get().overrides.task:
        key, sep, value = override.partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    return list(values.items())


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `CifarLabError` (or Lightning's settings error, with its own hint) as one line
    and exit 1; in a multirun hand it to Hydra as a failed job (still one line, under the job's
    overrides), so the other jobs still run."""
    try:
        yield
    except (MissingMandatoryValue, CifarLabError, MisconfigurationException,
            InstantiationException) as err:  # fmt: skip
        line = user_error_line(err)
        if line is None:
            raise
        if in_multirun():
            raise JobError(line) from None
        print(line, file=sys.stderr)
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
            group = key[1:]
            fail(f"{arg}: {group} is a config group of {config_name}, chosen without a +: use "
                 f"{group}={value}")  # fmt: skip


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_command_line(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Before Hydra runs: `+group=option`, an unknown group option, a key the composed config
    lacks (a typo), a value of the wrong type (`lr=abc`, `max_epochs=1.5`) and a run folder
    Hydra cannot write are each one line naming the value and the fix, with a did-you-mean; in
    a multirun (`-m`) too, before any job starts. Hydra's own answers are generic advice ("use
    +key") or a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    check_output_folder(argv)
    args = [a for a in argv if "=" in a and a[0] != "-"]
    reject_added_groups(config_name, args)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra's parser reports its own syntax errors well; leave them to it
        return
    parsed = [
        override
        for override in parsed  # Hydra's own settings and keys added or deleted: Hydra's part
        if not override.key_or_group.startswith("hydra")
        and not (override.is_add() or override.is_force_add() or override.is_delete())
    ]
    groups = {p.parent.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.glob("*/*.yaml")}
    chosen = []
    for override in parsed:
        key = override.key_or_group
        if key in groups:
            options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
            for value in override_values(override):
                # a list chooses several options of one group: callbacks=[default,ema]
                for option in value if isinstance(value, list) else [value]:
                    if str(option) not in options and option is not None:
                        guess = did_you_mean(str(option), options, f"{key}=")
                        fail(f"{key}={option} is not an option of {key}{guess}; options: {options}")
            chosen.append(f"{key}={group_choice(override_values(override)[0])}")
    if all(override.key_or_group in groups for override in parsed):
        return  # no key to check: no need to compose (it costs a Hydra composition)
    cfg = composed(config_name, chosen)
    if cfg is None:
        return
    for override in parsed:
        key = override.key_or_group
        if key in groups:
            continue
        node = config_node(cfg, key)
        parent = null_parent(cfg, key)
        if node is None and parent is not None:
            example = NULL_GROUP_EXAMPLES.get(parent, f"'{parent}={{key: value, ...}}'")
            fail(
                f"{key}: {parent} is null (off) in this config, so it has no keys to set; set it "
                f"whole, e.g. {example}"
            )
        if node is None:
            guess = did_you_mean(key, config_keys(cfg))
            fail(f"{key} is not a key of the {config_name} config{guess}; a new key takes a +")
        check_type(key, node, override_values(override))


def group_choice(value: Any) -> str:
    """A group's chosen option(s) as an override value again: `ema`, or `[default,ema]`."""
    return f"[{','.join(map(str, value))}]" if isinstance(value, list) else str(value)


# Hydra writes the run's `.hydra/` config files and opens its log file in the run folder before
# any code of cifar-lab runs; less free space than this is a full disk for them.
MIN_FREE_BYTES = 1 << 20
DEFAULT_OUTPUTS = Path("outputs")  # where conf/hydra/default.yaml puts runs and sweeps


def check_output_folder(argv: Sequence[str]) -> None:
    """The folder Hydra will create the run in (`hydra.run.dir`, `hydra.sweep.dir` with `-m`,
    else under ./outputs) must be, or be under, a writable folder with some free space: where it
    is a file, read-only or full, Hydra's answer is a traceback from its logging setup."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.partition("=")[2] for a in argv if a.partition("=")[0].lstrip("+") == key]
    if given and ("${" in given[-1] or "," in given[-1]):
        return  # an interpolation or a sweep of folders: Hydra resolves it
    folder = Path(given[-1]).expanduser() if given else DEFAULT_OUTPUTS
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = f"{key}={folder}" if given else f"the run folder under {folder.absolute()}"
    fix = f"give a folder you can write: {key}=<folder>"
    if not existing.is_dir():
        fail(f"{where}: {existing} is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{where}: {existing} cannot be written (a read-only file system or no "
             f"permission); {fix}")  # fmt: skip
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        fail(f"{where}: {existing} has {free / 2**20:.1f} MiB free, too little for the run's "
             f"config and log files; free space there or {fix}")  # fmt: skip


def override_values(override: Any) -> list[Any]:
    """An override's value, or each choice of a sweep (`a=1,2`)."""
    value = override.value()
    return list(value.list) if override.is_sweep_override() and hasattr(value, "list") else [value]


def composed(config_name: str, group_overrides: list[str]) -> DictConfig | None:
    """The config the chosen groups compose, unresolved (None where it does not compose: Hydra
    then says why)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=group_overrides)
    except Exception:
        return None


def config_node(cfg: DictConfig, key: str) -> Any | None:
    """The node at dotted `key` without resolving interpolations; None when there is none."""
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, ListConfig):
            return node  # an index into a list: Hydra checks it
        # `part in node` is False for a key whose value is ??? (missing); the node is there
        node = node._get_node(part, validate_access=False) if isinstance(node, DictConfig) else None
        if node is None:
            return None
    return node


# how to switch on a setting that is null by default, for the message above
NULL_GROUP_EXAMPLES = {
    "augment.mix": "'augment.mix={mixup_alpha:0.8,cutmix_alpha:1.0,prob:0.5,switch_prob:0.5}' "
    "(CutMix/MixUp)",
}


def null_parent(cfg: DictConfig, key: str) -> str | None:
    """The dotted prefix of `key` whose value is null (`augment.mix` of `augment.mix.prob`)."""
    parts = key.split(".")
    for end in range(1, len(parts)):
        node = config_node(cfg, ".".join(parts[:end]))
        if isinstance(node, ValueNode) and node._value() is None:
            return ".".join(parts[:end])
    return None


def config_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of `cfg` (not into lists)."""
    keys = []
    for key in cfg:
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            keys += config_keys(child, f"{dotted}.")
    return keys


def did_you_mean(value: str, choices: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


# Lightning's Trainer keys that take a count (int) or a fraction (float): 1.0 is all the batches
# and 1 is one batch, so an integer now does not make a float wrong.
COUNT_OR_FRACTION = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
)


def check_type(key: str, node: Any, values: Sequence[Any]) -> None:
    """A number, integer or boolean key given a value of another type, in one line."""
    current = node._value() if isinstance(node, ValueNode) else None
    if key.rsplit(".", 1)[-1] in COUNT_OR_FRACTION and isinstance(current, (int, float)):
        current = float(current)  # either kind of number is right
    if current is None or isinstance(current, str):
        return  # untyped (null) or a string setting such as `auto`: the code checks it
    for value in values:
        if value is None or (isinstance(value, str) and "${" in value):
            continue
        if isinstance(current, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(current, int):
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(current, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            expected = "a number"
        else:
            continue
        if not ok:
            fail(f"{key}={value!r} is not {expected} (it is {current!r} now); e.g. {key}={current}")


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
    # A log file that cannot be written (a full disk, a folder made read-only) would print a
    # "--- Logging error ---" traceback for every line; the run's own error says what failed.
    logging.raiseExceptions = False
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)
    # train/* metrics are logged per epoch; the step interval only thins the per-step rows
    warnings.filterwarnings("ignore", message=LOG_INTERVAL_NOTICE)
    logging.captureWarnings(True)
    # pytorch-ood's progress lines ("Computing principal space ...", ViM's alpha); its warnings stay
    logging.getLogger("pytorch_ood").setLevel(logging.WARNING)
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
