"""OOD detection of one predict run: fit the feature detectors on the training images' outputs,
score the in-distribution test split and every OOD detection set with each detector, and report
the per-set metrics, the near/far means (sanity sets in neither), a CSV, the per-image scores
and the figures.

Files (in the run folder): `ood_detection.csv` (detector x set, plus the `mean_near` and
`mean_far` rows), `detection_scores.npz` (every score, so anyone can recompute a metric:
`id/<detector>`, `ood/<set>/<detector>`, `id_correct`, `sets`, `groups`), `roc.png`,
`score_histograms.png`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar_lab.data.detection_sets import DetectionSet
from cifar_lab.evaluation.detection_plots import plot_roc, plot_score_histograms
from cifar_lab.evaluation.detectors import DetectorSettings, fit_detectors, score_outputs
from cifar_lab.evaluation.ood_metrics import DETECTION_METRICS, detection_metrics, group_means
from cifar_lab.files import atomic_write, write_csv

log = logging.getLogger(__name__)

MEAN_GROUPS = ("near", "far")  # sanity sets are reported alone, in no mean
CSV_FILE, SCORES_FILE = "ood_detection.csv", "detection_scores.npz"
ROC_FILE, HISTOGRAM_FILE = "roc.png", "score_histograms.png"
FEATURE_LAYER = "the input of the model's last Linear layer (ClassifierNet.features)"


@dataclass(frozen=True)
class Outputs:
    """What the predict pass kept of one set: logits (n, C), features (n, D) or None, and
    ODIN's scores when it ran."""

    logits: np.ndarray
    features: np.ndarray | None = None
    odin: np.ndarray | None = None


def all_scores(
    settings: DetectorSettings, fitted: Mapping[str, Any], outputs: Outputs, device: Any
) -> dict[str, np.ndarray]:
    scores = score_outputs(settings, fitted, outputs.logits, outputs.features, device)
    if settings.uses_odin:
        scores["odin"] = np.asarray(outputs.odin, dtype=np.float64)
    return {name: scores[name] for name in settings.detectors}


def write_scores(
    path: Path,
    id_scores: Mapping[str, np.ndarray],
    set_scores: Mapping[str, Mapping[str, np.ndarray]],
    id_correct: np.ndarray,
    groups: Mapping[str, str],
) -> None:
    """detection_scores.npz, atomically; plain arrays only (it loads with allow_pickle=False)."""
    arrays = {f"id/{detector}": scores for detector, scores in id_scores.items()}
    for set_name, by_detector in set_scores.items():
        arrays.update({f"ood/{set_name}/{d}": scores for d, scores in by_detector.items()})
    arrays["id_correct"] = np.asarray(id_correct, dtype=bool)
    arrays["sets"] = np.array(list(set_scores), dtype=str)
    arrays["groups"] = np.array([groups[name] for name in set_scores], dtype=str)
    arrays["score_direction"] = np.array("higher = more OOD (pytorch-ood's convention)")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def metric_rows(
    per_set: Mapping[tuple[str, str], Mapping[str, float]],
    means: Mapping[str, Mapping[str, Mapping[str, float]]],
    groups: Mapping[str, str],
    sizes: Mapping[str, int],
) -> list[list[Any]]:
    rows = []
    for (detector, set_name), metrics in per_set.items():
        rows.append([detector, set_name, groups[set_name], sizes[set_name]]
                    + [metrics[m] for m in DETECTION_METRICS])  # fmt: skip
    for detector, by_group in means.items():
        for group, metrics in by_group.items():
            rows.append(
                [detector, f"mean_{group}", group, ""] + [metrics[m] for m in DETECTION_METRICS]
            )
    return rows


def best_detector(means: Mapping[str, Mapping[str, Mapping[str, float]]]) -> tuple[str, str] | None:
    """(detector, group) with the highest mean AUROC over the near sets (over the far sets
    when there is no near set); None when no set counts in a mean."""
    for group in MEAN_GROUPS:
        ranked = [
            (m[group]["auroc"], d)
            for d, m in means.items()
            if group in m and not math.isnan(m[group]["auroc"])
        ]
        if ranked:
            return max(ranked)[1], group
    return None


def evaluate_detection(
    settings: DetectorSettings,
    id_outputs: Outputs,
    id_correct: np.ndarray,
    sets: Sequence[tuple[DetectionSet, Outputs]],
    fit: tuple[np.ndarray, np.ndarray] | None,
    classifier: nn.Linear | None,
    out_dir: Path,
    caption: str,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Every chosen detector on the ID test split and each OOD set: metrics.json's
    `detect/<detector>/<set>/<metric>` and `detect/<detector>/mean_near|mean_far/<metric>`,
    the files above, and the log line naming the best detector. `fit` is the training images'
    (features, labels) the feature detectors fit on."""
    metrics: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    if settings.fitted:
        features, labels = fit
        fitted, seconds = fit_detectors(settings, features, labels, classifier, device)
        metrics["detect/fit_images"] = len(labels)
        metrics["detect/feature_dim"] = int(features.shape[1])
        metrics["detect/feature_layer"] = FEATURE_LAYER
        metrics.update({f"detect/{name}/fit_seconds": s for name, s in seconds.items()})
    groups = {ds.name: ds.group for ds, _ in sets}
    id_scores = all_scores(settings, fitted, id_outputs, device)
    set_scores = {ds.name: all_scores(settings, fitted, outputs, device) for ds, outputs in sets}
    per_set = {
        (detector, set_name): detection_metrics(id_scores[detector], by_detector[detector])
        for detector in settings.detectors
        for set_name, by_detector in set_scores.items()
    }
    for (detector, set_name), values in per_set.items():
        if any(math.isnan(v) for v in values.values()):
            log.warning(
                "%s on %s: NaN scores (non-finite model outputs?), its metrics are NaN",
                detector,
                set_name,
            )
        metrics.update({f"detect/{detector}/{set_name}/{m}": v for m, v in values.items()})
    means = {
        detector: group_means({s: per_set[(detector, s)] for s in set_scores}, groups, MEAN_GROUPS)
        for detector in settings.detectors
    }
    for detector, by_group in means.items():
        for group, values in by_group.items():
            metrics.update({f"detect/{detector}/mean_{group}/{m}": v for m, v in values.items()})
    sizes = {ds.name: ds.images.num_images for ds, _ in sets}
    header = ["detector", "set", "group", "ood_images", *DETECTION_METRICS]
    write_csv(out_dir / CSV_FILE, header, metric_rows(per_set, means, groups, sizes))
    write_scores(out_dir / SCORES_FILE, id_scores, set_scores, id_correct, groups)
    aurocs = {key: values["auroc"] for key, values in per_set.items()}
    plot_roc(out_dir / ROC_FILE, id_scores, set_scores, groups, aurocs, caption)
    plot_score_histograms(out_dir / HISTOGRAM_FILE, id_scores, set_scores, caption)
    metrics["detect/sets"] = list(set_scores)
    metrics["detect/id_images"] = len(id_correct)
    best = best_detector(means)
    if best is not None:
        metrics["detect/best"], metrics["detect/best_by"] = best[0], f"mean_{best[1]}/auroc"
    return metrics


def detection_summary(metrics: Mapping[str, Any], out_dir: Path) -> list[str]:
    """predict's last lines on detection: the best detector's mean near/far AUROC, the files."""
    if not any(key.startswith("detect/") for key in metrics):
        return []
    best = metrics.get("detect/best")
    if best is None:
        lines = ["OOD detection: no near or far set was scored (sanity sets count in no mean)"]
    else:
        means = [
            f"mean_{group} AUROC {metrics[key]:.4f}"
            for group in MEAN_GROUPS
            if (key := f"detect/{best}/mean_{group}/auroc") in metrics
        ]
        lines = [f"OOD detection: best detector {best}: {', '.join(means)}"]
    if "TTA" in str(metrics.get("detect/outputs", "")):
        lines.append(f"OOD detection scored {metrics['detect/outputs']}")
    files = ", ".join((CSV_FILE, SCORES_FILE, ROC_FILE, HISTOGRAM_FILE))
    return [*lines, f"OOD detection files: {files} in {out_dir}"]
