"""Long jobs stop cleanly: SIGTERM ends train, predict and corrupt with a record that says
`terminated` and exit 143, Ctrl-C with `interrupted` and exit 130, never `failed`."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
from faults import run_with_fault
from support import TINY_CONVNET, tiny_data

from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.train import train

SCORING = "cifar_lab.evaluation.scoring.score_sets"


def test_a_training_stop_saves_the_whole_state_without_lightnings_notice(train_cfg, caplog):
    stop = ["+callbacks.stop._target_=faults.SignalAt", "+callbacks.stop.signal=SIGTERM",
            "+callbacks.stop.batch=0"]  # fmt: skip
    cfg = train_cfg(*TINY_CONVNET, "logger=none", *stop)
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exited:
            train(cfg)
    finally:
        lightning_log.removeHandler(caplog.handler)

    assert exited.value.code == 128 + signal.SIGTERM
    assert "weights_only" not in caplog.text  # "`weights_only` was not set, defaulting to False"
    saved = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert saved.raw["optimizer_states"] and saved.raw["callbacks"]  # a full training state


@pytest.fixture
def checkpoint(train_cfg) -> Path:
    return Path(train(train_cfg(*TINY_CONVNET, "logger=none", "test=false"))["last_model_path"])


@pytest.mark.parametrize(
    ("signal_name", "code", "status"),
    [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")],
)
def test_predict_stops_cleanly(checkpoint, cifar100_root, tmp_path, signal_name, code, status):
    out = tmp_path / "scored"

    stopped = run_with_fault(
        f"signal_in({SCORING!r}, {signal_name!r})",
        "cifar_lab.predict",
        f"ckpt={checkpoint}",
        f"data.root={cifar100_root}",
        "data.check_integrity=false",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )

    assert stopped.returncode == code, stopped.stderr[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == status and record["signal"] == signal_name
    assert "Traceback" not in stopped.stderr


def test_corrupt_stops_cleanly_on_sigterm(cifar100_root: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"

    stopped = run_with_fault(
        "signal_in('cifar_lab.corruptions.writer.write_files')",
        "cifar_lab.corrupt",
        *tiny_data(cifar100_root),
        f"corrupt.out={tmp_path / 'set'}",
        "corrupt.n=10",
        "corrupt.names=[fog]",
        f"hydra.run.dir={job}",
        cwd=tmp_path,
    )

    assert stopped.returncode == 143, stopped.stderr[-2000:]
    record = json.loads((job / "metrics.json").read_text())
    assert record["status"] == "terminated" and record["signal"] == "SIGTERM"


def test_ctrl_c_in_training_saves_and_ends_interrupted_with_the_resume_command(
    train_cfg, tmp_path: Path
) -> None:
    stop = ["+callbacks.stop._target_=faults.SignalAt", "+callbacks.stop.signal=SIGINT",
            "+callbacks.stop.batch=0"]  # fmt: skip
    cfg = train_cfg(*TINY_CONVNET, "logger=none", *stop)

    with pytest.raises(SystemExit) as exited:
        train(cfg)

    assert exited.value.code == 130
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT"
    assert "ckpt_path=auto" in record["resume_command"]
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt").raw["global_step"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
