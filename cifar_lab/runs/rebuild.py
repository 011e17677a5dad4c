"""A run's config rebuilt from a checkpoint: the one way `train` (resume) and `predict` do it.

A checkpoint stores the resolved config of the run that wrote it; its `REBUILT_GROUPS` (data,
model, augment, optim, loss) rebuild the same network, data and optimizer without the original
command line, and `OPTIONAL_GROUPS` (adv: the adversarial training objective) come along where
the checkpoint has them (older ones do not: this command line's then stay). The file is
shared, so what it stores is data, never instructions:
- it may build only cifar-lab's own objects (`TRUSTED_TARGETS`): Hydra's `_target_` would
  otherwise call any importable function it names (e.g. `shutil.copyfile`);
- where data lives and whether to download or MD5-check it (`LOCAL_DATA_KEYS`) are this
  machine's settings, taken from this command line or its defaults, never from the file, so a
  checkpoint cannot choose a folder to create or download into;
- pretrained weights are off (the checkpoint holds the trained ones).
Keys given on this command line win over the stored ones, with a notice for each that changes
the architecture the weights were trained for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import Container, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import RunCheckpoint

REBUILT_GROUPS = ("data", "model", "augment", "optim", "loss")
OPTIONAL_GROUPS = ("adv",)
LOCAL_DATA_KEYS = ("root", "download", "check_integrity")
TRUSTED_TARGETS = frozenset(
    {
        "cifar_lab.models.create_convnet",
        "cifar_lab.models.create_timm_net",
        "cifar_lab.models.convnet.create_convnet",
        "cifar_lab.models.timm_net.create_timm_net",
        "timm.optim.create_optimizer_v2",
        "cifar_lab.models.schedule.warmup_cosine",
        "cifar_lab.data.CIFARDataModule",
        "cifar_lab.data.datamodule.CIFARDataModule",
        "cifar_lab.training.ema.EMA",
        "cifar_lab.attacks.training.AdversarialTraining",
    }
)
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")
# model keys that change how a network trains but not its layers or weights
TRAINING_ONLY_MODEL_KEYS = frozenset(
    {"drop_rate", "drop_block_rate", "block_drop_rate", "pretrained", "freeze_backbone"}
    | {"channels_last", "compile"}
)
DELETED = object()  # a `~key` override


def check_trusted(config: Any, source: str, path: str = "") -> None:
    """Raise a one-line error, naming the key, if `config` (read from `source`, e.g. a
    checkpoint) would make Hydra build anything but `TRUSTED_TARGETS` (any `_target_`,
    `_args_` or `_partial_` elsewhere), or holds an interpolation to resolve."""
    if isinstance(config, Mapping):
        special = [key for key in HYDRA_KEYS if key in config]
        if special and config.get("_target_") not in TRUSTED_TARGETS:
            key = f"{path}.{special[0]}" if path else special[0]
            raise CifarLabError(
                f"{source} asks Hydra to build {key}={config[special[0]]!r}, which is not one of "
                f"cifar-lab's own objects {sorted(TRUSTED_TARGETS)}; refusing to run it: use a "
                f"checkpoint written by cifar_lab.train"
            )
        for key, value in config.items():
            check_trusted(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            check_trusted(value, source, f"{path}[{i}]")
    elif isinstance(config, str) and "${" in config:
        raise CifarLabError(
            f"{source} holds an unresolved interpolation {path}={config!r}; a stored config is "
            f"resolved when saved: use a checkpoint written by cifar_lab.train"
        )


def stored_run_config(stored: Mapping[str, Any], source: str) -> DictConfig:
    """The `REBUILT_GROUPS` of a stored config, checked by `check_trusted`."""
    missing = [group for group in REBUILT_GROUPS if group not in stored]
    if missing:
        raise CifarLabError(
            f"{source} stores no training config for {missing}; expected a .ckpt written by "
            f"cifar_lab.train, which keeps the resolved config in it"
        )
    not_groups = [g for g in REBUILT_GROUPS if not isinstance(stored[g], Mapping)]
    if not_groups:
        raise CifarLabError(
            f"{source} stores {not_groups[0]}={stored[not_groups[0]]!r}, not a group of settings; "
            f"expected a .ckpt written by cifar_lab.train"
        )
    groups = {group: stored[group] for group in REBUILT_GROUPS}
    groups |= {g: stored[g] for g in OPTIONAL_GROUPS if isinstance(stored.get(g), Mapping)}
    check_trusted(groups, source)
    check_stored_values(groups, source)
    try:
        return OmegaConf.create(groups)
    except (OmegaConfBaseException, ValueError, TypeError) as err:  # e.g. a tensor in it
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise CifarLabError(
            f"{source} stores a config that is not plain settings ({first_line}); use a "
            f"checkpoint written by cifar_lab.train"
        ) from err


# Stored values that size what is built (classes, image side, batches) or name files to read:
# their types and ranges are checked before anything is built. The network's size is checked
# when it is built, on the meta device (`build.check_stored_network`).
STORED_NUMBERS = {
    "data.num_classes": (int, 1, 100_000),
    "data.img_size": (int, 8, 2048),
    "data.batch_size": (int, 1, 1 << 16),
    "data.val_fraction": (float, 0.0, 0.99),
    "loss.label_smoothing": (float, 0.0, 1.0),
    "optim.optimizer.lr": (float, 0.0, 1e3),
}
FILE_KEYS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
# Stored settings that are groups of settings or null (off); each is read as a mapping.
STORED_SUBGROUPS = ("augment.mix", "optim.optimizer", "optim.scheduler")
# What every rebuild reads: a stored config without one of them is not one train wrote.
STORED_REQUIRED = ("data.num_classes", "optim.optimizer", "optim.optimizer.lr")


def check_stored_values(groups: Mapping[str, Any], source: str) -> None:
    """A one-line error for a stored number of the wrong type or range (`num_classes: "ten"`,
    `img_size: 10**6`), a group that is not one (`augment.mix: "on"`) and a model key that names
    a file to load (`checkpoint_path`)."""
    for key, (kind, low, high) in STORED_NUMBERS.items():
        group, _, rest = key.partition(".")
        node: Any = groups.get(group)
        for part in rest.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None and key not in STORED_REQUIRED:
            continue
        is_number = isinstance(node, (int, float)) and not isinstance(node, bool)
        if not is_number or (kind is int and not isinstance(node, int)) or not low <= node <= high:
            expected = "an integer" if kind is int else "a number"
            raise CifarLabError(
                f"{source} stores {key}={node!r}; expected {expected} in [{low}, {high}]: use a "
                f"checkpoint written by cifar_lab.train"
            )
    for key in STORED_SUBGROUPS:
        group, _, leaf = key.partition(".")
        node = groups[group].get(leaf)
        if (node is not None or key in STORED_REQUIRED) and not isinstance(node, Mapping):
            raise CifarLabError(
                f"{source} stores {key}={node!r}, not a group of settings or null; use a "
                f"checkpoint written by cifar_lab.train"
            )
    model = groups.get("model")
    named = [key for key in FILE_KEYS if isinstance(model, Mapping) and key in model]
    if named:
        raise CifarLabError(
            f"{source} stores model.{named[0]}, which would load a file the checkpoint names; "
            f"refusing it: the checkpoint's own weights are what is scored or resumed"
        )


def changes_architecture(key: str) -> bool:
    """Whether overriding `key` (`model.widths`, or `model` for a whole group) can change the
    layers a checkpoint's weights were trained for."""
    group, _, leaf = key.partition(".")
    return group == "model" and leaf not in TRAINING_ONLY_MODEL_KEYS


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


def given_by_overrides(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """The command-line `overrides` that set a key of the rebuilt groups (`data.root=...`) or
    choose one (`model=resnet50`), as {key: resolved value in `cfg`, or DELETED}."""
    given: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.partition(".")[0] in (*REBUILT_GROUPS, *OPTIONAL_GROUPS):
            given[key] = DELETED if override.is_delete() else plain(OmegaConf.select(cfg, key))
    return given


def given_by_settings(cfg: DictConfig, groups: Sequence[str]) -> dict[str, Any]:
    """The non-null leaf keys of `cfg`'s `groups` (predict's layer over the stored config:
    null = keep the checkpoint's), as {dotted key: value}."""

    def leaves(prefix: str, value: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            return {
                k: v
                for key, sub in value.items()
                for k, v in leaves(f"{prefix}.{key}", sub).items()
            }
        return {} if value is None else {prefix: value}

    return {k: v for group in groups for k, v in leaves(group, plain(cfg.get(group) or {})).items()}


def rebuild_config(
    cfg: DictConfig, checkpoint: RunCheckpoint, given: Mapping[str, Any]
) -> tuple[DictConfig, list[str]]:
    """`cfg` with the checkpoint's `REBUILT_GROUPS` (see `stored_run_config`), the `given` keys
    of this command line on top (`given_by_overrides`/`given_by_settings`), this machine's
    `LOCAL_DATA_KEYS` from `cfg` and pretrained weights off; plus a one-line notice for each
    given key that changes the architecture."""
    source = f"checkpoint {checkpoint.path}"
    stored = stored_run_config(checkpoint.config, source)
    local = {key: plain((cfg.get("data") or {}).get(key)) for key in LOCAL_DATA_KEYS}
    merged = cfg.copy()
    notices = []
    with open_dict(merged):
        for group in (*REBUILT_GROUPS, *OPTIONAL_GROUPS):
            if group in stored:
                merged[group] = stored[group]
        for key, value in given.items():
            if key.partition(".")[2] in LOCAL_DATA_KEYS and key.startswith("data."):
                continue
            before = plain(OmegaConf.select(merged, key, default=None))
            if value is DELETED:
                parent, _, leaf = key.rpartition(".")
                OmegaConf.select(merged, parent).pop(leaf, None)
                value = None
            else:
                OmegaConf.update(merged, key, value, merge=False, force_add=True)
            if before != value and changes_architecture(key):
                what, was = (
                    (key, "settings")
                    if isinstance(value, dict)
                    else (f"{key}={value!r}", repr(before))
                )
                notices.append(
                    f"{what} from the command line replaces the checkpoint's {was}: this "
                    f"changes the network its weights were trained for"
                )
        for key, value in local.items():
            if value is not None:
                merged.data[key] = value
        if merged.data.get("num_classes") != stored.data.get("num_classes"):
            notices.append(
                f"data from the command line has {merged.data.get('num_classes')} classes where "
                f"the checkpoint's has {stored.data.get('num_classes')}: this changes the "
                f"network's head"
            )
        if "pretrained" in merged.model:
            merged.model.pretrained = False
    return merged, notices
