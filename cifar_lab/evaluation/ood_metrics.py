"""How well an OOD detector's scores separate the in-distribution test images from an OOD set.

Scores follow pytorch-ood: higher = more likely OOD. The metrics follow the convention of the
papers whose detectors these are (ODIN, Energy, KNN, ViM, ReAct) and the one this project uses:
the in-distribution test images are the POSITIVE class.

- `auroc`: the probability that an OOD image scores as more OOD than an ID image (ties count
  half); it is the same number whichever class is called positive;
- `aupr_in`: area under the precision-recall curve with ID images as positives (ranked by
  lowest score first), `aupr_out` with OOD images as positives; both by the trapezoidal rule over
  the curve's points, as OpenOOD (`sklearn.metrics.auc(recall, precision)`) and pytorch-ood
  compute it. This is NOT scikit-learn's `average_precision_score` (a step sum), which differs
  by the interpolation between points (tests/test_ood_metrics.py shows both);
- `fpr95`: the fraction of OOD images accepted as ID at the threshold that accepts 95% of the
  ID images (FPR at 95% TPR, ID positive). pytorch-ood's `FPR95TPR` and OpenOOD v1.5's code
  take OOD as positive instead (the fraction of ID images rejected when 95% of the OOD images
  are caught): another number.

All four come from pytorch-ood's functional metrics (exact tie handling, float64 counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pytorch_ood.metrics import functional as F

DETECTION_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
TPR = 0.95


def _scores_and_labels(
    id_scores: np.ndarray, ood_scores: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """One float64 score tensor and pytorch-ood's labels: 0 for ID images, -1 for OOD ones."""
    scores = torch.as_tensor(np.concatenate([id_scores, ood_scores]).astype(np.float64))
    labels = torch.cat(
        [
            torch.zeros(len(id_scores), dtype=torch.long),
            -torch.ones(len(ood_scores), dtype=torch.long),
        ]
    )
    return scores, labels


def detection_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """The four metrics of outlier scores (higher = more OOD) of ID and OOD images; NaN for
    all four when a score is NaN (a diverged model) or a side is empty."""
    id_scores, ood_scores = np.asarray(id_scores), np.asarray(ood_scores)
    if (
        not (len(id_scores) and len(ood_scores))
        or np.isnan(id_scores).any()
        or np.isnan(ood_scores).any()
    ):
        return dict.fromkeys(DETECTION_METRICS, float("nan"))
    scores, labels = _scores_and_labels(id_scores, ood_scores)
    # ID positive for the FPR: negated scores (higher = more ID) with the ID images labelled as
    # pytorch-ood's positive class (< 0) and the OOD images as its negatives.
    id_positive = torch.where(labels < 0, 0, -1)
    return {
        "auroc": float(F.auroc(scores, labels)),
        "aupr_in": float(F.aupr(scores, labels, positive="id")),
        "aupr_out": float(F.aupr(scores, labels, positive="ood")),
        "fpr95": float(F.fpr_at_tpr(-scores, id_positive, TPR)),
    }


def id_positive_roc(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve with ID positive: the fraction of OOD images accepted as ID
    against the fraction of ID images accepted, as the threshold on the score rises."""
    scores, labels = _scores_and_labels(id_scores, ood_scores)
    fpr, tpr, _ = F.roc_curve(-scores, torch.where(labels < 0, 0, -1))
    return fpr.numpy(), tpr.numpy()


def group_means(
    per_set: Mapping[str, Mapping[str, float]], groups: Mapping[str, str], wanted: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per group in `wanted` (`near`, `far`) with a set in it, the mean of each metric over its
    sets (`groups`: set name -> group; sets of other groups, e.g. `sanity`, count in none)."""
    means = {}
    for group in wanted:
        members = [metrics for name, metrics in per_set.items() if groups.get(name) == group]
        if members:
            means[group] = {
                metric: float(np.mean([m[metric] for m in members])) for metric in DETECTION_METRICS
            }
    return means
