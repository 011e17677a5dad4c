"""Long jobs show progress without a TTY: one line per training epoch in the console and
train.log (epoch, loss, val/acc, img/s, ETA), no notice about the step-logging interval, and a
line per set that predict scores (images, img/s, sets left, ETA)."""

from __future__ import annotations

import logging
import re

import numpy as np
from ood_files import random_images, write_corruption_set
from support import TINY_CONVNET, predict_cfg, run_module, tiny_data, tiny_training

from cifar_lab.predict import predict

EPOCH_LINE = r"epoch {}/2: train/loss \d+\.\d{{4}}, val/acc \d\.\d{{4}}, [\d,]+ img/s"


def test_each_epoch_is_one_line_in_the_console_and_train_log(cifar100_root, tmp_path) -> None:
    run = tmp_path / "run"

    result = run_module(
        "cifar_lab.train",
        *tiny_data(cifar100_root),
        *tiny_training(batches=3),
        *TINY_CONVNET,
        "trainer.max_epochs=2",
        "logger=none",
        "test=false",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    log = (run / "train.log").read_text()
    console = result.stdout + result.stderr
    for text in (log, console):
        assert re.search(EPOCH_LINE.format(1) + r", ETA \d+s", text), text[-2000:]
        assert re.search(EPOCH_LINE.format(2), text)
    assert "log_every_n_steps" not in console + log


def test_predict_logs_a_line_per_scored_set(tiny_checkpoint, cifar100_root, tmp_path, caplog):
    labels = np.tile(np.arange(10) % 100, 5)
    ood = write_corruption_set(
        tmp_path / "c", {"fog": random_images(50), "snow": random_images(50, seed=1)}, labels
    )
    cfg = predict_cfg(
        tiny_checkpoint, tmp_path / "out", f"data.root={cifar100_root}", "ood=cifar100c",
        f"ood.root={ood}", "ood.benchmark=[fog,snow]", "ood.extra=[]",
    )  # fmt: skip

    with caplog.at_level(logging.INFO, logger="cifar_lab"):
        predict(cfg)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scored ")]
    assert len(lines) == 4, lines  # the validation split the temperature is fitted on is last
    assert re.fullmatch(r"scored clean: 100 images, [\d,]+ img/s; set 1/4, ETA \d+s", lines[0])
    assert lines[1].startswith("scored fog: 50 images") and ", ETA " in lines[1]
    assert lines[2].startswith("scored snow: 50 images") and ", ETA " in lines[2]
    assert re.fullmatch(r"scored train/calibration: \d+ images, [\d,]+ img/s; set 4/4", lines[3])


def test_a_wandb_run_ends_without_its_history_and_summary_tables(cifar100_root, tmp_path):
    result = run_module(
        "cifar_lab.train",
        *tiny_data(cifar100_root),
        *tiny_training(batches=2),
        *TINY_CONVNET,
        "test=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"WANDB_SILENT": "false"},  # what a user's shell has
    )

    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Run history:" not in output and "Run summary:" not in output
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))  # the run is still kept
