"""The tables `predict` writes: per-class and per-corruption CSVs, metrics by name, submission rows.

(Sweep tables are `cifar_lab.sweeps.sweep_report`'s job.)

Accuracies are fractions (0-1), like Lightning's `test/acc`. mCE follows Hendrycks & Dietterich
(2019): CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c}, averaged over the benchmark corruptions.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_csv

SeverityTable = Mapping[str, Sequence[float]]  # corruption -> one value per severity 1..5
SEVERITY_COLUMNS = [f"severity_{s}" for s in CIFAR_C.severities]


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(true class, predicted class) counts."""
    return multiclass_confusion_matrix(
        torch.as_tensor(predictions), torch.as_tensor(labels), num_classes
    ).numpy()


def write_per_class(path: Path, confusion: np.ndarray, classes: Sequence[str]) -> Path:
    """per_class_accuracy.csv: one row per class, recall = the accuracy on that class."""
    totals, correct = confusion.sum(axis=1), np.diag(confusion)
    rows = [
        (i, name, int(correct[i]), int(totals[i]), correct[i] / totals[i] if totals[i] else "")
        for i, name in enumerate(classes)
    ]
    return write_csv(path, ["class_index", "class_name", "correct", "total", "accuracy"], rows)


def severity_summary(
    table: SeverityTable, groups: Mapping[str, Sequence[str]]
) -> dict[str, list[float]]:
    """Per-severity means of each group of corruptions (only groups with a corruption present)."""
    summary = {}
    for group, names in groups.items():
        present = [table[n] for n in names if n in table]
        if present:
            summary[group] = np.mean(np.asarray(present, dtype=float), axis=0).tolist()
    return summary


def severity_metrics(
    prefix: str, table: SeverityTable, summary: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """Flat names for metrics.json: `{prefix}/{corruption}/{s}`, `{prefix}/{corruption}/mean`,
    and per summary group `{prefix}/mean_{group}/{s}` and `{prefix}/mean_{group}`."""
    metrics: dict[str, float] = {}
    for name, values in list(table.items()) + [(f"mean_{g}", v) for g, v in summary.items()]:
        for severity, value in zip(CIFAR_C.severities, values, strict=True):
            metrics[f"{prefix}/{name}/{severity}"] = float(value)
        mean = float(np.mean(values))
        metrics[f"{prefix}/{name}" if name.startswith("mean_") else f"{prefix}/{name}/mean"] = mean
    return metrics


def write_severity_table(
    path: Path,
    table: SeverityTable,
    groups: Mapping[str, Sequence[str]],
    seen: Mapping[str, str] | None = None,
) -> Path:
    """One row per corruption: its group, a value per severity and their mean; with `seen`,
    a `seen_in_training` column naming the augment steps that cover the corruption."""

    def group_of(name: str) -> str:
        return next((g for g, names in groups.items() if name in names), "")

    header = ["corruption", "group", *SEVERITY_COLUMNS, "mean"]
    rows = [[n, group_of(n), *map(float, v), float(np.mean(v))] for n, v in table.items()]
    if seen is not None:
        header.append("seen_in_training")
        for row in rows:
            row.append(seen.get(row[0], ""))
    return write_csv(path, header, rows)


def write_severity_summary(
    path: Path, summary: Mapping[str, Sequence[float]], clean: float | None
) -> Path:
    """One row per severity (plus `mean`), one column per group, and the clean value."""
    groups = list(summary)
    rows = [
        (s, *(summary[g][i] for g in groups), "" if clean is None else clean)
        for i, s in enumerate(CIFAR_C.severities)
    ]
    rows.append(
        ("mean", *(float(np.mean(summary[g])) for g in groups), "" if clean is None else clean)
    )
    return write_csv(path, ["severity", *(f"mean_{g}" for g in groups), "clean"], rows)


def _fraction(cell: str | None) -> float | None:
    """An accuracy cell as a float in [0, 1]; None for an empty, non-numeric or out-of-range one."""
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def read_severity_table(path: Path) -> dict[str, list[float]]:
    """A table written by `write_severity_table` (e.g. a reference model's ood_accuracy.csv),
    every cell checked: `predict` reads it before scoring, so a bad file fails first."""
    if not path.is_file():
        raise CifarLabError(
            f"ood.reference_csv={path} does not exist; give the ood_accuracy.csv that predict "
            f"wrote for the reference model"
        )
    expected = "expected an ood_accuracy.csv written by cifar_lab.predict"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"corruption", *SEVERITY_COLUMNS} - set(reader.fieldnames or [])
            rows = [] if missing else list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CifarLabError(
            f"reference CSV {path} is not a readable CSV ({type(err).__name__}: {err}); {expected}"
        ) from err
    if missing:
        raise CifarLabError(f"reference CSV {path} lacks columns {sorted(missing)}; {expected}")
    table: dict[str, list[float]] = {}
    for line, row in enumerate(rows, start=2):
        values = [_fraction(row.get(column)) for column in SEVERITY_COLUMNS]
        if not row.get("corruption") or None in values:
            cells = {k: row.get(k) for k in ("corruption", *SEVERITY_COLUMNS)}
            raise CifarLabError(
                f"reference CSV {path} line {line} has an empty or invalid cell {cells}; "
                f"expected a corruption name and 5 accuracies in [0, 1]: {expected}"
            )
        table[row["corruption"]] = values  # type: ignore[assignment]
    if not table:
        raise CifarLabError(f"reference CSV {path} holds no rows; {expected}")
    return table


def corruption_errors(
    accuracy: SeverityTable, reference_accuracy: SeverityTable, names: Sequence[str]
) -> dict[str, float]:
    """CE per corruption: this model's summed error over severities / the reference model's."""
    errors = {}
    for name in names:
        if name in accuracy and name in reference_accuracy:
            ours = sum(1 - a for a in accuracy[name])
            theirs = sum(1 - a for a in reference_accuracy[name])
            errors[name] = ours / theirs if theirs > 0 else float("nan")
    return errors


def submission_rows(name: str, predictions: np.ndarray) -> Iterable[tuple[str, int]]:
    """(`{name}_{severity}_{index}`, label) in severity, index order; severities count from 1."""
    per_severity = len(predictions) // len(CIFAR_C.severities)
    for position, label in enumerate(predictions.tolist()):
        severity, index = CIFAR_C.locate(position, per_severity)
        yield f"{name}_{severity}_{index}", label
