"""Selective prediction (Geifman & El-Yaniv, 2017): the model answers only for the images it is
most confident about and abstains on the rest. Ranking the test images by confidence (max
softmax), coverage c = the fraction answered, risk(c) = the error rate among them.

Definitions as torch-uncertainty's (`AURC`, `RiskAtxCov`): with the images sorted by decreasing
confidence, risk(i / N) is the error rate of the first i; AURC is the trapezoidal area under
risk over coverage 1/N..1, divided by (1 - 1/N) so that its support counts as [0, 1]; the risk
at coverage c is risk(ceil(c N) / N), and accuracy at coverage c is 1 - that.

Ties in confidence (torch-uncertainty leaves their order to the sort) are resolved by their
expectation over every order: inside a run of equal confidences the errors accrue evenly, so the
result does not depend on how the sort orders them. Without ties the two agree exactly.
Hand-written: a cumulative sum, which torch-uncertainty (not installed) is for this project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COVERAGES = (0.80, 0.90, 0.95)


def risk_coverage(confidences: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at each i / N, i = 1..N: the error rate of the i most confident images."""
    confidences = np.asarray(confidences, dtype=np.float64)
    errors = 1.0 - np.asarray(correct, dtype=np.float64)
    n = len(errors)
    order = np.argsort(-confidences, kind="stable")
    sorted_conf, sorted_err = confidences[order], errors[order]
    # the end (exclusive) of each run of equal confidences, and the errors up to it
    ends = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True]) + 1
    starts = np.r_[0, ends[:-1]]
    before = np.r_[0.0, np.cumsum(sorted_err)]
    run_errors = before[ends] - before[starts]
    run_of = np.repeat(np.arange(len(ends)), ends - starts)
    position = np.arange(1, n + 1)  # images answered
    inside = position - starts[run_of]  # how many of the current run are answered
    cumulative = before[starts[run_of]] + run_errors[run_of] * inside / (ends - starts)[run_of]
    return position / n, cumulative / position


def aurc(confidences: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve, normalised as torch-uncertainty does; NaN for N < 2."""
    coverage, risk = risk_coverage(confidences, correct)
    n = len(coverage)
    if n < 2:
        return float("nan")
    return float(np.trapezoid(risk, coverage) / (1 - 1 / n))


def accuracy_at_coverage(
    confidences: np.ndarray, correct: np.ndarray, coverages: Sequence[float] = COVERAGES
) -> dict[float, float]:
    """1 - risk at each coverage c: the accuracy on the ceil(c N) most confident images."""
    _, risk = risk_coverage(confidences, correct)
    n = len(risk)
    return {c: float(1 - risk[math.ceil(n * c) - 1]) if n else float("nan") for c in coverages}


def selective_metrics(confidences: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """metrics.json's `selective/aurc` and `selective/acc_at_cov80|90|95`."""
    metrics = {"selective/aurc": aurc(confidences, correct)}
    for coverage, accuracy in accuracy_at_coverage(confidences, correct).items():
        metrics[f"selective/acc_at_cov{round(coverage * 100)}"] = accuracy
    return metrics
