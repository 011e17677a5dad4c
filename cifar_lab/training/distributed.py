"""What `train` does itself when Lightning's DDP runs it in several processes.

Lightning already syncs torchmetrics over the ranks and writes checkpoints and logger files from
rank 0 alone. Left to us: metrics.json from rank 0, the global batch for lr scaling, and the case
Lightning's launcher gets wrong: it starts the other ranks by re-running `sys.argv`, which inside
a Hydra multirun is the whole sweep (each rank would start the sweep again).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf, read_write

# what Lightning's launcher sets in the launching process for the ranks it starts
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# how long the other ranks of a finished multirun job may take to exit before they are killed
RANK_EXIT_GRACE_S = 120


def is_global_zero() -> bool:
    """Whether this process writes the run's own files: Lightning's rank, read from the launcher's
    environment at start and from the process group once DDP is set up."""
    return rank_zero_only.rank == 0


def world_size(trainer: L.Trainer) -> int:
    """How many processes share each optimizer step (devices x nodes), known before `fit`."""
    return trainer.num_devices * trainer.num_nodes


def launches_ranks_from_argv(trainer: L.Trainer) -> bool:
    """True when Lightning will start the other ranks itself by re-running the command line
    (not under SLURM or torchrun, which start every rank themselves)."""
    return isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher)


def launch_ranks_for_this_job(trainer: L.Trainer, multirun: bool) -> Callable[[], None]:
    """Inside a multirun (the entry point says whether it is one), make Lightning's rank
    launcher re-run this job alone (its overrides, in run mode, writing into its folder);
    returns what to call when the job ends, so the next job of the sweep starts its own ranks."""
    if not (multirun and launches_ranks_from_argv(trainer) and world_size(trainer) > 1):
        return lambda: end_process_group(multirun)
    hydra_cfg = HydraConfig.get()
    hydra_overrides = [
        override
        for override in OmegaConf.to_container(hydra_cfg.overrides.hydra, resolve=False)
        if not override.startswith("hydra.mode=")
    ]
    task_overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    launcher = trainer.strategy.launcher
    saved_argv, saved_env = sys.argv, {name: os.environ.get(name) for name in LAUNCHER_ENV}
    sys.argv = [sys.argv[0], *hydra_overrides, *task_overrides, "hydra.mode=RUN"]
    # Lightning passes `hydra.run.dir` to the ranks; in a multirun the job's folder is elsewhere.
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir

    def end_job() -> None:
        end_process_group(multirun)
        # Lightning's observer thread kills this process (the whole sweep) when a rank it started
        # exits non-zero. The job is over: take its ranks off that list and end them here.
        ranks = list(launcher.procs)
        launcher.procs.clear()
        for rank in ranks:
            try:
                rank.wait(timeout=RANK_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                rank.kill()
                rank.wait()
        sys.argv = saved_argv
        # The launcher leaves LOCAL_RANK etc. set, which would tell the next job's Trainer that
        # its ranks were already started by someone else.
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return end_job


def end_process_group(multirun: bool) -> None:
    """Close this job's process group so the next job of a multirun can open its own (Lightning
    only closes it when the process exits)."""
    if multirun and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
