"""PNG figures of an evaluation: confusion matrix, per-corruption bars, severity curves.

Drawn with matplotlib's object API (`Figure`, no pyplot), so no GUI backend or global state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.evaluation.calibration import ReliabilityBins


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_confusion(
    path: Path, confusion: np.ndarray, classes: Sequence[str] = (), title: str = "confusion matrix"
) -> Path:
    """Rows = true class, normalised to 1, so the diagonal is each class's accuracy; class
    names on the axes when there are few enough to read (CIFAR-10)."""
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    fig = Figure(figsize=(8, 7))
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if 0 < len(classes) <= 20:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=60, ha="right")
        ax.set_yticks(ticks, classes)
    return save(fig, path)


def plot_severity_bars(
    path: Path,
    table: Mapping[str, Sequence[float]],
    ylabel: str,
    clean: float | None = None,
    seen: Collection[str] = (),
    title: str = "",
) -> Path:
    """One group of bars per corruption, one bar per severity; the clean value as a line;
    corruptions seen in training marked with `*` and a hatched background."""
    names = list(table)
    severities = CIFAR_C.severities
    width = 0.8 / len(severities)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 4.5))
    ax = fig.add_subplot()
    for i, severity in enumerate(severities):
        ax.bar(
            x + (i - (len(severities) - 1) / 2) * width,
            [table[n][i] for n in names],
            width,
            label=f"severity {severity}",
        )
    if clean is not None:
        ax.axhline(clean, color="black", linestyle="--", linewidth=1, label="clean")
    for i, name in enumerate(names):
        if name in seen:
            ax.axvspan(i - 0.45, i + 0.45, color="grey", alpha=0.15, hatch="//", linewidth=0)
    labels = [f"{n} *" if n in seen else n for n in names]
    ax.set_xticks(x, labels, rotation=60, ha="right")
    if seen:
        title = f"{title}\n* seen in training: an augmentation applies that distortion".strip()
    ax.set(ylabel=ylabel, ylim=(0, 1))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize="small", ncols=3)
    return save(fig, path)


CURVE_STYLES = (
    {"marker": "o", "linestyle": "-"},
    {"marker": "s", "linestyle": "--"},
    {"marker": "^", "linestyle": ":"},
    {"marker": "D", "linestyle": "-."},
)


def plot_severity_curves(
    path: Path,
    curves: Mapping[str, Sequence[float]],
    ylabel: str,
    clean: float | None = None,
    title: str = "",
) -> Path:
    """Value against severity for each curve, starting from the clean value at severity 0;
    ticks at whole severities."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    # Means of one set often coincide (all = benchmark when the extra 4 are missing): each curve
    # gets its own marker, line style and a small sideways offset, so none hides another.
    spread = 0.06 * (len(curves) - 1)
    for i, (name, values) in enumerate(curves.items()):
        xs, ys = list(CIFAR_C.severities), list(values)
        if clean is not None:
            xs, ys = [0, *xs], [clean, *ys]
        shift = i * 0.06 - spread / 2
        style = CURVE_STYLES[i % len(CURVE_STYLES)]
        ax.plot([x + shift for x in xs], ys, label=name, **style)
    ax.set(
        xlabel="severity (0 = clean)" if clean is not None else "severity",
        ylabel=ylabel,
        ylim=(0, 1),
        title=title,
    )
    ax.set_xticks(([0] if clean is not None else []) + list(CIFAR_C.severities))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return save(fig, path)


def reliability_figure(curves: Mapping[str, ReliabilityBins], title: str) -> Figure:
    """Reliability diagram: accuracy against confidence per bin for each curve (the diagonal
    is perfect calibration; below it the model is over-confident), and below it how many
    images each bin holds (a point of 3 images says little)."""
    fig = Figure(figsize=(5, 6.2), layout="constrained")
    ax, counts = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    width = 1 / len(next(iter(curves.values())).count) if curves else 0.1
    for i, (name, bins) in enumerate(curves.items()):
        filled = bins.count > 0
        ax.plot(bins.confidence[filled], bins.accuracy[filled], marker="o", label=name)
        left = np.arange(len(bins.count)) * width + i * width / len(curves)
        counts.bar(left, bins.count, width / len(curves), align="edge", label=name)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    counts.set(xlabel="confidence (max softmax)", ylabel="images per bin")
    counts.grid(alpha=0.3)
    return fig


def plot_reliability(path: Path, curves: Mapping[str, ReliabilityBins], title: str) -> Path:
    return save(reliability_figure(curves, title), path)
