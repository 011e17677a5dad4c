"""How far the clean test split's confidences can be trusted: calibration (NLL, Brier score, ECE)
before and after temperature scaling, and selective prediction (the risk-coverage curve, AURC,
accuracy at 80/90/95% coverage), from the predicted probabilities (the TTA average with TTA).

The temperature is fitted on the calibration set (the validation split of training) or given
(`calibration.temperature=<T>`); never on the test split it is then scored on. The selective
metrics rank by the max softmax before scaling (with one view, scaling changes no ranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cifar_lab.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from cifar_lab.evaluation.detection_plots import plot_risk_coverage
from cifar_lab.evaluation.selective import COVERAGES, risk_coverage, selective_metrics
from cifar_lab.evaluation.temperature import fit_temperature, scale_log_probs

RISK_COVERAGE_FILE = "risk_coverage.png"


def calibration_metrics(log_probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NLL, Brier score and ECE of (N, C) log-probabilities."""
    probs = np.exp(np.asarray(log_probs, dtype=np.float64))
    correct = probs.argmax(axis=1) == np.asarray(labels)
    return {
        "nll": negative_log_likelihood(log_probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs.max(axis=1), correct),
    }


def evaluate_uncertainty(
    probs: np.ndarray,
    log_probs: np.ndarray,
    labels: np.ndarray,
    temperature: float | None,
    calibration: tuple[np.ndarray, np.ndarray] | None,
    out_dir: Path,
    caption: str,
) -> dict[str, Any]:
    """`clean/nll`, `clean/brier` (`clean/ece` is `evaluate_clean`'s), the temperature (given,
    or fitted on `calibration`'s (log-probabilities, labels)) with `clean/ts/nll|brier|ece`,
    the `selective/*` metrics and risk_coverage.png."""
    before = calibration_metrics(log_probs, labels)
    metrics: dict[str, Any] = {"clean/nll": before["nll"], "clean/brier": before["brier"]}
    if calibration is not None:
        temperature = fit_temperature(*calibration)
        metrics["clean/temperature_fitted_on"] = f"calibration set ({len(calibration[1])} images)"
    elif temperature is not None:
        metrics["clean/temperature_fitted_on"] = "given (calibration.temperature)"
    if temperature is not None:
        after = calibration_metrics(scale_log_probs(log_probs, temperature), labels)
        metrics["clean/temperature"] = temperature
        metrics.update({f"clean/ts/{name}": value for name, value in after.items()})
    confidences = np.asarray(probs).max(axis=1)
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(labels)
    metrics.update(selective_metrics(confidences, correct))
    oracle = np.where(correct, 1.0, 0.0)  # every right answer before every wrong one
    curves = {
        f"max softmax, AURC {metrics['selective/aurc']:.4f}": risk_coverage(confidences, correct),
        "oracle (errors last)": risk_coverage(oracle, correct),
    }
    title = f"risk-coverage, clean test split (dotted: 80/90/95% coverage)\n{caption}"
    plot_risk_coverage(out_dir / RISK_COVERAGE_FILE, curves, COVERAGES, title)
    return metrics


def uncertainty_summary(metrics: Mapping[str, Any]) -> list[str]:
    """predict's last lines on calibration and selective prediction."""
    lines = []
    if "clean/nll" in metrics:
        line = f"clean/nll {metrics['clean/nll']:.4f}, clean/brier {metrics['clean/brier']:.4f}"
        if "clean/temperature" in metrics:
            line += (
                f"; temperature {metrics['clean/temperature']:.4f} "
                f"({metrics.get('clean/temperature_fitted_on')}): clean/ts/nll "
                f"{metrics['clean/ts/nll']:.4f}, clean/ts/ece {metrics['clean/ts/ece']:.4f}"
            )
        lines.append(line)
    if "selective/aurc" in metrics:
        lines.append(
            f"selective/aurc {metrics['selective/aurc']:.4f}, accuracy at 80/90/95% coverage "
            + "/".join(f"{metrics[f'selective/acc_at_cov{c}']:.4f}" for c in (80, 90, 95))
        )
    return lines
