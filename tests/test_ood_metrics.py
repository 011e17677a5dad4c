"""OOD detection metrics (in-distribution test images positive, scores higher = more OOD) equal
pytorch-ood's metric classes and scikit-learn's, on continuous and on tied scores, and take the
values their definitions give at the extremes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import AUPR, AUROC, FPRAtTPR
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from cifar_lab.evaluation.ood_metrics import detection_metrics, group_means, id_positive_roc


def scores(seed: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """ID and OOD outlier scores: OOD shifted up; rounded to one decimal for many ties."""
    rng = np.random.default_rng(seed)
    id_scores, ood_scores = rng.normal(0, 1, 300), rng.normal(0.7, 1.2, 170)
    if tied:
        id_scores, ood_scores = id_scores.round(1), ood_scores.round(1)
    return id_scores, ood_scores


def pytorch_ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """pytorch-ood's metric classes (OOD labelled -1); its FPR95TPR takes OOD as positive, so
    the ID-positive FPR is its metric on negated scores with the roles swapped."""
    values = torch.as_tensor(np.concatenate([id_scores, ood_scores]))
    labels = torch.as_tensor([0] * len(id_scores) + [-1] * len(ood_scores))
    swapped = torch.where(labels < 0, 0, -1)
    return {
        "auroc": AUROC().update(values, labels).compute()["AUROC"],
        "aupr_in": AUPR("id").update(values, labels).compute()["AUPR-IN"],
        "aupr_out": AUPR("ood").update(values, labels).compute()["AUPR-OUT"],
        "fpr95": FPRAtTPR(0.95).update(-values, swapped).compute()["FPR95TPR"],
    }


def sklearn_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """scikit-learn with ID = 1 and the confidence -score. The AUPRs as the trapezoidal area
    under precision_recall_curve (`auc`), as OpenOOD computes them; the FPR from roc_curve's
    every point (drop_intermediate=False: a dropped collinear point can be the first >= 95%)."""
    is_id = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    confidence = -np.r_[id_scores, ood_scores]
    precision_in, recall_in, _ = precision_recall_curve(is_id, confidence)
    precision_out, recall_out, _ = precision_recall_curve(1 - is_id, -confidence)
    fpr, tpr, _ = roc_curve(is_id, confidence, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(is_id, confidence),
        "aupr_in": auc(recall_in, precision_in),
        "aupr_out": auc(recall_out, precision_out),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


@pytest.mark.parametrize("tied", [False, True], ids=["continuous", "tied"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_metrics_equal_pytorch_oods_and_scikit_learns(seed: int, tied: bool) -> None:
    id_scores, ood_scores = scores(seed, tied)

    ours = detection_metrics(id_scores, ood_scores)

    assert ours == pytest.approx(pytorch_ood_metrics(id_scores, ood_scores), abs=1e-12)
    assert ours == pytest.approx(sklearn_metrics(id_scores, ood_scores), abs=1e-12)
    assert 0.5 < ours["auroc"] < 1 and 0 < ours["fpr95"] < 1  # a real, imperfect separation


def test_tied_scores_are_not_the_continuous_ones_rounded_by_chance() -> None:
    """The tied case really has ties, and they move the metrics (so the case tests something)."""
    continuous, tied = scores(0, False), scores(0, True)
    assert len(np.unique(np.r_[tied])) < 0.2 * (len(tied[0]) + len(tied[1]))
    assert detection_metrics(*continuous)["auroc"] != detection_metrics(*tied)["auroc"]


def test_all_tied_scores_give_auroc_one_half_and_every_ood_image_accepted() -> None:
    metrics = detection_metrics(np.full(40, 3.0), np.full(10, 3.0))

    assert metrics["auroc"] == 0.5 and roc_auc_score([1] * 40 + [0] * 10, [0.0] * 50) == 0.5
    assert metrics["fpr95"] == 1.0  # any threshold that accepts 95% of ID accepts all OOD
    # one PR point (precision = the class fraction at recall 1) joined to (0, 1): trapezoid
    assert metrics["aupr_in"] == pytest.approx((1 + 40 / 50) / 2)
    assert metrics["aupr_out"] == pytest.approx((1 + 10 / 50) / 2)


def test_perfect_separation_gives_auroc_one_and_no_false_positive() -> None:
    metrics = detection_metrics(np.linspace(-3, -1, 25), np.linspace(1, 4, 15))

    assert metrics == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_reversed_scores_give_auroc_zero_and_every_ood_image_accepted() -> None:
    metrics = detection_metrics(np.linspace(1, 4, 15), np.linspace(-3, -1, 25))

    assert metrics["auroc"] == 0.0 and metrics["fpr95"] == 1.0


def test_aupr_is_the_trapezoidal_area_not_scikit_learns_average_precision() -> None:
    """OpenOOD's and pytorch-ood's AUPR joins the curve's points by straight lines;
    `average_precision_score` sums precision x recall steps. All ties show the difference by
    hand: AP = the class fraction, the trapezoid = (1 + fraction) / 2."""
    id_scores, ood_scores = np.zeros(30), np.zeros(20)
    is_id = np.r_[np.ones(30), np.zeros(20)]

    ours = detection_metrics(id_scores, ood_scores)["aupr_in"]

    assert average_precision_score(is_id, np.zeros(50)) == pytest.approx(0.6)
    assert ours == pytest.approx(0.8)
    # separated scores: both are 1
    assert average_precision_score(is_id, -np.r_[np.zeros(30), np.ones(20)]) == 1.0
    assert detection_metrics(np.zeros(30), np.ones(20))["aupr_in"] == 1.0


def test_fpr95_takes_the_in_distribution_images_as_positive() -> None:
    """20 ID images at 0..19 and OOD images at 18.5, 10.5, 30: accepting 95% of ID (19 of 20,
    threshold at 18) accepts the OOD images scoring <= 18, one of three. With OOD positive
    (pytorch-ood's FPR95TPR) it is another number: catching 95% of the OOD images (all three,
    threshold 10.5) flags the 9 ID images scoring >= 11, 0.45."""
    id_scores = np.arange(20.0)
    ood_scores = np.array([18.5, 10.5, 30.0])

    metrics = detection_metrics(id_scores, ood_scores)

    assert metrics["fpr95"] == pytest.approx(1 / 3)
    labels = torch.as_tensor([0] * 20 + [-1] * 3)
    ood_positive = FPRAtTPR(0.95).update(torch.as_tensor(np.r_[id_scores, ood_scores]), labels)
    assert ood_positive.compute()["FPR95TPR"] == pytest.approx(9 / 20)


def test_nan_scores_or_an_empty_side_give_nan_metrics() -> None:
    for id_scores, ood_scores in (([0.1, math.nan], [0.5]), ([0.1, 0.2], [])):
        metrics = detection_metrics(np.array(id_scores), np.array(ood_scores))
        assert all(math.isnan(v) for v in metrics.values()) and len(metrics) == 4


def test_the_roc_curve_runs_from_nothing_to_everything_accepted() -> None:
    fpr, tpr = id_positive_roc(*scores(0, True))

    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(detection_metrics(*scores(0, True))["auroc"])


def test_group_means_leave_sanity_sets_out() -> None:
    per_set = {
        "cifar10": {"auroc": 0.8, "aupr_in": 0.8, "aupr_out": 0.8, "fpr95": 0.5},
        "svhn": {"auroc": 0.9, "aupr_in": 0.9, "aupr_out": 0.9, "fpr95": 0.3},
        "textures": {"auroc": 0.7, "aupr_in": 0.7, "aupr_out": 0.7, "fpr95": 0.7},
        "noise_uniform": {"auroc": 0.1, "aupr_in": 0.1, "aupr_out": 0.1, "fpr95": 1.0},
    }
    groups = {"cifar10": "near", "svhn": "far", "textures": "far", "noise_uniform": "sanity"}

    means = group_means(per_set, groups, ("near", "far"))

    assert means["near"]["auroc"] == 0.8
    assert means["far"] == pytest.approx(
        {"auroc": 0.8, "aupr_in": 0.8, "aupr_out": 0.8, "fpr95": 0.5}
    )
    assert "sanity" not in means
