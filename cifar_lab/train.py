"""`python -m cifar_lab.train`: compose the Hydra config, fit, test, write metrics.json.

python -m cifar_lab.train model=resnext50 optim=adoptw
python -m cifar_lab.train experiment=smoke data.root=/data/cifar
python -m cifar_lab.train -m model.drop_rate=0.2,0.5 loss.label_smoothing=0,0.1
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from cifar_lab.build import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_trainer,
    check_optimizer,
    check_stored_network,
    follow_class_subset,
)
from cifar_lab.cli import (
    check_command_line,
    exit_on_user_error,
    in_multirun,
    setup_run_output,
)
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import (
    RunCheckpoint,
    last_checkpoint,
    read_checkpoint,
    resolve_ckpt_path,
)
from cifar_lab.runs.rebuild import given_by_overrides, rebuild_config
from cifar_lab.runs.record import (
    FINISHED,
    RunRecord,
    refuse_to_overwrite,
    stop_signal,
)
from cifar_lab.runs.resume_state import check_training_state
from cifar_lab.speed import configure_torch
from cifar_lab.training.distributed import (
    end_process_group,
    is_global_zero,
    launch_ranks_for_this_job,
    world_size,
)
from cifar_lab.training.loggers import build_loggers, finish_wandb, wandb_run_id
from cifar_lab.training.preemption import PreemptionHandler
from cifar_lab.training.progress import training_cost

log = logging.getLogger(__spec__.name)  # the module's name, also under `python -m`


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


def last_checkpoint_path(trainer: L.Trainer, output_dir: Path) -> Path:
    """Where the every-epoch checkpoint goes: a stop on a signal saves there too."""
    for checkpoint in trainer.checkpoint_callbacks:
        if isinstance(checkpoint, ModelCheckpoint) and not checkpoint.monitor:
            return Path(checkpoint.dirpath) / f"{checkpoint.filename}{checkpoint.FILE_EXTENSION}"
    return last_checkpoint(output_dir)


def check_run_folder(cfg: DictConfig, output_dir: Path, ckpt_path: Path | None) -> None:
    """Refuse a folder that holds another run, unless this run resumes into it from one of its
    checkpoints or `overwrite=true`."""
    resuming_here = ckpt_path is not None and output_dir.resolve() in ckpt_path.resolve().parents
    if cfg.get("overwrite") or resuming_here or not is_global_zero():
        return
    refuse_to_overwrite(
        output_dir,
        holds=("checkpoints/*.ckpt",),
        fix=f"resume it (ckpt_path=auto hydra.run.dir={output_dir}), write elsewhere "
        f"(hydra.run.dir=<new folder>) or replace it (overwrite=true)",
    )


def resume_command(run_dir: Path, overrides: Sequence[str]) -> str:
    """The command line that continues this run in its folder: its overrides, ckpt_path=auto and
    the folder (`hydra.run.dir`), so `auto` finds the last.ckpt a stop saved."""
    kept = [o for o in overrides if not o.split("=")[0].lstrip("+~").startswith("ckpt_path")]
    words = ["python", "-m", "cifar_lab.train", *kept, "ckpt_path=auto", f"hydra.run.dir={run_dir}"]
    return shlex.join(words)


def check_finished_run(
    cfg: DictConfig, output_dir: Path, checkpoint: RunCheckpoint, finished: bool
) -> None:
    """Resuming a `finished` run in its folder trains only with a larger `trainer.max_epochs`;
    otherwise it would train nothing and rewrite the finished record."""
    in_place = output_dir.resolve() in checkpoint.path.resolve().parents
    if not (in_place and finished):
        return
    done = checkpoint.raw["epoch"] + 1
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is None or max_epochs == -1 or max_epochs > done:
        return
    raise CifarLabError(
        f"{output_dir} holds a finished run of {done} epochs (trainer.max_epochs={max_epochs}); "
        f"nothing to resume: to train it further give trainer.max_epochs above {done}, or start "
        f"a new run in another folder"
    )


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fit (resuming from `ckpt_path` if given), test the best weights, write metrics.json.

    A resumed run takes its data, model, augment, optim and loss settings from the checkpoint;
    of the command-line `overrides`, those that set these groups win (`runs.rebuild`). The run's
    record (`runs.record.RunRecord`) says `running` from the start and then finished, failed or
    terminated (with the resume command); SIGTERM/SIGUSR1 save last.ckpt and exit with 128 +
    the signal number.
    """
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    check_run_folder(cfg, output_dir, ckpt_path)
    if cfg.get("ckpt_path") and ckpt_path is None:
        log.info("ckpt_path=%s: no last.ckpt there yet, starting a new run", cfg.ckpt_path)
    record = RunRecord(
        output_dir,
        writes=is_global_zero(),
        resume_command=resume_command(output_dir, overrides),
    )
    end_job: Callable[[], None] = lambda: end_process_group(in_multirun())  # noqa: E731
    preemption = PreemptionHandler(last_checkpoint(output_dir)).install()
    try:
        with record, stop_notes(record, preemption):
            L.seed_everything(cfg.seed, workers=True)
            configure_torch()
            checkpoint = read_checkpoint(ckpt_path) if ckpt_path else None
            if checkpoint is not None:
                checkpoint.check_resumable()
                check_finished_run(cfg, output_dir, checkpoint, record.finished_before)
                cfg = resumed(cfg, checkpoint, overrides)
            follow_class_subset(cfg)
            run_config = OmegaConf.to_container(cfg, resolve=True)
            datamodule = build_datamodule(cfg)
            if is_global_zero():  # missing or bad data fails here, before a logger run exists
                datamodule.prepare_data()
                datamodule.load_splits()
            loggers = build_loggers(
                cfg.get("logger"), resume_wandb_id=checkpoint.wandb_id if checkpoint else None
            )
            callbacks = [*build_callbacks(cfg), preemption]
            trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
            preemption.checkpoint_path = last_checkpoint_path(trainer, output_dir)
            module = build_module(cfg, run_config, processes=world_size(trainer))
            check_optimizer(module)
            if checkpoint is not None:
                checkpoint.check_weights_fit(module.net)
                check_training_state(checkpoint, trainer, module)
            end_job = launch_ranks_for_this_job(trainer, in_multirun())
            # Other DDP ranks see a stand-in wandb run; only rank 0 saves checkpoints anyway.
            module.wandb_id = wandb_run_id(loggers) if is_global_zero() else None
            record.update({"wandb_id": module.wandb_id})
            for logger in loggers:
                logger.log_hyperparams(run_config)
            preemption.check()
            fit_start = time.perf_counter()
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=str(ckpt_path) if ckpt_path else None,
                weights_only=True,
            )
            fit_seconds = time.perf_counter() - fit_start
            preemption.check()
            record.update(run_metrics(trainer))
            record.update(training_cost(trainer, fit_seconds))
            if cfg.get("test"):
                best = record.metrics.get("best_model_path")
                trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
                record.update(
                    {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
                )
            preemption.check()
    finally:
        preemption.uninstall()
        finish_wandb(exit_code=0 if record.status == FINISHED else 1)
        end_job()
    if is_global_zero():
        log_summary(record)
    return record.metrics


@contextmanager
def stop_notes(record: RunRecord, preemption: PreemptionHandler) -> Iterator[None]:
    """On a stop by a signal, record the checkpoint the stop saved (None if it saved none)."""
    try:
        yield
    except BaseException as err:
        if stop_signal(err) is not None:
            saved = preemption.checkpoint_path
            record.update({"last_model_path": str(saved) if saved.is_file() else None})
        raise


def resumed(cfg: DictConfig, checkpoint: RunCheckpoint, overrides: Sequence[str]) -> DictConfig:
    """`cfg` rebuilt from the checkpoint's stored config, with a notice per override that
    changes the architecture."""
    cfg, notices = rebuild_config(cfg, checkpoint, given_by_overrides(cfg, overrides))
    if cfg.data.get("num_classes") != checkpoint.num_classes:
        # the network keeps the checkpoint's head; its loss and accuracy would see other labels
        raise CifarLabError(
            f"{checkpoint.path} holds a network for {checkpoint.num_classes} classes, but this "
            f"run's data ({cfg.data.get('name')}) has {cfg.data.get('num_classes')}: resume "
            f"with the data it was trained on (drop data=... from the command line), or start a "
            f"new run"
        )
    check_stored_network(cfg.model, f"checkpoint {checkpoint.path}")
    log.info(
        "resuming %s: data, model, augment, optim, loss (and adv) as stored in it, "
        "with the command line's keys of these groups on top",
        checkpoint.path,
    )
    for notice in notices:
        log.warning(notice)
    return cfg


def log_summary(record: RunRecord) -> None:
    """The last lines of a run: its headline numbers and where its files are."""
    metrics = record.metrics

    def number(key: str) -> str:
        value = metrics.get(key)
        return "-" if value is None else f"{float(value):.4f}"

    log.info(
        "best val/acc %s (val/acc_best %s): %s",
        number("best_model_score"),
        number("val/acc_best"),
        metrics.get("best_model_path") or "no best checkpoint",
    )
    if "test/acc" in metrics:
        log.info("test/acc %s, test/acc_top5 %s", number("test/acc"), number("test/acc_top5"))
    log.info("metrics in %s, log in %s", record.path, record.run_dir / "train.log")


def optimized_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The number a Hydra sweeper maximises (`optimized_metric`), as a float. A missing one
    fails the job only in a multirun, where a sweeper needs it; a single run warns."""
    if not name:
        return None
    if name not in metrics:
        message = (
            f"optimized_metric={name!r} was not logged (no validation in the last epoch?); "
            f"logged: {sorted(k for k in metrics if '/' in k)}"
        )
        if in_multirun():
            raise CifarLabError(message)
        log.warning("%s; a sweeper would need it", message)
        return None
    return float(metrics[name])


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    setup_run_output()
    with exit_on_user_error():
        metrics = train(cfg, HydraConfig.get().overrides.task)
        return optimized_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    check_command_line("train")
    main()
