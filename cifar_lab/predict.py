"""`python -m cifar_lab.predict ckpt=...`: score a checkpoint on clean and corrupted CIFAR.

    python -m cifar_lab.predict ckpt=outputs/smoke/runs/<run>/checkpoints/best.ckpt
    python -m cifar_lab.predict ckpt=... tta=shift ood=leaderboard ood.download=true
    python -m cifar_lab.predict ckpt=... tta=flip_shift ood=cifar100c data.root=/data

The model, data and preprocessing come from the training config stored in the checkpoint;
`data.*` (and `+model.*`, `+augment.*`) given here override it. Writes metrics.json, the
per-class CSV, the confusion matrix and the OOD set's CSVs/plots into the run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cifar_lab.benchmarks.timing import peak_rss_mib
from cifar_lab.checkpoint import load_checkpoint
from cifar_lab.cli import exit_on_user_error, write_json
from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.datasets import load_cifar
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.evaluate import evaluate_clean, evaluate_corruptions, evaluate_leaderboard
from cifar_lab.evaluation.ood import CorruptionSet, LeaderboardSet
from cifar_lab.evaluation.scoring import Scorer
from cifar_lab.evaluation.tta import TestTimeAugmentation
from cifar_lab.models.classifier import CHECKPOINT_KEY, CIFARClassifier
from cifar_lab.train import build_datamodule, build_module, resolve_precision

log = logging.getLogger("cifar_lab.predict")

OVERRIDABLE = ("data", "model", "augment")


def run_config(checkpoint: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The checkpoint's training config with this run's non-null `data`/`model`/`augment` keys
    on top; pretrained weights are switched off (the checkpoint holds the trained ones), and so
    is torch.compile unless asked for here."""
    stored = checkpoint[CHECKPOINT_KEY].get("config") or {}
    missing = [group for group in OVERRIDABLE if group not in stored]
    if missing:
        raise CifarLabError(
            f"checkpoint {cfg.ckpt} stores no training config for {missing}; expected a .ckpt "
            f"written by cifar_lab.train, which keeps the resolved config in it"
        )
    merged = OmegaConf.create(stored)
    for group in OVERRIDABLE:
        given = OmegaConf.to_container(cfg.get(group) or OmegaConf.create(), resolve=True)
        merged[group] = OmegaConf.merge(
            merged[group], {k: v for k, v in given.items() if v is not None}
        )
    if "pretrained" in merged.model:
        merged.model.pretrained = False
    if merged.model.get("compile") and "compile" not in (cfg.get("model") or {}):
        # scoring is short and TTA changes the batch shape: compiling would cost more than it saves
        merged.model.compile = False
    return merged


def build_eval_module(
    checkpoint: dict[str, Any], run_cfg: DictConfig, tta: TestTimeAugmentation, ckpt: str
) -> CIFARClassifier:
    """The LightningModule as trained, with the checkpoint's weights (`net.*`) and `tta`."""
    module = build_module(run_cfg, OmegaConf.to_container(run_cfg))
    weights = {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    try:
        module.net.load_state_dict(weights)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CifarLabError(
            f"the weights in {ckpt} do not fit the model its config builds ({detail}); "
            f"drop model overrides that change the architecture"
        ) from err
    module.tta = tta
    return module


def check_classes(ckpt: str, ckpt_classes: int, data_classes: int, what: str) -> None:
    if ckpt_classes != data_classes:
        raise CifarLabError(
            f"checkpoint {ckpt} predicts {ckpt_classes} classes but {what} has {data_classes}; "
            f"score a checkpoint trained on the matching CIFAR (cifar10c needs a CIFAR-10 one)"
        )


def build_scorer(cfg: DictConfig, checkpoint: dict[str, Any]) -> tuple[Scorer, CIFARDataModule]:
    """The scorer `predict` uses (model, TTA, eval preprocessing, Trainer) and the datamodule
    it takes the preprocessing and loader settings from."""
    run_cfg = run_config(checkpoint, cfg)
    module = build_eval_module(checkpoint, run_cfg, instantiate(cfg.tta), cfg.ckpt)
    datamodule: CIFARDataModule = build_datamodule(run_cfg)
    precision = resolve_precision(cfg.trainer.precision)
    trainer: L.Trainer = instantiate(cfg.trainer, precision=precision)
    hp = datamodule.hparams
    scorer = Scorer(
        module,
        datamodule.eval_transform(),
        trainer,
        batch_size=hp.eval_batch_size or hp.batch_size,
        num_workers=datamodule.num_workers,
    )
    return scorer, datamodule


def build_ood(cfg: DictConfig) -> LeaderboardSet | CorruptionSet | None:
    return instantiate(cfg.ood) if cfg.get("ood") and cfg.ood.get("_target_") else None


def evaluate_test_split(
    cfg: DictConfig, scorer: Scorer, datamodule: CIFARDataModule, ckpt_classes: int, out_dir: Path
) -> dict[str, float]:
    """The clean test split of the checkpoint's dataset, read as the datamodule reads it."""
    hp = datamodule.hparams
    test = load_cifar(hp.name, datamodule.root, False, hp.download, hp.check_integrity)
    check_classes(cfg.ckpt, ckpt_classes, len(test.classes), f"{hp.name} in {datamodule.root}")
    return evaluate_clean(scorer, test.images, test.labels, test.classes, out_dir)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Score the checkpoint on the clean test split (`clean`) and the `ood` set; metrics.json."""
    out_dir = Path(cfg.paths.output_dir)
    progress = bool(cfg.trainer.get("enable_progress_bar", True))
    metrics: dict[str, Any] = {"status": "running", "run_dir": str(out_dir), "ckpt": str(cfg.ckpt)}
    try:
        checkpoint = load_checkpoint(cfg.ckpt)
        ckpt_classes = int(checkpoint[CHECKPOINT_KEY]["num_classes"])
        ood = build_ood(cfg)
        if isinstance(ood, CorruptionSet):
            check_classes(cfg.ckpt, ckpt_classes, ood.num_classes, f"ood={ood.name}")
        scorer, datamodule = build_scorer(cfg, checkpoint)
        tta = scorer.module.tta
        metrics.update({"tta": tta.name, "tta/views": tta.num_views, "ood": ood and ood.name})
        # Missing or malformed OOD files fail here, before anything is scored.
        ood_files = ood.files() if ood else []
        ood_labels = ood.labels(ood_files) if isinstance(ood, CorruptionSet) else None
        if cfg.clean:
            metrics.update(evaluate_test_split(cfg, scorer, datamodule, ckpt_classes, out_dir))
        if isinstance(ood, CorruptionSet):
            clean_acc = metrics.get("clean/acc")
            metrics.update(
                evaluate_corruptions(
                    scorer, ood, ood_files, ood_labels, out_dir, clean_acc, progress
                )
            )
        elif isinstance(ood, LeaderboardSet):
            metrics.update(evaluate_leaderboard(scorer, ood, ood_files, out_dir, progress))
        metrics["status"] = "finished"
    except BaseException as err:
        metrics.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        metrics["peak_rss_mib"] = peak_rss_mib()
        write_json(out_dir / "metrics.json", metrics)
    log.info("clean top-1 %s; metrics in %s", metrics.get("clean/acc"), out_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        predict(cfg)


if __name__ == "__main__":
    main()
