"""Metrics and reports of one kind of scored image set: the clean test split, a labelled
corruption set (CIFAR-10/100-C) or the unlabelled leaderboard set. Each takes the `Scores` that
`Trainer.predict` produced for its sets and returns metrics by name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar_lab.data.ood import CorruptionSet, LeaderboardSet
from cifar_lab.evaluation.calibration import expected_calibration_error, reliability_bins
from cifar_lab.evaluation.overlap import seen_corruptions
from cifar_lab.evaluation.plots import (
    plot_confusion,
    plot_reliability,
    plot_severity_bars,
    plot_severity_curves,
)
from cifar_lab.evaluation.scoring import ScoredSets, Scores
from cifar_lab.evaluation.tables import (
    confusion_matrix,
    corruption_errors,
    read_severity_table,
    severity_metrics,
    severity_summary,
    submission_rows,
    write_per_class,
    write_severity_summary,
    write_severity_table,
)
from cifar_lab.files import write_csv


def evaluate_clean(
    scores: Scores, labels: np.ndarray, classes: Sequence[str], out_dir: Path
) -> dict[str, float]:
    """Top-1/top-5 accuracy, ECE, per_class_accuracy.csv and confusion_matrix.png."""
    metrics = {
        "clean/acc": scores.accuracy(labels),
        "clean/ece": expected_calibration_error(scores.confidences, scores.correct(labels)),
        "clean/images_per_s": scores.images_per_s,
    }
    if len(classes) >= 5:
        metrics["clean/acc_top5"] = scores.accuracy(labels, top_k=5)
    confusion = confusion_matrix(scores.predictions, labels, len(classes))
    write_per_class(out_dir / "per_class_accuracy.csv", confusion, classes)
    title = f"clean test, top-1 {metrics['clean/acc']:.3f}"
    plot_confusion(out_dir / "confusion_matrix.png", confusion, classes, title)
    return metrics


def summary_groups(
    ood: CorruptionSet, present: Sequence[str], seen: Collection[str]
) -> dict[str, list[str]]:
    """The means to report. `benchmark` (the 15 RobustBench and AugMix average over) and `all`
    (all 19) only when every corruption they are defined over was scored, so nobody compares
    a partial mean with a published one; otherwise `present` (what was scored). `unseen`: the
    scored corruptions no training augmentation covered."""
    groups: dict[str, list[str]] = {}
    if all(name in present for name in ood.benchmark):
        groups["benchmark"] = list(ood.benchmark)
    if all(name in present for name in ood.corruptions):
        groups["all"] = list(ood.corruptions)
    else:
        groups["present"] = list(present)
    unseen = [name for name in present if name not in seen]
    if unseen:
        groups["unseen"] = unseen
    return groups


@dataclass
class Throughput:
    """Images and seconds summed over scored blocks."""

    images: int = 0
    seconds: float = 0.0

    def add(self, scores: Sequence[Scores]) -> None:
        self.images += sum(len(s) for s in scores)
        self.seconds += sum(s.seconds for s in scores)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def evaluate_corruptions(
    ood: CorruptionSet,
    scored: ScoredSets,
    out_dir: Path,
    clean: tuple[Scores, np.ndarray] | None = None,
    augment: Mapping[str, Any] | None = None,
    caption: str = "",
) -> dict[str, Any]:
    """Accuracy and ECE per corruption x severity with their means (see `summary_groups`),
    the corruptions seen in training (from the `augment` config the model was trained with),
    mCE against `ood.reference_csv`; ood_accuracy.csv, ood_ece.csv, ood_severity.csv (+
    ood_mce.csv), the bar chart, the severity curves and reliability.png (clean, when scored,
    vs severity 5),
    titled with `caption` (what was scored: checkpoint, TTA, set)."""
    accuracy: dict[str, list[float]] = {}
    ece: dict[str, list[float]] = {}
    hardest: list[tuple[np.ndarray, np.ndarray]] = []  # severity 5: confidences, correctness
    throughput = Throughput()
    for name, (image_set, scores) in scored.items():
        labels = [image_set.labels[block] for block in image_set.blocks]
        correct = [s.correct(y) for s, y in zip(scores, labels, strict=True)]
        accuracy[name] = [float(c.mean()) for c in correct]
        ece[name] = [
            expected_calibration_error(s.confidences, c)
            for s, c in zip(scores, correct, strict=True)
        ]
        hardest.append((scores[-1].confidences, correct[-1]))
        throughput.add(scores)
    seen = seen_corruptions(augment or {}, accuracy)
    groups = summary_groups(ood, list(accuracy), seen)
    summary = severity_summary(accuracy, groups)
    metrics: dict[str, Any] = severity_metrics("ood/acc", accuracy, summary)
    metrics.update(severity_metrics("ood/ece", ece, severity_summary(ece, groups)))
    clean_acc = clean[0].accuracy(clean[1]) if clean else None
    metrics.update(
        {
            "ood/corruptions": len(accuracy),
            "ood/benchmark_corruptions": sum(n in accuracy for n in ood.benchmark),
            "ood/seen": sorted(seen),
            "ood/unseen_corruptions": len(groups.get("unseen", [])),
            "ood/images_per_s": throughput.images_per_s,
        }
    )
    kinds = {"benchmark": ood.benchmark, "extra": ood.corruptions[len(ood.benchmark) :]}
    write_severity_table(out_dir / "ood_accuracy.csv", accuracy, kinds, seen)
    write_severity_table(out_dir / "ood_ece.csv", ece, kinds, seen)
    write_severity_summary(out_dir / "ood_severity.csv", summary, clean_acc)
    title = f"{ood.name} top-1 accuracy per corruption\n{caption}"
    plot_severity_bars(
        out_dir / "ood_corruptions.png", accuracy, "top-1 accuracy", clean_acc, seen, title
    )
    title = f"{ood.name} mean top-1 accuracy by severity\n{caption}"
    plot_severity_curves(out_dir / "ood_severity.png", summary, "top-1 accuracy", clean_acc, title)
    curves = {}
    if clean:
        curves["clean"] = reliability_bins(clean[0].confidences, clean[0].correct(clean[1]))
    confidences, correct = (np.concatenate(parts) for parts in zip(*hardest, strict=True))
    curves[f"severity 5, mean over {len(hardest)} corruptions"] = reliability_bins(
        confidences, correct
    )
    title = (
        f"{ood.name} calibration: {' vs '.join(name.split(',')[0] for name in curves)}\n{caption}"
    )
    plot_reliability(out_dir / "reliability.png", curves, title)
    if ood.reference_csv is not None:
        metrics.update(mce_report(accuracy, read_severity_table(ood.reference_csv), ood, out_dir))
    return metrics


def mce_report(
    accuracy: dict[str, list[float]],
    reference: dict[str, list[float]],
    ood: CorruptionSet,
    out_dir: Path,
) -> dict[str, float]:
    """CE per corruption and mCE over the benchmark corruptions both models were scored on."""
    errors = corruption_errors(accuracy, reference, ood.corruptions)
    write_csv(out_dir / "ood_mce.csv", ["corruption", "ce"], errors.items())
    metrics = {f"ood/ce/{name}": ce for name, ce in errors.items()}
    benchmark = [errors[n] for n in ood.benchmark if n in errors]
    if len(benchmark) == len(ood.benchmark):
        metrics["ood/mce"] = float(np.mean(benchmark))
    elif benchmark:  # a partial mean is named as one (see `summary_groups`)
        metrics["ood/mce_present"] = float(np.mean(benchmark))
        metrics["ood/mce_present_count"] = len(benchmark)
    return metrics


def evaluate_leaderboard(
    ood: LeaderboardSet, scored: ScoredSets, out_dir: Path, caption: str = ""
) -> dict[str, float]:
    """submission_ood.csv (`id,label`, file x severity x index order) and, as there are no
    labels, the mean max-softmax per distortion x severity (ood_confidence.csv + plots titled
    with `caption`)."""
    confidence = {name: [s.confidence for s in scores] for name, (_, scores) in scored.items()}
    throughput = Throughput()
    for _, scores in scored.values():
        throughput.add(scores)

    def rows() -> Iterator[tuple[str, int]]:
        for name, (_, scores) in scored.items():
            yield from submission_rows(name, np.concatenate([s.predictions for s in scores]))

    write_csv(out_dir / "submission_ood.csv", ["id", "label"], rows())
    groups = {"all": ood.names}
    summary = severity_summary(confidence, groups)
    metrics = severity_metrics("ood/confidence", confidence, summary)
    metrics.update(
        {
            "ood/submission_rows": throughput.images,
            "ood/images_per_s": throughput.images_per_s,
        }
    )
    write_severity_table(out_dir / "ood_confidence.csv", confidence, groups)
    title = f"leaderboard mean max softmax per distortion\n{caption}"
    plot_severity_bars(out_dir / "ood_confidence.png", confidence, "mean max softmax", None, title)
    title = f"leaderboard mean max softmax by severity\n{caption}"
    plot_severity_curves(
        out_dir / "ood_confidence_severity.png", summary, "mean max softmax", None, title
    )
    return metrics
