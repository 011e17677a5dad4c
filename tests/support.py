"""Helpers the tests import (`from support import ...`): overrides that shrink a run to seconds on
a CPU, composing the configs with Hydra's compose API, and the real command line in a fresh
process. The fixtures built on them live in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_CONVNET = ["model.widths=[8,8,16,16,16]", "model.head_hidden=16"]
# the checkpoint callbacks plus those that keep state in a checkpoint (early stopping, EMA)
STATEFUL_CALLBACKS = "callbacks=[default,early_stopping,ema]"


def tiny_data(root: Path, batch_size: int = 16, workers: int = 0) -> list[str]:
    """Overrides that read the tiny local CIFAR files under `root`: no download, no MD5 check,
    small batches, no loader workers unless asked."""
    return [
        f"data.root={root}",
        "data.download=false",
        "data.check_integrity=false",
        f"data.num_workers={workers}",
        f"data.batch_size={batch_size}",
    ]


def tiny_training(trainer: str = "cpu", batches: int = 2) -> list[str]:
    """Overrides for a seconds-long CPU fit: one epoch of a few batches, quiet."""
    return [
        f"trainer={trainer}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
    ]


def compose_config(
    config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False
) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides`, as its entry point would see it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name, overrides=overrides or [], return_hydra_config=return_hydra_config
        )


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    return compose_config("train", overrides)


def predict_cfg(ckpt: Path, out_dir: Path, *overrides: str) -> DictConfig:
    """The predict config for `ckpt` on the tiny CIFAR files, writing into `out_dir`."""
    return compose_config(
        "predict",
        [
            f"ckpt={ckpt}",
            f"paths.output_dir={out_dir}",
            "trainer.enable_progress_bar=false",
            "data.num_workers=0",
            "data.check_integrity=false",  # the tiny CIFAR files are not the official ones
            *overrides,
        ],
    )


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in a fresh process (the real command line), wandb offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def run_train(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m cifar_lab.train ARGS` in a fresh process, wandb offline."""
    return run_module("cifar_lab.train", *args, cwd=cwd, env=env)


def only_metrics_json(folder: Path, pattern: str) -> tuple[Path, dict]:
    """The one `metrics.json` matching `pattern` under `folder`: (its run folder, its contents)."""
    (metrics_file,) = folder.glob(pattern)
    return metrics_file.parent, json.loads(metrics_file.read_text())


def metrics_of(run: Path) -> dict:
    """The metrics.json a run or a sweep's job wrote into its folder."""
    return json.loads((run / "metrics.json").read_text())


def tiny_run(root: Path, trainer: str = "cpu") -> list[str]:
    """Overrides for a few-second job on the tiny CIFAR-10."""
    return ["data=cifar10", *tiny_data(root), *TINY_CONVNET, *tiny_training(trainer)]


def run_sweep(
    root: Path, sweep: Path, *overrides: str, trainer: str = "cpu", flag: bool = True
) -> subprocess.CompletedProcess:
    """`python -m cifar_lab.train [-m] OVERRIDES` on the tiny CIFAR-10 (OVERRIDES win), its jobs
    under `sweep`; `flag=False` leaves the multirun to the config (hparams_search=optuna)."""
    args = ["-m"] if flag else []
    args += [*tiny_run(root, trainer), *overrides, f"hydra.sweep.dir={sweep}"]
    return run_train(*args, cwd=sweep.parent)
