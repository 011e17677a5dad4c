"""Lightning DDP with two CPU processes (`trainer=ddp_cpu`, gloo), as jobs of one multirun."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from support import metrics_of, run_sweep
from wandb_files import wandb_exit_code

from cifar_lab.build import build_module
from cifar_lab.runs.checkpoint import read_checkpoint

# the tests share one DDP sweep (a module fixture): one worker runs them all
pytestmark = pytest.mark.xdist_group("ddp")


@pytest.fixture(scope="module")
def ddp_sweep(
    cifar10_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """Two DDP jobs in one multirun: job 0 is refused (a bogus optimizer), job 1 trains."""
    sweep = tmp_path_factory.mktemp("ddp") / "sweep"
    result = run_sweep(
        cifar10_root, sweep, "optim.optimizer.opt=bogus,adamw",
        # learn enough that accuracy differs between the ranks' halves of the 40 held-out images
        # (the class-interleaved eval order gives each rank whole classes of an even split)
        "data.val_fraction=0.4", "augment=none", "model.drop_rate=0", "model.block_drop_rate=0",
        "optim.optimizer.lr=0.01", "optim.scheduler.warmup_epochs=0", "trainer.max_epochs=4",
        "trainer.limit_train_batches=null", "trainer.limit_val_batches=null", "test=false",
        trainer="ddp_cpu",
    )  # fmt: skip
    return sweep, result


def val_correct(checkpoint: Path) -> torch.Tensor:
    """Per-image top-1 hits of the checkpoint's weights on its val split, in one process."""
    saved = read_checkpoint(checkpoint).raw
    cfg = OmegaConf.create(saved["cifar_lab"]["config"])
    module = build_module(cfg)
    module.load_state_dict(saved["state_dict"])
    datamodule = instantiate(cfg.data, augment=cfg.augment, _convert_="all")
    datamodule.setup("validate")
    val_set = datamodule.val_set
    images, labels = zip(*(val_set[i] for i in range(len(val_set))), strict=True)
    with torch.no_grad():
        logits = module.eval()(torch.stack(images))
    return logits.argmax(dim=1) == torch.tensor(labels)


@pytest.mark.slow
def test_val_accuracy_is_over_the_whole_val_set_not_rank_0s_half(ddp_sweep) -> None:
    sweep, _ = ddp_sweep
    job = sweep / "1"

    correct = val_correct(job / "checkpoints" / "last.ckpt")  # the weights of the last val

    whole, rank0_half = correct.float().mean().item(), correct[0::2].float().mean().item()
    assert len(correct) % 2 == 0  # no padding by the DistributedSampler
    assert whole != rank0_half, "the data must tell the whole val set from rank 0's half"
    assert metrics_of(job)["val/acc"] == pytest.approx(whole, abs=1e-6)


@pytest.mark.slow
def test_checkpoints_metrics_and_wandb_are_written_once(ddp_sweep) -> None:
    sweep, _ = ddp_sweep
    job = sweep / "1"

    assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran in this job's folder
    checkpoints = sorted(path.name for path in (job / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    assert len(list(job.glob("wandb/offline-run-*"))) == 1 and wandb_exit_code(job) == 0
    metrics = metrics_of(job)
    assert metrics["status"] == "finished" and metrics["wandb_id"]
    assert "metrics written" not in (job / "train_ddp_process_1.log").read_text()


@pytest.mark.slow
def test_a_failing_ddp_job_does_not_stop_the_sweep(ddp_sweep) -> None:
    sweep, result = ddp_sweep

    assert result.returncode != 0  # Hydra reports job 0's error after running job 1
    assert sorted(path.name for path in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert (
        metrics_of(sweep / "0")["status"] == "failed"
        and "bogus" in metrics_of(sweep / "0")["error"]
    )
    assert not list((sweep / "0").glob("wandb/offline-run-*"))  # refused before any rank started
    assert metrics_of(sweep / "1")["status"] == "finished", result.stderr[-3000:]
