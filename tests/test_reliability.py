"""Reliability through the real command line: atomic saves under kills, runs that never
overwrite runs, signals and preemption (see README, "Reliability")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from faults import TESTS, run_with_fault
from omegaconf import DictConfig
from support import (
    TINY_CONVNET,
    compose_config,
    compose_train,
    run_module,
    tiny_data,
    tiny_training,
)

from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_json
from cifar_lab.predict import predict
from cifar_lab.runs.checkpoint import read_checkpoint, resolve_ckpt_path
from cifar_lab.runs.record import refuse_to_overwrite, run_state, running_status
from cifar_lab.runs.saving import AtomicCheckpointIO
from cifar_lab.sweeps.sweep_report import read_job
from cifar_lab.train import train

SHM = Path("/dev/shm")


def compose_predict(*overrides: str) -> DictConfig:
    return compose_config("predict", list(overrides))


# --- atomic saves ---------------------------------------------------------------------------
def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, target)
    (tmp_path / ".last.ckpt.killed.tmp").write_bytes(b"left by a SIGKILL")

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2}, target)

    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (a RAM disk) as another filesystem")
def test_a_save_killed_with_tmpdir_on_another_filesystem_leaves_a_loadable_last_ckpt(
    cifar100_root: Path, tmp_path: Path
) -> None:
    tmpdir = SHM / f"cifar-lab-test-{uuid.uuid4().hex[:8]}"
    tmpdir.mkdir()
    run = tmp_path / "run"
    try:
        result = run_with_fault(
            'kill_while_writing("last.ckpt", nth=2)',
            "cifar_lab.train",
            *tiny_data(cifar100_root),
            *tiny_training(),
            *TINY_CONVNET,
            "trainer.max_epochs=2",
            "logger=none",
            f"hydra.run.dir={run}",
            cwd=tmp_path,
            env={"TMPDIR": str(tmpdir)},
        )
        left_in_tmpdir = [p.name for p in tmpdir.rglob("*") if "ckpt" in p.name]
    finally:
        for p in sorted(tmpdir.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        tmpdir.rmdir()

    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]  # killed in the 2nd save
    assert read_checkpoint(run / "checkpoints" / "last.ckpt").raw["epoch"] == 0  # the 1st one
    assert left_in_tmpdir == []


# --- runs never overwrite runs --------------------------------------------------------------
def finished_run(train_cfg, *overrides: str) -> tuple[DictConfig, Path]:
    cfg = train_cfg(*TINY_CONVNET, "logger=none", "test=false", *overrides)
    train(cfg)
    return cfg, Path(cfg.paths.output_dir)


@pytest.mark.slow
def test_a_second_train_into_a_finished_runs_folder_exits_non_zero_and_keeps_it(
    train_cfg, cifar100_root: Path, tmp_path: Path
) -> None:
    _, run = finished_run(train_cfg)
    best, metrics = (run / "checkpoints" / "best.ckpt").read_bytes(), (run / "metrics.json")
    before = metrics.read_text()
    records = run / ".hydra" / "overrides.yaml"  # what Hydra wrote for the first run
    records.parent.mkdir()
    records.write_text("- model.widths=[8,8,16,16,16]\n")

    result = run_module(
        "cifar_lab.train", *tiny_data(cifar100_root), *tiny_training(), *TINY_CONVNET,
        "logger=none", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip

    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and f"{run} already holds a run" in errors[0], result.stderr[-2000:]
    assert "overwrite=true" in errors[0] and "ckpt_path=auto" in errors[0]
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == best
    assert metrics.read_text() == before
    assert records.read_text() == "- model.widths=[8,8,16,16,16]\n"  # its records kept
    assert len(list(run.glob(".hydra-*/overrides.yaml"))) == 1  # the refused run's beside them


def test_a_run_may_resume_into_its_own_folder_or_overwrite_it_when_asked(train_cfg) -> None:
    cfg, run = finished_run(train_cfg)

    resumed = train(train_cfg(*TINY_CONVNET, "logger=none", "test=false", "ckpt_path=auto",
                              "trainer.max_epochs=2"))  # fmt: skip
    replaced = train(train_cfg(*TINY_CONVNET, "logger=none", "test=false", "overwrite=true"))

    assert resumed["epochs_completed"] == 2 and replaced["epochs_completed"] == 1
    with pytest.raises(CifarLabError, match="already holds a run"):
        train(cfg)


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path: Path) -> None:
    args = [f"data.root={tmp_path / 'nowhere'}", "data.download=false", "logger=none"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    runs = [
        subprocess.Popen([sys.executable, "-m", "cifar_lab.train", *args], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for run in runs:
        assert run.wait(timeout=300) == 1 and "not found" in run.stderr.read()

    folders = sorted(tmp_path.glob("outputs/train/runs/*/metrics.json"))
    assert len(folders) == 2, folders
    names = [f.parent.name for f in folders]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", name) for name in names)


def test_predict_refuses_a_folder_holding_earlier_predictions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_class_accuracy.csv").write_text("class,accuracy\n")

    with pytest.raises(CifarLabError, match=r"already holds a run \(per_class_accuracy.csv\)"):
        predict(compose_predict(f"ckpt={tmp_path / 'any.ckpt'}", f"paths.output_dir={out}"))
    assert [p.name for p in out.iterdir()] == ["per_class_accuracy.csv"]


def test_a_folder_of_a_live_or_dead_run_is_told_apart(tmp_path: Path) -> None:
    live = {**running_status("now")}
    dead = {**live, "pid": dead_pid()}

    assert run_state(live) == "running" and run_state(dead) == "killed"
    assert run_state({**dead, "host": "another-host"}) == "running"  # cannot tell from here
    write_json(tmp_path / "metrics.json", live)
    with pytest.raises(CifarLabError, match=r"metrics.json \(running\)"):
        refuse_to_overwrite(tmp_path, holds=(), fix="")
    write_json(tmp_path / "metrics.json", dead)
    refuse_to_overwrite(tmp_path, holds=(), fix="")  # a dead run's folder may be reused


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- ckpt_path=auto -------------------------------------------------------------------------
def test_ckpt_path_auto_and_a_folder_find_the_newest_last_ckpt(tmp_path: Path) -> None:
    older, newer = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    for folder, mtime in ((older, 1_000_000), (newer, 2_000_000)):
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"")
        os.utime(folder / "last.ckpt", (mtime, mtime))

    assert resolve_ckpt_path("auto", tmp_path / "a") == older / "last.ckpt"
    assert resolve_ckpt_path(str(tmp_path), tmp_path / "new") == newer / "last.ckpt"
    assert resolve_ckpt_path("auto", tmp_path / "new") is None  # a first start
    assert resolve_ckpt_path(None, tmp_path) is None


# --- signals and preemption -----------------------------------------------------------------
def test_sigusr1_mid_epoch_saves_a_checkpoint_and_marks_the_run_terminated(train_cfg) -> None:
    stop = ["+callbacks.stop._target_=faults.SignalAt", "+callbacks.stop.signal=SIGUSR1",
            "+callbacks.stop.batch=0"]  # fmt: skip
    cfg = train_cfg(*TINY_CONVNET, "logger=none", *stop)
    run = Path(cfg.paths.output_dir)

    with pytest.raises(SystemExit) as exited:
        train(cfg)

    assert exited.value.code == 128 + signal.SIGUSR1
    assert read_checkpoint(run / "checkpoints" / "last.ckpt").raw["global_step"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "terminated" and metrics["signal"] == "SIGUSR1"
    assert metrics["pid"] == os.getpid() and metrics["start_time"]
    assert f"ckpt_path=auto hydra.run.dir={run}" in metrics["resume_command"]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers put back
    resumed = train(train_cfg(*TINY_CONVNET, "logger=none", "ckpt_path=auto"))  # mid-epoch state
    assert resumed["status"] == "finished" and resumed["epochs_completed"] == 1


@pytest.mark.slow
def test_sigterm_exits_143_and_the_same_command_line_resumes_to_the_uninterrupted_weights(
    train_cfg, cifar100_root: Path, tmp_path: Path
) -> None:
    common = [*tiny_data(cifar100_root), *tiny_training(), *TINY_CONVNET, "logger=none",
              "test=false", "trainer.max_epochs=2"]  # fmt: skip
    run = tmp_path / "requeued"
    requeue = [*common, "ckpt_path=auto", f"hydra.run.dir={run}",
               "+callbacks.stop._target_=faults.SignalAt", "+callbacks.stop.epoch=0"]  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}

    first = run_module("cifar_lab.train", *requeue, cwd=tmp_path, env=env)
    stopped = json.loads((run / "metrics.json").read_text())
    second = run_module("cifar_lab.train", *requeue, cwd=tmp_path, env=env)
    full = train(compose_train([*common, f"paths.output_dir={tmp_path / 'full'}"]))

    assert first.returncode == 143, first.stderr[-2000:]
    assert stopped["status"] == "terminated" and stopped["signal"] == "SIGTERM"
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["status"] == "finished" and resumed["global_step"] == full["global_step"] == 4
    full_weights = read_checkpoint(full["last_model_path"]).state_dict
    resumed_weights = read_checkpoint(run / "checkpoints" / "last.ckpt").state_dict
    for name, tensor in full_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name


def test_report_shows_a_dead_running_job_as_killed(tmp_path: Path) -> None:
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    write_json(job / "metrics.json", {**running_status("now"), "pid": dead_pid()})

    (read,) = [read_job(job, tmp_path, "val/acc_best")]

    assert read.status == "killed" and "is gone" in read.note
