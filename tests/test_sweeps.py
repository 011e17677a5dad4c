"""Multiruns through the real command line: a grid, a failing job, an Optuna search that stops
and continues, and the launcher configs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from support import compose_config, metrics_of, run_sweep, run_train
from wandb_files import wandb_exit_code

from cifar_lab.sweeps.jobs import ContinueSweep, find_jobs, next_job_number
from cifar_lab.sweeps.sweep_report import write_sweep_report


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """The train config with its `hydra` node, as a multirun's launcher and callbacks see it."""
    return compose_config("train", overrides, return_hydra_config=True)


def job_order(rows_text: str) -> list[str]:
    """The job column of the report's markdown table, top to bottom."""
    lines = [line for line in rows_text.splitlines() if line.startswith("|")][2:]
    return [line.strip("|").split("|")[1].strip() for line in lines]


# --- fast: the continuation bookkeeping --------------------------------------------------
def test_next_job_number_follows_the_highest_job(tmp_path: Path) -> None:
    for name in ["0", "1", "10"]:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("[]\n")

    assert [job.name for job in find_jobs(tmp_path)] == ["0", "1", "10"]
    assert next_job_number(tmp_path) == 11
    assert next_job_number(tmp_path / "empty") == 0


def test_continuing_a_sweep_renumbers_its_jobs_and_moves_the_seed(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text("[]\n")
    cfg = compose_with_hydra(["hparams_search=optuna", f"hydra.sweep.dir={tmp_path}"])
    seed = cfg.hydra.sweeper.sampler.seed

    ContinueSweep().on_multirun_start(cfg)

    assert cfg.hydra.sweeper.sampler.seed == seed + 1
    added = OmegaConf.to_container(cfg.hydra.overrides.hydra)[-1]
    override = OverridesParser.create().parse_override(added)
    assert override.key_or_group == "hydra.sweep.subdir"
    job = OmegaConf.create({"hydra": {"job": {"num": 2}, "sweep": {"subdir": override.value()}}})
    assert job.hydra.sweep.subdir == 3  # job 2 of this run goes after the existing job 0


# --- slow: the real command line ---------------------------------------------------------
@pytest.mark.slow
def test_a_grid_runs_every_job_and_the_report_ranks_them(
    cifar10_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "grid"
    result = run_sweep(cifar10_root, sweep, "model.drop_rate=0.2,0.5", "loss.label_smoothing=0,0.1")

    assert result.returncode == 0, result.stderr[-3000:]
    jobs = find_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    assert all(metrics_of(job)["status"] == "finished" for job in jobs)
    assert len({metrics_of(job)["wandb_id"] for job in jobs}) == 4
    assert all(wandb_exit_code(job) == 0 for job in jobs)
    acc = {job.name: metrics_of(job)["val/acc_best"] for job in jobs}
    loss = {job.name: metrics_of(job)["val/loss"] for job in jobs}
    by_acc = write_sweep_report(
        sweep
    )  # the sweep's optimized_metric, highest first; ties in job order
    assert job_order(by_acc) == sorted(acc, key=lambda name: -acc[name]), acc
    by_loss = write_sweep_report(sweep, metric="val/loss", mode="min")
    assert job_order(by_loss) == sorted(loss, key=loss.get), loss
    assert "model.drop_rate" in by_acc and "loss.label_smoothing" in by_acc


@pytest.mark.slow
def test_a_job_that_is_refused_records_it_and_the_others_still_run(
    cifar10_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "failing"
    result = run_sweep(cifar10_root, sweep, "optim.optimizer.opt=bogus,adamw")

    assert result.returncode != 0  # Hydra reports the failed job once the others are done
    failed, finished = sweep / "0", sweep / "1"
    assert metrics_of(failed)["status"] == "failed" and "bogus" in metrics_of(failed)["error"]
    # the optimizer is built before the logger starts, so the refused job leaves no wandb run
    assert not list(failed.glob("wandb/offline-run-*"))
    assert metrics_of(finished)["status"] == "finished"
    assert wandb_exit_code(finished) == 0
    assert (finished / "checkpoints" / "best.ckpt").is_file()
    assert job_order(write_sweep_report(sweep)) == ["1", "0"]


@pytest.mark.slow
def test_an_optuna_search_stops_and_continues_from_its_storage(
    cifar10_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "search"

    search = [cifar10_root, sweep, "hparams_search=optuna"]
    first = run_sweep(*search, "hydra.sweeper.n_trials=2", flag=False)
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_sweep(*search, "hydra.sweeper.n_trials=1", flag=False)
    assert more.returncode == 0, more.stderr[-3000:]

    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = sorted(study.trials, key=lambda trial: trial.number)
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    jobs = find_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2"]
    for trial, job in zip(trials, jobs, strict=True):
        assert trial.value == pytest.approx(metrics_of(job)["val/acc_best"])  # what main returned
        assert (
            f"model.drop_rate={trial.params['model.drop_rate']}"
            in (job / ".hydra" / "overrides.yaml").read_text()
        )
    assert trials[2].params != trials[0].params  # the continued search does not replay its seed
    assert len(job_order(write_sweep_report(sweep))) == 3


@pytest.mark.slow
def test_cfg_hydra_composes_the_slurm_launcher(tmp_path: Path) -> None:
    result = run_train("hydra/launcher=slurm", "trainer=ddp", "--cfg", "hydra", cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in (
        result.stdout
    )
    assert "tasks_per_node: ${trainer.devices}" in result.stdout


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_resources_follow_the_trainer(launcher: str) -> None:
    cfg = compose_with_hydra(
        [f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"]
    )

    assert cfg.hydra.launcher.gpus_per_node == 8
    expected_tasks = 8 if launcher == "slurm" else 1  # locally Lightning starts the ranks
    assert cfg.hydra.launcher.tasks_per_node == expected_tasks
    assert cfg.hydra.launcher.nodes == (2 if launcher == "slurm" else 1)
