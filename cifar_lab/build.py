"""Builds a run's objects from its composed config; every entry point goes through here.

The module (backbone, optimizer and scheduler partials, loss, TTA), the datamodule (with an OOD
set for `predict`), the precision, the lr scaling, the callbacks and the Trainers. Entry points
import this module and never each other.
"""

from __future__ import annotations

import inspect
import logging
import re
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_lab.attacks.settings import AttackSettings
from cifar_lab.attacks.training import AdversarialTraining
from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.detection_sources import DetectionSources
from cifar_lab.data.ood import OODSet
from cifar_lab.data.transforms import augment_normalization
from cifar_lab.errors import CifarLabError
from cifar_lab.models.classifier import CIFARClassifier, loss_views
from cifar_lab.models.tta import TestTimeAugmentation
from cifar_lab.runs.saving import AtomicCheckpointIO
from cifar_lab.speed import cudnn_benchmark, split_model_config
from cifar_lab.training.divergence import DivergenceGuard
from cifar_lab.training.progress import EpochLog, EpochProgressBar, NetSummary

log = logging.getLogger(__name__)


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


def build_net(model_cfg: DictConfig) -> Any:
    """The `model` config's network. A key the chosen model does not take (e.g. the ConvNet's
    `widths` that `experiment=smoke` sets, with `model=resnet50` on the command line) is one
    line naming the key and the fix, not timm's TypeError."""
    try:
        return instantiate(model_cfg, _convert_="all")
    except InstantiationException as err:
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err.__cause__ or err))
        if unexpected is None:
            raise
        key, target = unexpected.group(1), model_cfg.get("_target_")
        raise CifarLabError(
            f"model.{key} is not a setting of the chosen model ({target}, "
            f"name={model_cfg.get('name')}); an experiment= recipe written for another model sets "
            f"it: drop it (~model.{key}) or use the recipe's own model"
        ) from err


# A stored network larger than this is refused before any memory is allocated: 2e9 fp32
# parameters are 8 GB (ResNet-101 has 44.5M); a crafted `widths` could otherwise ask for a TB.
MAX_STORED_PARAMETERS = 2_000_000_000


def check_stored_network(model_cfg: DictConfig, source: str) -> None:
    """Build the network a stored `model` config (read from `source`, a checkpoint) describes
    on the meta device, which allocates nothing: one line when it builds none (crafted types)
    or one too large to allocate."""
    net_cfg, _ = split_model_config(model_cfg)
    try:
        with torch.device("meta"):
            net = instantiate(net_cfg, _convert_="all")
        parameters = sum(p.numel() for p in net.parameters())
    # Everything is caught on purpose: the config is untrusted, and a factory fed a crafted
    # value can raise nearly anything.
    except Exception as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        why = (str(cause).splitlines() or [""])[0][:200]
        raise CifarLabError(
            f"{source} stores a model config that builds no network ({type(cause).__name__}: "
            f"{why}); use a checkpoint written by cifar_lab.train"
        ) from err
    if parameters > MAX_STORED_PARAMETERS:
        raise CifarLabError(
            f"{source} stores a network of {parameters:,} parameters (over "
            f"{MAX_STORED_PARAMETERS:,}, {MAX_STORED_PARAMETERS * 4 / 1e9:.0f} GB of weights); "
            f"refusing to allocate it: use a checkpoint written by cifar_lab.train"
        )


def build_module(
    cfg: DictConfig,
    run_config: dict[str, Any] | None = None,
    processes: int = 1,
    tta: TestTimeAugmentation | None = None,
) -> CIFARClassifier:
    """The LightningModule for `cfg`: backbone from `model`, partials from `optim`, `tta` for
    its predict step."""
    smoothing = cfg.loss.label_smoothing
    if not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise CifarLabError(
            f"loss.label_smoothing={smoothing!r} is out of range; expected a number in [0, 1), "
            f"e.g. loss.label_smoothing=0.1"
        )
    scheduler_cfg = cfg.optim.get("scheduler")
    model_cfg, speed_options = split_model_config(cfg.model)
    # _convert_="all": plain lists/dicts, so optimizer state (betas) unpickles with weights_only
    return CIFARClassifier(
        net=build_net(model_cfg),
        optimizer=instantiate(cfg.optim.optimizer, lr=scaled_lr(cfg, processes), _convert_="all"),
        scheduler=instantiate(scheduler_cfg, _convert_="all") if scheduler_cfg else None,
        num_classes=cfg.data.num_classes,
        label_smoothing=cfg.loss.label_smoothing,
        mix=OmegaConf.to_container(cfg.augment.mix) if cfg.augment.get("mix") else None,
        run_config=run_config,
        tta=tta,
        loss=cfg.loss.get("name") or "cross_entropy",
        jsd_alpha=cfg.loss.get("jsd_alpha", 12.0),
        logitnorm_tau=cfg.loss.get("logitnorm_tau", 0.04),
        adversary=build_adversary(cfg),
        **speed_options,
    )


def build_adversary(cfg: DictConfig) -> AdversarialTraining | None:
    """The `adv` config's adversarial training (None for `adv=none` or a config without it),
    attacking [0, 1] pixels behind the run's normalisation."""
    adv_cfg = cfg.get("adv")
    if not adv_cfg or not adv_cfg.get("_target_"):
        return None
    mean, std = augment_normalization(cfg.augment, cfg.data.name)
    return instantiate_checked(adv_cfg, mean=list(mean), std=list(std))


def build_attack(attack_cfg: DictConfig | None) -> AttackSettings | None:
    """The `attack` config's settings (`attack=none`: None), every value checked."""
    if not attack_cfg or not attack_cfg.get("_target_"):
        return None
    return instantiate_checked(attack_cfg)


def instantiate_checked(cfg: DictConfig, **kwargs: Any) -> Any:
    """`instantiate`, with a user error raised by the constructor as itself (one line)."""
    try:
        return instantiate(cfg, **kwargs, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, CifarLabError):
            raise err.__cause__ from None
        raise


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def check_optimizer(module: CIFARClassifier) -> None:
    """Build the module's optimizer and lr schedule once, as Lightning does when fitting starts:
    settings that timm or torch refuse (`optim.optimizer.opt=bogus`, `betas=[2]`) are one line
    here instead of a traceback from inside the fit."""
    try:
        optimizer = module.optimizer_factory(module.net)
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, RuntimeError) as err:
        raise CifarLabError(
            f"the optim.optimizer settings build no optimizer ({type(err).__name__}: "
            f"{one_line(err)}); "
            f"fix them or choose another: optim=adamw, adoptw, muon or sgd"
        ) from err
    if module.scheduler_factory is None:
        return
    try:  # any length: Lightning sizes it when fitting starts
        module.scheduler_factory(optimizer, total_steps=100, steps_per_epoch=10)
    except (ValueError, TypeError, KeyError, AssertionError, ZeroDivisionError) as err:
        raise CifarLabError(
            f"the optim.scheduler settings build no lr schedule ({type(err).__name__}: "
            f"{one_line(err)}); "
            f"fix them, or optim.scheduler=null for a constant lr"
        ) from err


def build_ood(ood_cfg: DictConfig | None) -> OODSet | None:
    """The `ood` config's set (leaderboard or CIFAR-C), None for `ood=none`."""
    return instantiate(ood_cfg) if ood_cfg and ood_cfg.get("_target_") else None


def build_detection_sources(detect_cfg: DictConfig | None) -> DetectionSources | None:
    """The OOD sets of the `detect` config (its set keys; the detectors read their own), None
    when it names none (`detect=none`)."""
    if not detect_cfg:
        return None
    settings = OmegaConf.to_container(detect_cfg, resolve=True)
    keys = inspect.signature(DetectionSources).parameters
    sources = DetectionSources(**{key: value for key, value in settings.items() if key in keys})
    option = settings.get("name") or "none"
    if sources.empty and option != "none":
        raise CifarLabError(
            f"detect={option} names no OOD set; add detect.folder=<a folder of images> or "
            f"detect.npy=<a .npy of images>, or sets such as detect.sets=[svhn,textures]"
        )
    return None if sources.empty else sources


def follow_class_subset(cfg: DictConfig) -> None:
    """Under the open-set protocol (`data.classes`) the model predicts one class per known
    class: `data.num_classes` (which the model's interpolates) becomes the list's length."""
    classes = cfg.data.get("classes")
    if classes is None or isinstance(classes, str) or len(classes) == cfg.data.num_classes:
        return
    log.info(
        "data.classes: %d of %s's classes are known (open-set protocol); data.num_classes %s -> %d",
        len(classes),
        cfg.data.name,
        cfg.data.num_classes,
        len(classes),
    )
    cfg.data.num_classes = len(classes)


def build_datamodule(
    cfg: DictConfig, ood: OODSet | None = None, predict_clean: bool = True
) -> CIFARDataModule:
    """The `data` config's datamodule with the `augment` config as plain dicts; `ood`,
    `predict_clean` and the `detect` config's sets choose what its predict loaders serve."""
    augment = OmegaConf.to_container(cfg.augment, resolve=True)
    return instantiate(
        cfg.data,
        augment=augment,
        ood=ood,
        predict_clean=predict_clean,
        train_views=loss_views(cfg.loss.get("name")),
        detect=build_detection_sources(cfg.get("detect")),
        _convert_="all",
    )


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The `callbacks` config's callbacks, the guard that stops a diverged run, the per-epoch
    log line, and the progress bar and model summary that count epochs from 1 and show the
    network alone (unless the `trainer` config turns them off)."""
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    callbacks += [DivergenceGuard(), EpochLog()]
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
