"""`python -m cifar_lab.predict ckpt=...`: score a checkpoint on clean and corrupted CIFAR.

    python -m cifar_lab.predict ckpt=outputs/smoke/runs/<run>/checkpoints/best.ckpt
    python -m cifar_lab.predict ckpt=... tta=shift ood=leaderboard ood.download=true
    python -m cifar_lab.predict ckpt=... tta=flip_shift ood=cifar100c data.root=/data
    python -m cifar_lab.predict ckpt=... attack=pgd attack.eps=[0,2,4,8]

    python -m cifar_lab.predict ckpt=... detect=standard            # OOD detection (README)

The model, data and preprocessing come from the training config stored in the checkpoint;
`data.*` (and `+model.*`, `+augment.*`) given here override it. One `Trainer.predict` call
scores the clean test split, every OOD file the datamodule serves, the OOD detection sets and
the training images the temperature and the feature detectors are fitted on (ODIN, which needs
input gradients, has a pass of its own); then metrics.json, the per-class CSV, the confusion
matrix, calibration and selective prediction, the OOD set's CSVs/plots and the OOD detection
report are written into the run dir.
With `attack=`, a class-balanced subset of the clean split is then attacked
(`cifar_lab.attacks.robustness`: `adv/<attack>/...` metrics and files).
"""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_lab.attacks.robustness import plan_attack, run_attack
from cifar_lab.build import (
    build_attack,
    build_datamodule,
    build_module,
    build_ood,
    build_trainer,
    build_tta,
    check_stored_network,
)
from cifar_lab.cli import check_command_line, exit_on_user_error, setup_run_output
from cifar_lab.data.datamodule import CLEAN_SET, CIFARDataModule, check_img_size
from cifar_lab.data.ood import CorruptionSet, LeaderboardSet
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.detection import detection_summary
from cifar_lab.evaluation.evaluate import (
    evaluate_clean,
    evaluate_corruptions,
    evaluate_leaderboard,
)
from cifar_lab.evaluation.extras import (
    FIT_SET,
    Extras,
    plan_extras,
    run_detection,
    score_uncertainty,
)
from cifar_lab.evaluation.scoring import score_sets
from cifar_lab.evaluation.tables import read_severity_table
from cifar_lab.evaluation.uncertainty import uncertainty_summary
from cifar_lab.memory import peak_rss_mib
from cifar_lab.runs.checkpoint import RunCheckpoint, read_checkpoint
from cifar_lab.runs.rebuild import given_by_settings, rebuild_config
from cifar_lab.runs.record import RunRecord, refuse_to_overwrite

log = logging.getLogger(__spec__.name)  # the module's name, also under `python -m`

OVERRIDABLE = ("data", "model", "augment")


def run_config(checkpoint: RunCheckpoint, cfg: DictConfig) -> DictConfig:
    """The checkpoint's training config rebuilt (`runs.rebuild`: cifar-lab's own objects only,
    pretrained weights off, where data lives and whether to download or MD5-check it from this
    command line or predict's defaults), with this run's non-null `data`/`model`/`augment` keys
    on top; torch.compile is off unless asked for here."""
    merged, notices = rebuild_config(cfg, checkpoint, given_by_settings(cfg, OVERRIDABLE))
    check_stored_network(merged.model, f"checkpoint {checkpoint.path}")
    for notice in notices:
        log.warning(notice)
    if merged.model.get("compile") and "compile" not in (cfg.get("model") or {}):
        # scoring is short and TTA changes the batch shape: compiling would cost more than it saves
        merged.model.compile = False
    return merged


def check_classes(ckpt: str, ckpt_classes: int, data_classes: int, what: str) -> None:
    if ckpt_classes != data_classes:
        raise CifarLabError(
            f"checkpoint {ckpt} predicts {ckpt_classes} classes but {what} has {data_classes}; "
            f"score a checkpoint trained on the matching CIFAR (cifar10c needs a CIFAR-10 one)"
        )


def prepare(cfg: DictConfig) -> tuple[Any, CIFARDataModule, dict[str, Any]]:
    """The module (checkpoint weights, TTA) and the datamodule that serves what is scored, with
    every file checked before anything is scored; plus the first metrics."""
    checkpoint = read_checkpoint(cfg.ckpt)
    ckpt_classes = checkpoint.num_classes
    ood = build_ood(cfg.get("ood"))
    if ood is None and not cfg.clean:
        raise CifarLabError(
            "clean=false with ood=none leaves nothing to score; drop clean=false, or add "
            "ood=cifar100c, ood=cifar10c or ood=leaderboard"
        )
    if isinstance(ood, CorruptionSet):
        check_classes(cfg.ckpt, ckpt_classes, ood.num_classes, f"ood={ood.name}")
        if ood.reference_csv is not None:  # a bad reference fails before scoring
            reference = read_severity_table(ood.reference_csv)
            if not set(reference) & set(ood.corruptions):
                raise CifarLabError(
                    f"ood.reference_csv={ood.reference_csv} names none of the corruptions scored "
                    f"({', '.join(ood.corruptions[:4])}, ...), so no mCE could be computed; it "
                    f"lists {', '.join(list(reference)[:4]) or 'nothing'}: give the reference "
                    f"model's ood_accuracy.csv on the same set"
                )
    run_cfg = run_config(checkpoint, cfg)
    tta = build_tta(cfg.tta)
    check_img_size(run_cfg.data.img_size)
    if tta is not None:
        tta.check_fits(int(run_cfg.data.img_size))
    module = build_module(run_cfg, OmegaConf.to_container(run_cfg), tta=tta)
    checkpoint.load_net_weights(module.net)
    datamodule = build_datamodule(run_cfg, ood=ood, predict_clean=bool(cfg.clean))
    # Missing or malformed files (the clean split, OOD images, labels) fail here.
    datamodule.load_predict_sets()
    if cfg.clean:
        where = f"{datamodule.hparams.name} in {datamodule.root}"
        check_classes(cfg.ckpt, ckpt_classes, len(datamodule.classes), where)
    metrics = {
        "tta": tta.name if tta else "none",
        "tta/views": tta.num_views if tta else 1,
        "ood": ood.name if ood else None,
    }
    return module, datamodule, metrics


def prepare_extras(cfg: DictConfig, module: Any, datamodule: CIFARDataModule) -> Extras:
    """What this run scores beyond the test split and the `ood` set (temperature scaling, OOD
    detection), checked and read before anything is scored."""
    temperature = (cfg.get("calibration") or {}).get("temperature", "auto")
    return plan_extras(module, datamodule, bool(cfg.clean), temperature, cfg.get("detect"))


def score(
    cfg: DictConfig,
    module: Any,
    datamodule: CIFARDataModule,
    out_dir: Path,
    extras: Extras | None = None,
) -> dict:
    """One `Trainer.predict` over every predict set (and the `extras`' training images), then
    each set's metrics and reports."""
    extras = extras or Extras()
    scored = score_sets(
        module,
        datamodule,
        lambda callbacks: build_trainer(cfg.trainer, callbacks=callbacks),
        extra=extras.extra_sets,
        keep=extras.keep(),
    )
    aside = {s.name: scored.pop(s.name) for s in extras.extra_sets}
    detection = {s.name: scored.pop(s.name) for s in extras.detection_sets}
    metrics: dict[str, Any] = {}
    clean = None
    ckpt = Path(cfg.ckpt)
    caption = f"{ckpt.parent.parent.name}/{ckpt.name}, tta={cfg.tta.get('name') or 'none'}"
    if CLEAN_SET in scored and cfg.clean:
        clean_set, (clean_scores,) = scored.pop(CLEAN_SET)
        clean = (clean_scores, clean_set.labels)
        metrics.update(evaluate_clean(clean_scores, clean_set.labels, datamodule.classes, out_dir))
        metrics.update(score_uncertainty(extras, clean_set, clean_scores, aside, out_dir, caption))
        if extras.detectors is not None:
            fit = aside[FIT_SET][1][0] if FIT_SET in aside else None
            metrics.update(
                run_detection(
                    module,
                    datamodule,
                    extras,
                    (clean_set, clean_scores),
                    detection,
                    fit,
                    lambda callbacks: build_trainer(
                        cfg.trainer, callbacks=callbacks, inference_mode=False
                    ),
                    out_dir,
                    caption,
                )
            )
    ood = datamodule.ood
    if isinstance(ood, CorruptionSet):
        metrics.update(
            evaluate_corruptions(ood, scored, out_dir, clean, datamodule.augment, caption)
        )
    elif isinstance(ood, LeaderboardSet):
        metrics.update(evaluate_leaderboard(ood, scored, out_dir, caption))
    return metrics


def log_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    """The last lines: clean top-1/top-5, calibration and selective prediction, the OOD means,
    the best OOD detector and its files, the submission file, the run folder."""
    if "clean/acc" in metrics:
        top5 = metrics.get("clean/acc_top5")
        log.info(
            "clean/acc %.4f%s",
            metrics["clean/acc"],
            "" if top5 is None else f", clean/acc_top5 {top5:.4f}",
        )
    means = {  # ood/acc/mean_benchmark, ood/acc/mean_all, ood/confidence/mean_all, ood/mce
        key: value
        for key, value in metrics.items()
        if re.fullmatch(r"ood/\w+/mean_\w+|ood/mce", key)
    }
    for line in uncertainty_summary(metrics):
        log.info(line)
    if means:
        log.info(", ".join(f"{key} {value:.4f}" for key, value in means.items()))
    for line in detection_summary(metrics, out_dir):
        log.info(line)
    if (out_dir / "submission_ood.csv").is_file():
        log.info("submission: %s", out_dir / "submission_ood.csv")
    log.info("metrics and reports in %s", out_dir)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Score the checkpoint on the clean test split (`clean`) and the `ood` set; metrics.json.
    SIGTERM stops it (`terminated`, exit 143), as Ctrl-C does (`interrupted`, exit 130)."""
    out_dir = Path(cfg.paths.output_dir)
    if not cfg.get("overwrite"):
        refuse_to_overwrite(
            out_dir,
            holds=("*.csv",),
            fix="write elsewhere (hydra.run.dir=<new folder>) or replace it (overwrite=true)",
        )
    record = RunRecord(out_dir, ckpt=str(cfg.ckpt), stop_signals=(signal.SIGTERM,))
    with record:
        try:
            attack = build_attack(cfg.get("attack"))
            module, datamodule, first = prepare(cfg)
            plan = None
            if attack is not None:
                plan = plan_attack(
                    attack, module, datamodule, cfg.trainer.accelerator, first["tta"]
                )
            extras = prepare_extras(cfg, module, datamodule)
            record.update(first)
            record.update(score(cfg, module, datamodule, out_dir, extras))
            if plan is not None:
                record.update(run_attack(plan, out_dir))
        finally:
            record.update({"peak_rss_mib": peak_rss_mib()})
    log_summary(record.metrics, out_dir)
    return record.metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    setup_run_output()
    with exit_on_user_error():
        if OmegaConf.is_missing(cfg, "ckpt"):
            raise CifarLabError(
                "no checkpoint given: add ckpt=outputs/<task>/runs/<run>/checkpoints/best.ckpt "
                "(a best.ckpt or last.ckpt written by cifar_lab.train)"
            )
        predict(cfg)


if __name__ == "__main__":
    check_command_line("predict")
    main()
