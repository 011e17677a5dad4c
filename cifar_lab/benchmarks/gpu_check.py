"""`bench=gpu_check`: run every GPU path once and report one JSON (issue 11).

The GPU paths (bf16 autocast, the uint8 data held on the GPU and augmented in
`on_after_batch_transfer`, torch.compile, shift TTA, the speedrun recipe, EMA and Muon on the GPU)
have no CI that sees them. Each case is the run's own bench config with the case's overrides
composed on top (Hydra override syntax, so `model=resnet50` or `experiment=speedrun` work), and
runs through the same functions the `train` and `predict` sections and `cifar_lab.train` use:
- `<model>_<backend>`: the `train` section (end to end, Lightning, plain loop) for the ConvNet and
  ResNet-50 at batch 512 bf16, per-image albumentations and the device-resident batched path;
- `compile`: the same with `model.compile=true`;
- `predict_shift`: the `predict` section with `tta=shift`;
- `speedrun`, `speedrun_muon_ema`: a fit of `experiment=speedrun` (and its Muon variant with
  `callbacks=ema`) on the configured data, then its validation accuracy.
A case that fails records its error and the others still run; the command then exits non-zero.

Reduced mode (`bench.gpu_check.reduced: auto` = on a CPU) appends `reduced_overrides` to every
case: fp32, tiny batches, a few steps, `torch.compile` with the eager backend (tracing without
code generation). It takes the same code paths, so the test suite runs it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Checkpoint, ModelSummary, ProgressBar
from omegaconf import DictConfig, open_dict

from cifar_lab.benchmarks.predict import bench_predict
from cifar_lab.benchmarks.train import bench_train
from cifar_lab.build import build_callbacks, build_datamodule, build_module, quiet_trainer

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def run_overrides(cfg: DictConfig) -> list[str]:
    """The overrides this run was started with (inside `hydra.main`), else those stored in
    `bench.gpu_check.overrides`; the bench group choice is the case's to make."""
    if HydraConfig.initialized():
        given = list(HydraConfig.get().overrides.task)
    else:
        given = list(cfg.bench.gpu_check.get("overrides") or [])
    return [o for o in given if not o.startswith(("bench=", "bench.gpu_check"))]


def compose_case(base: Sequence[str], case: Sequence[str], output_dir: Path) -> DictConfig:
    """The bench config of the run's own overrides (`base`) then the case's, writing under
    `output_dir`."""
    overrides = [*base, *case]
    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="bench", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="bench", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def fit_recipe(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Fit the config as `cifar_lab.train` would (its callbacks, e.g. EMA), without logger or
    checkpoints, then validate: the recipe's accuracy and throughput on this data."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    # the recipe's own callbacks (e.g. EMA), not the saving and display ones quiet_trainer drops
    dropped = (Checkpoint, ProgressBar, ModelSummary)
    callbacks = [c for c in build_callbacks(cfg) if not isinstance(c, dropped)]
    trainer = quiet_trainer(
        cfg.trainer,
        device,
        cfg.paths.output_dir,
        max_epochs=cfg.trainer.max_epochs,
        limit_train_batches=cfg.trainer.limit_train_batches,
        limit_val_batches=cfg.trainer.limit_val_batches,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    (validated,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {
        "fit_seconds": seconds,
        "train_images": int(trainer.global_step * cfg.data.batch_size),
        "train_img_per_s": trainer.global_step * cfg.data.batch_size / seconds,
        "epochs": trainer.current_epoch,
        "val/acc": float(validated["val/acc"]),
    }


def train_figures(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    keys = ("end_to_end_img_per_s", "lightning_img_per_s", "plain_img_per_s")
    result = bench_train(cfg, device)
    return {k: v for k, v in result.items() if k in keys or k.endswith(("_over_model", "_mib"))}


def predict_figures(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    result = bench_predict(cfg, device)
    return {name: result[name] for name in cfg.bench.predict.tta}


KINDS: dict[str, Callable[[DictConfig, torch.device], dict[str, Any]]] = {
    "train": train_figures,
    "predict": predict_figures,
    "fit": fit_recipe,
}


def bench_gpu_check(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`gpu_check` section: every case of `bench.gpu_check.cases`, each with its figures or its
    error, and the list of failed cases."""
    settings = cfg.bench.gpu_check
    reduced = settings.reduced if settings.reduced != "auto" else device.type == "cpu"
    base = run_overrides(cfg)
    result: dict[str, Any] = {"reduced": bool(reduced), "failed": []}
    for name, case in settings.cases.items():
        start = time.perf_counter()
        try:
            overrides = list(case.overrides)
            if reduced:  # last, so they shrink what the case sets
                overrides += list(settings.reduced_overrides)
                overrides += list(settings.reduced_case_overrides.get(name) or [])
            case_cfg = compose_case(base, overrides, Path(cfg.paths.output_dir) / name)
            figures = KINDS[case.kind](case_cfg, device)
            result[name] = {"overrides": overrides, **figures}
        except Exception as err:  # one broken path must not hide the others
            result[name] = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
            result[name]["traceback"] = traceback.format_exc(limit=-3).splitlines()[-3:]
            result["failed"].append(name)
        result[name]["seconds"] = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result
