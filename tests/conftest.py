"""Shared fixtures: tiny on-disk datasets, tiny trained checkpoints and Hydra configs shrunk to run
in seconds on a CPU. The helpers they use live in support.py.

The suite runs on pytest-xdist workers (`-n auto` in pyproject.toml), one per core, each pinned
to its core. A session fixture that writes files (`made_once`) is made by the first worker that
asks for it; the others wait for it and reuse the same files, so a checkpoint is trained once per
run, not once per worker."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from omegaconf import DictConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from cifar_files import write_cifar  # noqa: E402
from support import (  # noqa: E402
    STATEFUL_CALLBACKS,
    TINY_CONVNET,
    compose_train,
    tiny_data,
    tiny_training,
)


def pin_worker_to_one_core() -> None:
    """With as many xdist workers as cores, run each worker, and the processes it starts, on a
    core of its own. train() and bench size torch's threads to the cores a process may use
    (cifar_lab.speed.usable_cores), so unpinned workers each ran 2 threads on 2 shared cores:
    test_train.py + test_recipes.py (not slow) took 196 s of CPU unpinned, 43 s pinned."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if workers >= len(cores):
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        import torch  # after the pinning: its thread pool sizes itself to one core

        torch.set_num_threads(1)


pin_worker_to_one_core()


def made_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Path]
) -> Path:
    """`make(folder)`'s path, made in a fresh `folder` once per test run and shared by the xdist
    workers (the first one makes it under a file lock; the others wait and read where it is)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # the run's folder above each worker's own
    done = shared / f"{name}.path"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            folder = shared / name
            folder.mkdir()
            done.write_text(str(make(folder)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return made_once(
        tmp_path_factory,
        "cifar100",
        lambda folder: write_cifar(folder, "cifar100", n_train=200, n_test=100),
    )


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return made_once(
        tmp_path_factory,
        "cifar10",
        lambda folder: write_cifar(folder, "cifar10", n_train=100, n_test=40),
    )


@pytest.fixture
def train_cfg(tmp_path: Path, cifar100_root: Path) -> Callable[..., DictConfig]:
    """A composed train config on the tiny CIFAR-100: CPU, one short epoch, output in
    `tmp_path / run`."""

    def make(*overrides: str, root: Path | None = None, run: str = "run") -> DictConfig:
        base = [
            *tiny_data(root or cifar100_root),
            f"paths.output_dir={tmp_path / run}",
            *tiny_training(batches=3),
            "logger=csv",
        ]
        return compose_train(base + list(overrides))

    return make


def trained_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str], kept: str
) -> Path:
    """The `kept` checkpoint (`last_model_path`/`best_model_path`) of one tiny run with
    `overrides`, trained once for the whole session (all xdist workers)."""
    from cifar_lab.train import train

    def make(run: Path) -> Path:
        cfg = compose_train([*overrides, f"paths.output_dir={run}", "logger=none"])
        return Path(train(cfg)[kept])

    return made_once(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar100_root: Path) -> Path:
    """The last.ckpt of a one-epoch, two-batch tiny ConvNet run, trained once per session."""
    overrides = [*tiny_data(cifar100_root), *tiny_training(), *TINY_CONVNET, "test=false"]
    return trained_once(tmp_path_factory, "tiny_run", overrides, "last_model_path")


@pytest.fixture(scope="session")
def smoke_ckpt(tmp_path_factory: pytest.TempPathFactory, cifar100_root: Path) -> Path:
    """The best.ckpt of `experiment=smoke` with the tiny ConvNet, trained once per session."""
    overrides = [
        *tiny_data(cifar100_root), *tiny_training(batches=3), "experiment=smoke", *TINY_CONVNET
    ]  # fmt: skip
    return trained_once(tmp_path_factory, "smoke_run", overrides, "best_model_path")


@pytest.fixture(scope="session")
def cifar10_ckpt(tmp_path_factory: pytest.TempPathFactory, cifar10_root: Path) -> Path:
    """The best.ckpt of a tiny ConvNet trained 8 epochs on the whole tiny CIFAR-10 (about 0.7
    clean accuracy, where the smoke checkpoints score near 0): attacks need images the model
    gets right. Trained once per session."""
    overrides = [
        "data=cifar10", *tiny_data(cifar10_root), *tiny_training(), *TINY_CONVNET,
        "augment=none", "data.val_fraction=0", "trainer.max_epochs=8", "test=false",
        "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
        "model.drop_rate=0", "model.block_drop_rate=0", "optim.optimizer.lr=0.005",
        "optim.scheduler.warmup_epochs=0",
    ]  # fmt: skip
    return trained_once(tmp_path_factory, "cifar10_run", overrides, "best_model_path")


@pytest.fixture(scope="session")
def stateful_checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar100_root: Path) -> Path:
    """The last.ckpt of a finished one-epoch, one-batch tiny run that also keeps early-stopping
    and EMA state (every kind of state a resume restores), trained once per session."""
    overrides = [*tiny_data(cifar100_root), *tiny_training(batches=1), *TINY_CONVNET,
                 "test=false", STATEFUL_CALLBACKS]  # fmt: skip
    return trained_once(tmp_path_factory, "stateful_run", overrides, "last_model_path")
