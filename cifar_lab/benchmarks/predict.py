"""Scoring throughput: `Trainer.predict` on a module built with each TTA, as `predict` runs it.

The module has the configured architecture with fresh weights: speed does not depend on them.
Each figure covers the whole call as `predict` makes it: the datamodule's predict loader and
eval preprocessing, every TTA view through the net, softmax averaging, the top-k collection.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from cifar_lab.benchmarks.data import load_split
from cifar_lab.benchmarks.timing import figures
from cifar_lab.build import build_datamodule, build_module, build_tta, quiet_trainer
from cifar_lab.data.ood import ImageSet
from cifar_lab.evaluation.scoring import PredictionCollector


def bench_predict(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`predict` section: img/s for each TTA config in `bench.predict.tta`, and each one's
    `tta_overhead`: `tta=none` img/s over (views x its img/s), 1.0 when a view costs what an
    image does."""
    settings = cfg.bench.predict
    test = load_split(cfg.data, train=False, limit=settings.images)
    datamodule = build_datamodule(cfg, predict_clean=False)
    datamodule.hparams.eval_batch_size = settings.batch_size
    # In the main process: starting a loader worker for each repeat of a few hundred images
    # would measure process start-up, not scoring.
    datamodule.num_workers = 0
    trainer = quiet_trainer(
        cfg.trainer, device, cfg.paths.output_dir, callbacks=[PredictionCollector()]
    )
    warm = [ImageSet.in_memory("warmup", test.images[: settings.batch_size], None)]
    timed = [ImageSet.in_memory("bench", test.images, None)]
    results: dict[str, Any] = {}
    for name, tta_cfg in settings.tta.items():
        L.seed_everything(cfg.seed, verbose=False)
        tta = build_tta(tta_cfg)
        module = build_module(cfg, tta=tta)

        def score(sets: list[ImageSet], module=module) -> float:
            datamodule.predict_sets = sets
            start = time.perf_counter()
            with warnings.catch_warnings():
                # blocks come ready-made (no batch sampler) and no batch indices are needed
                warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
                trainer.predict(module, datamodule=datamodule, return_predictions=False)
            return sum(s.num_images for s in sets) / (time.perf_counter() - start)

        for _ in range(cfg.bench.warmup):
            score(warm)
        rates = [score(timed) for _ in range(cfg.bench.repeats)]
        results[name] = {**figures(rates), "views": tta.num_views if tta else 1}
    # What TTA costs beyond its views: 1.0 when scoring v views costs v times one view.
    single = results.get("none", {}).get("img_per_s")
    for result in results.values():
        if single and result["views"] > 1:
            result["tta_overhead"] = single / (result["views"] * result["img_per_s"])
    headline = settings.headline
    return {
        "images": len(test),
        "batch_size": settings.batch_size,
        "tta": headline,
        **{k: v for k, v in results[headline].items() if k != "views"},
        **results,
    }
