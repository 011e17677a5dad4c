"""Scoring throughput: `cifar_lab.evaluation.score_arrays` (the path `predict` takes) per TTA.

The module has the configured architecture with fresh weights: speed does not depend on them.
Each figure covers the whole call as `predict` makes it: loader, eval preprocessing, every TTA
view through the net, softmax averaging.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cifar_lab.benchmarks.data import load_split
from cifar_lab.benchmarks.timing import figures
from cifar_lab.data.transforms import augment_normalization, build_eval_transform
from cifar_lab.evaluation.scoring import score_arrays
from cifar_lab.speed import cudnn_benchmark
from cifar_lab.train import build_module, resolve_precision


def bench_predict(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`predict` section: img/s for each TTA config in `bench.predict.tta`."""
    settings = cfg.bench.predict
    test = load_split(cfg.data, train=False, limit=settings.images)
    augment = OmegaConf.to_container(cfg.augment, resolve=True)
    stats = augment_normalization(augment, cfg.data.name)
    transform = build_eval_transform(augment, cfg.data.img_size, *stats)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    trainer = L.Trainer(
        accelerator="cpu" if device.type == "cpu" else "gpu",
        devices=1,
        precision=resolve_precision(cfg.trainer.precision),
        benchmark=cudnn_benchmark(cfg.trainer),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
    )
    results: dict[str, Any] = {}
    for name, tta_cfg in settings.tta.items():
        tta = instantiate(tta_cfg)

        def score(images, tta=tta) -> float:
            return score_arrays(module, images, None, transform, tta, settings.batch_size, trainer)[
                "images_per_s"
            ]

        for _ in range(cfg.bench.warmup):
            score(test.images[: settings.batch_size])
        rates = [score(test.images) for _ in range(cfg.bench.repeats)]
        results[name] = {**figures(rates), "views": tta.num_views}
    headline = settings.headline
    return {
        "images": len(test),
        "batch_size": settings.batch_size,
        "tta": headline,
        **{k: v for k, v in results[headline].items() if k != "views"},
        **results,
    }
