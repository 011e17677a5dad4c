"""PNG figures of OOD detection and selective prediction: ROC curves per OOD set, detector score
histograms (ID test images vs each OOD set) and the risk-coverage curve. matplotlib's object API,
as `plots`; every figure says what is positive and which way the scores point."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cifar_lab.evaluation.ood_metrics import id_positive_roc
from cifar_lab.evaluation.plots import save

MAX_CURVE_POINTS = 2000  # a curve of 20,000 points draws the same as one of 2,000


def thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, MAX_CURVE_POINTS).round().astype(int))
    return x[keep], y[keep]


def grid(count: int, width: float = 3.6, height: float = 3.3) -> tuple[Figure, list]:
    columns = min(3, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    fig = Figure(figsize=(width * columns, height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_roc(
    path: Path,
    id_scores: Mapping[str, np.ndarray],
    set_scores: Mapping[str, Mapping[str, np.ndarray]],
    groups: Mapping[str, str],
    auroc: Mapping[tuple[str, str], float],
    caption: str,
) -> Path:
    """One panel per OOD set, one ROC curve per detector (ID positive): the fraction of ID test
    images accepted against the fraction of the set's images accepted as ID."""
    fig, axes = grid(len(set_scores))
    for ax, (set_name, by_detector) in zip(axes, set_scores.items(), strict=True):
        for detector, scores in by_detector.items():
            fpr, tpr = thin(*id_positive_roc(id_scores[detector], scores))
            value = auroc.get((detector, set_name), float("nan"))
            ax.plot(fpr, tpr, label=f"{detector} {value:.3f}", linewidth=1.2)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.axhline(0.95, color="black", linestyle="--", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=f"{set_name} ({groups.get(set_name, '?')})")
        ax.set_xlabel("OOD images accepted as ID (FPR)", fontsize=8)
        ax.set_ylabel("ID test images accepted (TPR)", fontsize=8)
        ax.legend(fontsize=6, title="AUROC", title_fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"ROC per OOD set, in-distribution test images positive (dashed: 95% TPR)\n{caption}",
        fontsize=9,
    )
    return save(fig, path)


def plot_score_histograms(
    path: Path,
    id_scores: Mapping[str, np.ndarray],
    set_scores: Mapping[str, Mapping[str, np.ndarray]],
    caption: str,
) -> Path:
    """One panel per detector: the density of its scores on the ID test images (filled) and on
    each OOD set (lines), over the 0.5-99.5th percentile of all its scores (the rest clipped
    into the edge bins), so one far outlier does not squash the rest."""
    detectors = list(id_scores)
    fig, axes = grid(len(detectors), width=4.2)
    for ax, detector in zip(axes, detectors, strict=True):
        everything = np.concatenate(
            [id_scores[detector]] + [s[detector] for s in set_scores.values()]
        )
        finite = everything[np.isfinite(everything)]
        low, high = np.percentile(finite, [0.5, 99.5]) if len(finite) else (0.0, 1.0)
        if not high > low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 41)

        def clipped(values: np.ndarray, low: float = low, high: float = high) -> np.ndarray:
            return np.clip(values[np.isfinite(values)], low, high)

        ax.hist(
            clipped(id_scores[detector]),
            bins=bins,
            density=True,
            alpha=0.35,
            color="black",
            label="ID test",
        )
        for set_name, by_detector in set_scores.items():
            ax.hist(
                clipped(by_detector[detector]),
                bins=bins,
                density=True,
                histtype="step",
                linewidth=1.2,
                label=set_name,
            )
        ax.set_title(detector, fontsize=9)
        ax.set_xlabel("score (higher = more OOD)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.set_yticks([])  # densities of different scales: the shapes are what to compare
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.tick_params(axis="x", labelsize=7, labelrotation=30)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"OOD detector scores: in-distribution test images vs each OOD set\n{caption}", fontsize=9
    )
    return save(fig, path)


def plot_risk_coverage(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    marks: Sequence[float],
    title: str,
) -> Path:
    """Risk (error rate among the answered images) against coverage (the fraction answered,
    most confident first), one line per curve; dotted verticals at the reported coverages."""
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (coverage, risk) in curves.items():
        x, y = thin(coverage, risk)
        ax.plot(x, y, label=name)
    for coverage in marks:
        ax.axvline(coverage, color="grey", linestyle=":", linewidth=0.8)
    ax.set(
        xlabel="coverage (fraction of test images answered)",
        ylabel="risk (error rate)",
        xlim=(0, 1),
    )
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save(fig, path)
