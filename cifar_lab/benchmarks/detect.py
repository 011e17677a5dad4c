"""What OOD detection costs on top of scoring: `Trainer.predict` as `predict` runs it without
detection (class probabilities, top-k kept) and with it (probabilities, log-probabilities,
logits and penultimate features kept whole), ODIN's own pass (two forwards and a backward per
image), and fitting the feature detectors on training features: seconds and peak RSS each.

The module has the configured architecture with fresh weights: speed does not depend on them
(the fitting time of KNN and Mahalanobis depends on the feature width and the image count only).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from cifar_lab.benchmarks.data import load_split
from cifar_lab.benchmarks.timing import figures, memory_section
from cifar_lab.build import build_datamodule, build_module, quiet_trainer
from cifar_lab.data.ood import ImageSet
from cifar_lab.evaluation.detectors import DetectorSettings, fit_detectors
from cifar_lab.evaluation.odin import odin_scores
from cifar_lab.evaluation.scoring import PredictionCollector, predict_quietly, serving
from cifar_lab.models.outputs import PREDICT_OUTPUTS, PROBS_ONLY


def bench_detect(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`detect` section: img/s of plain scoring, of scoring with detection outputs and of ODIN
    (`detect_over_plain`, `odin_over_plain`: their rates over the plain one), and per feature
    detector its fitting seconds and peak RSS on `bench.detect.fit_images` training images."""
    settings = cfg.bench.detect
    L.seed_everything(cfg.seed, verbose=False)
    test = load_split(cfg.data, train=False, limit=settings.images)
    train = load_split(cfg.data, train=True, limit=settings.fit_images)
    datamodule = build_datamodule(cfg, predict_clean=False)
    datamodule.hparams.eval_batch_size = settings.batch_size
    datamodule.num_workers = 0  # in the main process: a worker per repeat would time start-up
    module = build_module(cfg)
    timed = [ImageSet.in_memory("bench", test.images, None)]
    warm = [ImageSet.in_memory("warmup", test.images[: settings.batch_size], None)]

    def rate(outputs: tuple[str, ...], keep: tuple[str, ...]) -> dict[str, float]:
        module.predict_outputs = outputs

        def once(sets: list[ImageSet]) -> float:
            collector = PredictionCollector(sets=sets, keep={s.name: keep for s in sets})
            trainer = quiet_trainer(
                cfg.trainer, device, cfg.paths.output_dir, callbacks=[collector]
            )
            start = time.perf_counter()
            with serving(datamodule, sets):
                predict_quietly(trainer, module, datamodule)
            return sum(s.num_images for s in sets) / (time.perf_counter() - start)

        for _ in range(cfg.bench.warmup):
            once(warm)
        return figures([once(timed) for _ in range(cfg.bench.repeats)])

    plain = rate(PROBS_ONLY, ())
    detect = rate(PREDICT_OUTPUTS, PREDICT_OUTPUTS)

    def odin_rate() -> float:
        def make(callbacks):
            return quiet_trainer(
                cfg.trainer, device, cfg.paths.output_dir, callbacks=callbacks, inference_mode=False
            )

        start = time.perf_counter()
        odin_scores(module, datamodule, timed, make, 1000.0, 0.0014)
        return len(test) / (time.perf_counter() - start)

    odin = figures([odin_rate() for _ in range(cfg.bench.repeats)])
    result: dict[str, Any] = {
        "images": len(test),
        "batch_size": settings.batch_size,
        "plain": plain,
        "detect": detect,
        "odin": odin,
        "detect_over_plain": detect["img_per_s"] / plain["img_per_s"],
        "odin_over_plain": odin["img_per_s"] / plain["img_per_s"],
        "fit": bench_fit(cfg, module, datamodule, train, device),
    }
    return result


def bench_fit(
    cfg: DictConfig, module: Any, datamodule: Any, train: Any, device: torch.device
) -> dict[str, Any]:
    """Features of the fit images (one predict pass), then each feature detector fitted alone
    with its own peak RSS (`memory_section`)."""
    settings = cfg.bench.detect
    detectors = DetectorSettings.from_config(OmegaConf.to_container(settings.config, resolve=True))
    fit_set = ImageSet.in_memory("fit", train.images, train.labels)
    module.predict_outputs = ("features",)
    collector = PredictionCollector(sets=[fit_set], keep={"fit": ("features",)})
    trainer = quiet_trainer(cfg.trainer, device, cfg.paths.output_dir, callbacks=[collector])
    start = time.perf_counter()
    with serving(datamodule, [fit_set]):
        predict_quietly(trainer, module, datamodule)
    features = collector.kept_outputs(0)["features"]
    result: dict[str, Any] = {
        "fit_images": len(features),
        "feature_dim": int(features.shape[1]),
        "features_fit_seconds": time.perf_counter() - start,
    }
    classifier = module.net.classifier
    for name in detectors.fitted:
        one = dataclasses.replace(detectors, detectors=(name,))
        section: dict[str, Any] = {}
        with memory_section(device, section):
            _, seconds = fit_detectors(one, features, train.labels, classifier, module.device)
        result[name] = {"fit_seconds": seconds[name], "peak_rss_mib": section["peak_rss_mib"]}
    return result
