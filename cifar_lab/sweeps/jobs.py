"""Multirun folders: finding their jobs, and continuing a stopped Optuna search in the same folder.

A Hydra multirun writes one folder per job under `hydra.sweep.dir`, each with the job's
overrides in `.hydra/overrides.yaml`. Hydra numbers jobs from 0 in every invocation, so running a
search again in its folder would overwrite the first jobs; `ContinueSweep` (a Hydra callback, in
`hparams_search=optuna`) numbers the new jobs after the existing ones and moves the sampler's
seed on, so the continued search neither overwrites results nor repeats its first trials.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

JOB_OVERRIDES = Path(".hydra") / "overrides.yaml"
# `hydra.sweep.subdir` of a continued sweep: the job number plus the jobs already there
OFFSET_RESOLVER = "cifar_lab.add"

OmegaConf.register_new_resolver(OFFSET_RESOLVER, lambda a, b: int(a) + int(b), replace=True)


def job_sort_key(name: str) -> tuple[int, int | str]:
    """Numbered job folders in numeric order (2 before 10), any others after them by name."""
    return (0, int(name)) if name.isdigit() else (1, name)


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Every job folder under `sweep_dir` (any depth), in job order."""
    jobs = [overrides.parent.parent for overrides in Path(sweep_dir).rglob(str(JOB_OVERRIDES))]
    return sorted(jobs, key=lambda job: job_sort_key(str(job.relative_to(sweep_dir))))


def next_job_number(sweep_dir: Path) -> int:
    """1 + the highest job number already in `sweep_dir` (0 for a new sweep)."""
    numbers = [int(job.name) for job in find_jobs(sweep_dir) if job.name.isdigit()]
    return max(numbers, default=-1) + 1


class ContinueSweep(Callback):
    """Let a multirun go on in a folder that already holds jobs (e.g. a stopped Optuna search).

    It also creates the sweep folder before the sweeper starts, since Optuna opens its sqlite
    storage there before Hydra's launcher would create it.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        offset = next_job_number(sweep_dir)
        if offset == 0:
            return
        subdir = f"hydra.sweep.subdir='${{{OFFSET_RESOLVER}:${{hydra.job.num}},{offset}}}'"
        # Each job's config is composed again from these overrides, so the subdir goes there.
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.overrides.hydra.append(subdir)
            sampler = config.hydra.sweeper.get("sampler")
            if sampler is not None and sampler.get("seed") is not None:
                sampler.seed = int(sampler.seed) + offset
        log.info("continuing the sweep in %s from job %d", sweep_dir, offset)
