"""Experiment loggers from the `logger` config: wandb (offline by default) beside a CSV log.

Lightning's CSV writer deletes an existing `metrics.csv` when it starts, so a run resumed in its
own folder (`ckpt_path=auto`) would lose every row before the resume; `AppendingCSVLogger`
continues the file instead, keeping its header's columns.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing metrics.csv instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        self.metrics_keys = sorted(set(header))


class AppendingCSVLogger(CSVLogger):
    """A `CSVLogger` whose history survives a resume into the same folder."""

    @property
    @rank_zero_experiment  # as Lightning's: other DDP ranks get a stand-in
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(
    logger_cfg: Mapping[str, Any] | None, resume_wandb_id: str | None = None
) -> list[Logger]:
    """One Lightning logger per entry of `logger_cfg`; a wandb run resumes when its id is known."""
    loggers: list[Logger] = []
    for name, spec in (logger_cfg or {}).items():
        if not spec or "_target_" not in spec:
            continue
        overrides: dict[str, Any] = {}
        if name == "wandb" and resume_wandb_id and not spec.get("id"):
            overrides = {"id": resume_wandb_id, "resume": "allow"}
        if name == "wandb" and "settings" not in spec:
            # no history/summary tables at the end of every run: the run's last lines say
            # where its metrics are (+logger.wandb.settings.quiet=false brings them back)
            import wandb

            overrides["settings"] = wandb.Settings(quiet=True)
        logger = instantiate(spec, **overrides)
        if isinstance(logger, WandbLogger):
            # Lightning always passes `anonymous`, which wandb >= 0.19 warns has no effect.
            logger._wandb_init.pop("anonymous", None)
        loggers.append(logger)
    return loggers


def wandb_run_id(loggers: list[Logger]) -> str | None:
    """The id of the wandb run among `loggers` (starting it), so a checkpoint can resume it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment.id
    return None


def finish_wandb(exit_code: int = 0) -> None:
    """Close the wandb run, failed or not, so the next job of a multirun starts a new one."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)
