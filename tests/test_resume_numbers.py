"""The numbers a resumed run reports are those of its epochs: the sanity check never counts as a
best, and more epochs on resume get a schedule of their length (issue: true numbers)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest
import torch
from cifar_files import write_cifar
from support import TINY_CONVNET

from cifar_lab.build import build_datamodule, build_module
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.train import train

FIT = [*TINY_CONVNET, "logger=none", "test=false", "data.val_fraction=0"]


def predictions(cfg, checkpoint: Path) -> torch.Tensor:
    """The checkpoint's top-1 class for each validation image, in loader order."""
    module = build_module(cfg)
    read_checkpoint(checkpoint).load_net_weights(module.net)
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    module.eval()
    with torch.no_grad():
        return torch.cat([module(images).argmax(1) for images, _ in datamodule.val_dataloader()])


def test_a_resume_never_counts_the_sanity_check_as_the_best(train_cfg, tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "data", "cifar100", n_train=200, n_test=100)
    first_cfg = train_cfg(*FIT, root=root)
    first = train(first_cfg)
    last = Path(first["last_model_path"])
    # Relabel the validation (test) split so the first batch is all right for these weights
    # and the second all wrong: a one-batch sanity check scores 1.0, a whole epoch about half.
    predicted = predictions(first_cfg, last)
    test_file = root / "cifar-100-python" / "test"
    batch = pickle.loads(test_file.read_bytes())
    labels = (predicted + 1) % 100
    labels[:16] = predicted[:16]
    batch["fine_labels"] = labels.tolist()
    test_file.write_bytes(pickle.dumps(batch))
    stored_best = float(read_checkpoint(last).raw["state_dict"]["val_acc_best.max_value"])
    resume_cfg = train_cfg(
        *FIT,
        f"ckpt_path={last}",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=1",
        root=root,
    )
    resume_cfg.paths.output_dir = str(tmp_path / "resumed")

    resumed = train(resume_cfg)

    assert resumed["val/acc"] < 0.9  # the epoch's score: half of its images are mislabelled
    assert resumed["val/acc_best"] == pytest.approx(max(stored_best, resumed["val/acc"]))


def test_more_epochs_on_resume_follow_a_schedule_of_their_length(train_cfg, tmp_path) -> None:
    common = [*FIT, "optim.scheduler.warmup_epochs=0"]
    full = train(train_cfg(*common, "trainer.max_epochs=3"))
    first_cfg = train_cfg(*common, "trainer.max_epochs=2")
    first_cfg.paths.output_dir = str(tmp_path / "first")
    first = train(first_cfg)
    resume_cfg = train_cfg(*common, "trainer.max_epochs=3", f"ckpt_path={first['last_model_path']}")
    resume_cfg.paths.output_dir = str(tmp_path / "resumed")

    resumed = train(resume_cfg)

    min_lr = float(resume_cfg.optim.scheduler.min_lr)
    assert resumed["global_step"] == full["global_step"] == 9
    assert (
        resumed["train/lr"] == pytest.approx(full["train/lr"]) and resumed["train/lr"] > 3 * min_lr
    )


def test_resuming_in_place_keeps_the_csv_history(train_cfg, tmp_path: Path) -> None:
    csv_log = tmp_path / "run" / "csv" / "metrics.csv"
    with_csv = [*TINY_CONVNET, "test=false"]  # train_cfg's logger is csv
    train(train_cfg(*with_csv))
    before = list(csv.DictReader(csv_log.open()))

    train(train_cfg(*with_csv, "ckpt_path=auto", "trainer.max_epochs=2"))

    after = list(csv.DictReader(csv_log.open()))
    assert len(after) > len(before) > 0
    assert [{key: row[key] for key in before[0]} for row in after[: len(before)]] == before
    assert {row["epoch"] for row in after if row.get("val/acc")} == {"0", "1"}
