"""Shared fixtures: tiny on-disk datasets and Hydra configs shrunk to run in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from cifar_files import write_cifar  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TINY_CONVNET = ["model.widths=[8,8,16,16,16]", "model.head_hidden=16"]


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


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar100"), "cifar100", n_train=200, n_test=100)


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", n_train=100, n_test=40)


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in a fresh process (the real command line), wandb offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides or [])


@pytest.fixture
def train_cfg(tmp_path: Path, cifar100_root: Path) -> Callable[..., DictConfig]:
    """A composed train config on the tiny CIFAR-100: CPU, one short epoch, output in tmp_path."""

    def make(*overrides: str, root: Path | None = None) -> DictConfig:
        base = [
            *tiny_data(root or cifar100_root),
            f"paths.output_dir={tmp_path / 'run'}",
            *tiny_training(batches=3),
            "logger=csv",
        ]
        return compose_train(base + list(overrides))

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar100_root: Path) -> Path:
    """The last.ckpt of a one-epoch, two-batch tiny ConvNet run, trained once per session."""
    from cifar_lab.train import train

    run = tmp_path_factory.mktemp("tiny_run")
    overrides = [
        *tiny_data(cifar100_root),
        *tiny_training(),
        *TINY_CONVNET,
        f"paths.output_dir={run}",
        "logger=none",
        "test=false",
    ]
    return Path(train(compose_train(overrides))["last_model_path"])
