"""Reliability through the real command line: atomic saves under kills, runs that never
overwrite runs, signals and preemption (see README, "Reliability")."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONVNET, tiny_data, tiny_training
from faults import run_with_fault

from cifar_lab.checkpoint import load_checkpoint
from cifar_lab.training.checkpoint_io import AtomicCheckpointIO

SHM = Path("/dev/shm")


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
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0  # the 1st one
    assert left_in_tmpdir == []
