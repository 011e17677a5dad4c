"""Calibration: does the model's confidence match its accuracy, on clean and corrupted images?

Expected calibration error (Naeini et al., 2015; Guo et al., 2017) over the top-label
confidence: images are binned by max-softmax probability into `n_bins` equal-width bins and
ECE = sum_b (n_b / N) |accuracy_b - confidence_b|. torchmetrics computes it; the bins are
also returned for the reliability diagram.

NLL and the multiclass Brier score are a line each of numpy: the NLL reads log-probabilities
(scikit-learn's `log_loss` takes probabilities, which cap the NLL where a float32 probability
underflows to 0), and scikit-learn's `brier_score_loss` scores one class at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import binary_calibration_error

N_BINS = 15


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
) -> float:
    """ECE of top-label `confidences` (max softmax) against whether each prediction was right.

    torchmetrics' binary form takes the confidence as the prediction and correctness as the
    target, which is exactly the multiclass top-label ECE."""
    if len(confidences) == 0:
        return float("nan")
    return float(
        binary_calibration_error(
            torch.as_tensor(confidences, dtype=torch.float32),
            torch.as_tensor(correct, dtype=torch.int64),
            n_bins=n_bins,
            norm="l1",
        )
    )


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin: mean confidence, accuracy and image count (empty bins hold NaN)."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability_bins(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
) -> ReliabilityBins:
    # bins [lo, hi) as torchmetrics draws them (torch.bucketize(right=True)); 1.0 in the last
    index = np.clip(np.floor(np.asarray(confidences) * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=confidences, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=np.asarray(correct, float), minlength=n_bins) / count
    return ReliabilityBins(confidence, accuracy, count)


def negative_log_likelihood(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(label) over images, from (N, C) log-probabilities."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.asarray(log_probs, dtype=np.float64)[np.arange(len(labels)), labels].mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score (Brier, 1950), as torch-uncertainty's `BrierScore`: the squared
    distance between the probability vector and the one-hot label, summed over classes and
    averaged over images (0 = perfect, 2 = sure and wrong)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())
