"""Lightning's standard callbacks as options beside best/last: early stopping, the top-k epochs,
the learning rate in the logs (`callbacks=[default,early_stopping,lr_monitor,top_k]`)."""

from __future__ import annotations

import csv
from pathlib import Path

from support import TINY_CONVNET

from cifar_lab.train import train

ALL = "callbacks=[default,early_stopping,lr_monitor,top_k]"


def test_the_standard_callbacks_combine_with_best_and_last(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        *TINY_CONVNET,
        ALL,
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",  # no epoch can improve by that much
        "trainer.max_epochs=6",
        "trainer.log_every_n_steps=1",
    )

    metrics = train(cfg)

    run = tmp_path / "run"
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2  # stopped early
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert len(list((run / "checkpoints" / "top_k").glob("epoch_*.ckpt"))) == 2
    header = next(csv.reader((run / "csv" / "metrics.csv").open()))
    assert any(column.startswith("lr-") for column in header)
