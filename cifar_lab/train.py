"""`python -m cifar_lab.train`: compose the Hydra config, fit, test, write metrics.json.

python -m cifar_lab.train model=resnext50 optim=adoptw
python -m cifar_lab.train experiment=smoke data.root=/data/cifar
python -m cifar_lab.train -m model.drop_rate=0.2,0.5 loss.label_smoothing=0,0.1
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cifar_lab.build import build_callbacks, build_datamodule, build_module, build_trainer
from cifar_lab.checkpoint import check_resumable, check_weights_fit, load_checkpoint, payload
from cifar_lab.cli import exit_on_user_error
from cifar_lab.errors import CifarLabError
from cifar_lab.speed import configure_torch
from cifar_lab.training.distributed import (
    end_process_group,
    is_global_zero,
    launch_ranks_for_this_job,
    world_size,
)
from cifar_lab.training.loggers import build_loggers, finish_wandb, wandb_run_id
from cifar_lab.utils import write_json

log = logging.getLogger("cifar_lab.train")


def run_metrics(trainer: L.Trainer) -> dict[str, Any]:
    """Final metrics plus where the checkpoints are: what `metrics.json` holds."""
    metrics: dict[str, Any] = dict(trainer.callback_metrics)
    for checkpoint in trainer.checkpoint_callbacks:
        if not isinstance(checkpoint, ModelCheckpoint):
            continue
        if checkpoint.monitor:
            metrics.setdefault("best_model_path", checkpoint.best_model_path or None)
            metrics.setdefault("best_model_score", checkpoint.best_model_score)
        else:  # without a monitor, the kept checkpoint is the latest one
            metrics.setdefault("last_model_path", checkpoint.best_model_path or None)
    metrics["epochs_completed"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    return metrics


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from `ckpt_path` if given), test the best weights, write metrics.json.

    metrics.json is written whatever happens, with `status` finished or failed (and the error),
    so a sweep report can tell a failed job from one still running.
    """
    output_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, Any] = {"status": "running", "run_dir": str(output_dir)}
    end_job: Callable[[], None] = end_process_group
    try:
        L.seed_everything(cfg.seed, workers=True)
        configure_torch()
        run_config = OmegaConf.to_container(cfg, resolve=True)
        datamodule = build_datamodule(cfg)
        checkpoint = load_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
        resume_id = payload(checkpoint).wandb_id if checkpoint else None
        loggers = build_loggers(cfg.get("logger"), resume_wandb_id=resume_id)
        trainer = build_trainer(
            cfg.trainer, callbacks=build_callbacks(cfg), logger=loggers or False
        )
        module = build_module(cfg, run_config, processes=world_size(trainer))
        if checkpoint is not None:
            check_resumable(checkpoint, cfg.ckpt_path)
            check_weights_fit(module.net, checkpoint, cfg.ckpt_path)
        end_job = launch_ranks_for_this_job(trainer)
        # Other DDP ranks see a stand-in wandb run; only rank 0 saves checkpoints anyway.
        module.wandb_id = wandb_run_id(loggers) if is_global_zero() else None
        metrics["wandb_id"] = module.wandb_id
        for logger in loggers:
            logger.log_hyperparams(run_config)
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
        )
        metrics.update(run_metrics(trainer))
        if cfg.get("test"):
            best = metrics.get("best_model_path")
            trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update(
                {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            )
        metrics["status"] = "finished"
    except BaseException as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        metrics.update(status="failed", error=f"{type(cause).__name__}: {cause}")
        raise
    finally:
        if is_global_zero():
            write_json(output_dir / "metrics.json", metrics)
            log.info("metrics written to %s", output_dir / "metrics.json")
        finish_wandb(exit_code=0 if metrics["status"] == "finished" else 1)
        end_job()
    return metrics


def optimized_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The number a Hydra sweeper maximises (`optimized_metric`), as a float."""
    if not name:
        return None
    if name not in metrics:
        raise CifarLabError(
            f"optimized_metric={name!r} was not logged; expected one of "
            f"{sorted(k for k in metrics if '/' in k)}"
        )
    return float(metrics[name])


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics = train(cfg)
        return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
