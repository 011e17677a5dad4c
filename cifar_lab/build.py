"""Builds a run's objects from its composed config; every entry point goes through here.

The module (backbone, optimizer and scheduler partials, loss, TTA), the datamodule (with an OOD
set for `predict`), the precision, the lr scaling, the callbacks and the Trainers. Entry points
import this module and never each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import Container, DictConfig, OmegaConf, open_dict

from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.ood import OODSet
from cifar_lab.errors import CifarLabError
from cifar_lab.models.classifier import CIFARClassifier, loss_views
from cifar_lab.models.tta import TestTimeAugmentation
from cifar_lab.speed import cudnn_benchmark, split_model_config
from cifar_lab.training.checkpoint_io import AtomicCheckpointIO
from cifar_lab.training.progress import EpochProgressBar, NetSummary

# The groups of a stored run config (in a checkpoint) that are rebuilt from it, and the only
# objects such a config may build: a checkpoint is a shared file, and Hydra's `_target_` would
# otherwise call any importable function it names (e.g. `shutil.copyfile`).
REBUILT_GROUPS = ("data", "model", "augment", "optim", "loss")
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
    }
)
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")


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
    """The groups of a stored config that runs are rebuilt from, checked by `check_trusted`."""
    missing = [group for group in REBUILT_GROUPS if group not in stored]
    if missing:
        raise CifarLabError(
            f"{source} stores no training config for {missing}; expected a .ckpt written by "
            f"cifar_lab.train, which keeps the resolved config in it"
        )
    groups = {group: stored[group] for group in REBUILT_GROUPS}
    check_trusted(groups, source)
    return OmegaConf.create(groups)


# model keys that change how a network trains but not its layers or weights
TRAINING_ONLY_MODEL_KEYS = frozenset(
    {"drop_rate", "drop_block_rate", "block_drop_rate", "pretrained", "freeze_backbone"}
    | {"channels_last", "compile"}
)


def changes_architecture(key: str) -> bool:
    """Whether overriding `key` (`model.widths`, or `model` for a whole group) can change the
    layers a checkpoint's weights were trained for."""
    group, _, leaf = key.partition(".")
    return group == "model" and leaf not in TRAINING_ONLY_MODEL_KEYS


def resolved(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


def resume_config(
    cfg: DictConfig, stored: Mapping[str, Any], source: str, overrides: Sequence[str] = ()
) -> tuple[DictConfig, list[str]]:
    """`cfg` with the `REBUILT_GROUPS` of a checkpoint's stored config (see `stored_run_config`),
    then the command-line `overrides` that set a key of those groups (`data.root=...`) or choose
    one (`model=resnet50`) on top; plus a one-line notice for each override that changes the
    architecture. Pretrained weights are off: the checkpoint holds the trained ones."""
    merged = cfg.copy()
    groups = stored_run_config(stored, source)
    with open_dict(merged):
        for group in REBUILT_GROUPS:
            merged[group] = groups[group]
        notices = []
        for override in OverridesParser.create().parse_overrides(list(overrides)):
            key = override.key_or_group
            if key.partition(".")[0] not in REBUILT_GROUPS:
                continue
            before = OmegaConf.select(merged, key, default=None)
            if override.is_delete():
                parent, _, leaf = key.rpartition(".")
                OmegaConf.select(merged, parent).pop(leaf, None)
                value = None
            else:
                value = resolved(cfg, key)
                OmegaConf.update(merged, key, value, merge=False, force_add=True)
            before = OmegaConf.to_container(before) if isinstance(before, Container) else before
            if before != value and changes_architecture(key):
                given, was = (
                    (key, "settings")
                    if isinstance(value, dict)
                    else (f"{key}={value!r}", repr(before))
                )
                notices.append(
                    f"{given} from the command line replaces the checkpoint's {was}: this "
                    f"changes the network its weights were trained for"
                )
        if merged.data.num_classes != groups.data.num_classes:
            notices.append(
                f"data from the command line has {merged.data.num_classes} classes where the "
                f"checkpoint's has {groups.data.num_classes}: this changes the network's head"
            )
        if "pretrained" in merged.model:
            merged.model.pretrained = False
    return merged, notices


def resolve_precision(precision: str | int) -> str | int:
    """`auto`: bf16 autocast where the GPU supports it, else full fp32 (bf16 on a CPU without
    AMX is several times slower than fp32)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def scaled_lr(cfg: DictConfig, processes: int = 1) -> float:
    """The configured lr, times global batch/256 when `optim.scale_lr_by_batch` (Goyal et al.,
    2017); under DDP the global batch is data.batch_size x processes."""
    lr = float(cfg.optim.optimizer.lr)
    if not lr >= 0:  # also NaN
        raise CifarLabError(
            f"optim.optimizer.lr={lr} is invalid; expected a learning rate >= 0, e.g. 1e-3"
        )
    if cfg.optim.get("scale_lr_by_batch"):
        lr *= cfg.data.batch_size * processes / 256
    return lr


def build_tta(tta_cfg: DictConfig | None) -> TestTimeAugmentation | None:
    """The `tta` config's views (`tta=none`: one view, the image as it is)."""
    return instantiate(tta_cfg) if tta_cfg and tta_cfg.get("_target_") else None


def build_module(
    cfg: DictConfig,
    run_config: dict[str, Any] | None = None,
    processes: int = 1,
    tta: TestTimeAugmentation | None = None,
) -> CIFARClassifier:
    """The LightningModule for `cfg`: backbone from `model`, partials from `optim`, `tta` for
    its predict step."""
    scheduler_cfg = cfg.optim.get("scheduler")
    model_cfg, speed_options = split_model_config(cfg.model)
    # _convert_="all": plain lists/dicts, so optimizer state (betas) unpickles with weights_only
    return CIFARClassifier(
        net=instantiate(model_cfg, _convert_="all"),
        optimizer=instantiate(cfg.optim.optimizer, lr=scaled_lr(cfg, processes), _convert_="all"),
        scheduler=instantiate(scheduler_cfg, _convert_="all") if scheduler_cfg else None,
        num_classes=cfg.data.num_classes,
        label_smoothing=cfg.loss.label_smoothing,
        mix=OmegaConf.to_container(cfg.augment.mix) if cfg.augment.get("mix") else None,
        run_config=run_config,
        tta=tta,
        loss=cfg.loss.get("name") or "cross_entropy",
        jsd_alpha=cfg.loss.get("jsd_alpha", 12.0),
        **speed_options,
    )


def build_ood(ood_cfg: DictConfig | None) -> OODSet | None:
    """The `ood` config's set (leaderboard or CIFAR-C), None for `ood=none`."""
    return instantiate(ood_cfg) if ood_cfg and ood_cfg.get("_target_") else None


def build_datamodule(
    cfg: DictConfig, ood: OODSet | None = None, predict_clean: bool = True
) -> CIFARDataModule:
    """The `data` config's datamodule with the `augment` config as plain dicts; `ood` and
    `predict_clean` choose what its predict loaders serve."""
    augment = OmegaConf.to_container(cfg.augment, resolve=True)
    return instantiate(
        cfg.data,
        augment=augment,
        ood=ood,
        predict_clean=predict_clean,
        train_views=loss_views(cfg.loss.get("name")),
        _convert_="all",
    )


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The `callbacks` config's callbacks, plus the progress bar and model summary that count
    epochs from 1 and show the network alone (unless the `trainer` config turns them off)."""
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    trainer_cfg = cfg.get("trainer") or {}
    if trainer_cfg.get("enable_progress_bar", True) is not False:
        callbacks.append(EpochProgressBar())
    if trainer_cfg.get("enable_model_summary", True) is not False:
        callbacks.append(NetSummary())
    return callbacks


def trainer_settings(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The Trainer keywords cifar-lab resolves itself: `precision: auto` and `benchmark: null`."""
    return {
        "precision": resolve_precision(trainer_cfg.precision),
        "benchmark": cudnn_benchmark(trainer_cfg),
    }


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The `trainer` config's Trainer, with resolved settings and `kwargs` (callbacks, logger);
    checkpoints are saved atomically (`AtomicCheckpointIO`) unless `trainer.plugins` says how."""
    max_epochs = trainer_cfg.get("max_epochs")
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise CifarLabError(
            f"trainer.max_epochs={max_epochs} trains nothing; expected an integer >= 1 (or -1 "
            f"with trainer.max_steps): e.g. trainer.max_epochs=30"
        )
    if not trainer_cfg.get("plugins"):
        kwargs.setdefault("plugins", [AtomicCheckpointIO()])
    return instantiate(trainer_cfg, **trainer_settings(trainer_cfg), **kwargs)


def quiet_trainer(
    trainer_cfg: DictConfig, device: torch.device, root_dir: str, **kwargs: Any
) -> L.Trainer:
    """A one-device Trainer for measurements: no logger, checkpoints, summary or progress bar;
    the `trainer` config's precision and cudnn setting; `kwargs` add to or replace these."""
    settings: dict[str, Any] = {
        "accelerator": "cpu" if device.type == "cpu" else "gpu",
        "devices": 1,
        **trainer_settings(trainer_cfg),
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root_dir,
    }
    return L.Trainer(**{**settings, **kwargs})
