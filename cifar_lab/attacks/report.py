"""The files of an attack run beside metrics.json: which images were attacked and what the model
said on each, the robustness curve (CSV + PNG), and a grid of clean / adversarial / amplified
difference images. PNGs are drawn with matplotlib's object API and written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from cifar_lab.attacks.flags import CurvePoint
from cifar_lab.files import atomic_write, write_csv


def images_file(out_dir: Path, attack: str) -> Path:
    return out_dir / f"adv_{attack}_images.csv"


def curve_file(out_dir: Path, attack: str, suffix: str = "csv") -> Path:
    return out_dir / f"adv_{attack}_curve.{suffix}"


def examples_file(out_dir: Path, attack: str) -> Path:
    return out_dir / f"adv_{attack}_examples.png"


def write_images(
    path: Path,
    indices: np.ndarray,
    labels: np.ndarray,
    clean: np.ndarray,
    adversarial: dict[str, np.ndarray],
) -> Path:
    """One row per attacked image: its index in the test split, label, the clean prediction
    and the prediction under each budget (`pred_eps<e>`)."""
    header = ["index", "label", "pred_clean", *(f"pred_eps{e}" for e in adversarial)]
    columns = [indices, labels, clean, *adversarial.values()]
    rows = [[int(column[i]) for column in columns] for i in range(len(indices))]
    return write_csv(path, header, rows)


def write_curve(path: Path, points: Sequence[CurvePoint], seconds: Sequence[float]) -> Path:
    """One row per budget: accuracy, success rate, the comparison PGD's accuracy, the largest
    perturbation (in the budget's units) and the attack's wall time."""
    header = [
        "eps", "norm", "radius", "acc", "success_rate", "pgd_acc", "max_perturbation", "seconds"
    ]  # fmt: skip
    rows = [
        [
            p.threat.eps, p.threat.norm, p.threat.radius, p.acc, p.success_rate, p.pgd_acc,
            p.max_perturbation, spent,
        ]
        for p, spent in zip(points, seconds, strict=True)
    ]  # fmt: skip
    return write_csv(path, header, rows)


def save_png(fig: Figure, path: Path) -> Path:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_curve(
    path: Path, points: Sequence[CurvePoint], clean_acc: float, title: str, pgd_title: str
) -> Path:
    """Accuracy against the budget, the clean accuracy as a line (and the comparison PGD)."""
    ordered = sorted(points, key=lambda p: p.threat.eps)
    eps = [p.threat.eps for p in ordered]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    ax.plot(eps, [p.acc for p in ordered], marker="o", label=title)
    if any(p.pgd_acc is not None for p in ordered):
        ax.plot(eps, [p.pgd_acc for p in ordered], marker="s", linestyle=":", label=pgd_title)
    ax.axhline(clean_acc, color="black", linestyle="--", linewidth=1, label="clean")
    norm = ordered[0].threat.norm
    ax.set(
        xlabel="eps (1/255)" if norm == "linf" else "eps (L2, [0, 1] pixels)",
        ylabel="accuracy",
        ylim=(0, 1),
        title=f"{title}, {norm}",
    )
    ax.legend(fontsize="small")
    return save_png(fig, path)


def to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_examples(
    path: Path,
    pixels: torch.Tensor,
    adversarial: torch.Tensor,
    labels: Sequence[str],
    title: str,
) -> Path:
    """Columns of images: clean, adversarial, and the difference around grey, amplified so the
    largest change reaches black or white (an 8/255 change is invisible as it is)."""
    count = len(pixels)
    largest = float((adversarial - pixels).abs().max())
    amplify = 0.5 / largest if largest > 0 else 1.0
    fig = Figure(figsize=(1.3 * count + 0.6, 4.4))
    rows = ("clean", "adversarial", f"difference x{amplify:.3g}")
    axes = fig.subplots(3, count, squeeze=False)
    for i in range(count):
        difference = 0.5 + amplify * (adversarial[i] - pixels[i])
        for row, image in enumerate((pixels[i], adversarial[i], difference)):
            ax = axes[row][i]
            ax.imshow(to_hwc(image), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(rows[row], fontsize=8)
        axes[0][i].set_title(labels[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
