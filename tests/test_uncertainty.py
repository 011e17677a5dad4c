"""Calibration (NLL, Brier, temperature scaling) and selective prediction (risk-coverage, AURC,
accuracy at coverage) on hand-made cases with known answers, and the predict step's averaged
log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from cifar_lab.evaluation.selective import accuracy_at_coverage, aurc, risk_coverage
from cifar_lab.evaluation.temperature import check_temperature, fit_temperature, scale_log_probs
from cifar_lab.models.outputs import mean_over_views


def calibrated_logits(n: int = 4000, classes: int = 10, seed: int = 0):
    """Logits with labels drawn from their own softmax: calibrated by construction (T = 1)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator) * 2.5
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)
    return logits, labels.numpy()


# --- calibration ----------------------------------------------------------------------------
def test_nll_and_brier_of_hand_made_predictions() -> None:
    probs = np.array([[0.5, 0.5, 0.0], [0.1, 0.8, 0.1]])
    labels = np.array([0, 1])
    log_probs = np.log(np.where(probs > 0, probs, 1e-300))

    assert negative_log_likelihood(log_probs, labels) == pytest.approx(
        -(math.log(0.5) + math.log(0.8)) / 2
    )
    # (0.25 + 0.25 + 0) and (0.01 + 0.04 + 0.01), averaged
    assert brier_score(probs, labels) == pytest.approx((0.5 + 0.06) / 2)
    assert brier_score(np.eye(3), np.arange(3)) == 0.0
    assert brier_score(np.eye(3)[[1, 2, 0]], np.arange(3)) == 2.0  # sure and wrong


def test_temperature_scaling_softens_a_model_made_over_confident() -> None:
    logits, labels = calibrated_logits()
    over_confident = (logits * 10).log_softmax(1).numpy()

    temperature = fit_temperature(over_confident, labels)
    scaled = scale_log_probs(over_confident, temperature)

    assert temperature == pytest.approx(10, rel=0.1)  # undoes the x10
    assert negative_log_likelihood(scaled, labels) < 0.5 * negative_log_likelihood(
        over_confident, labels
    )
    ece = [
        expected_calibration_error(np.exp(lp).max(1), np.exp(lp).argmax(1) == labels)
        for lp in (over_confident, scaled)
    ]
    assert ece[1] < ece[0] / 3
    assert (scaled.argmax(1) == over_confident.argmax(1)).all()  # no prediction changes


def test_the_fitted_temperature_is_the_nll_minimum() -> None:
    logits, labels = calibrated_logits(seed=1)
    log_probs = (logits * 0.4).log_softmax(1).numpy()  # under-confident

    temperature = fit_temperature(log_probs, labels)

    def nll(t: float) -> float:
        return negative_log_likelihood(scale_log_probs(log_probs, t), labels)

    assert temperature < 1
    assert nll(temperature) <= min(nll(temperature * 0.99), nll(temperature * 1.01))


def test_bad_temperature_settings_are_one_line() -> None:
    assert check_temperature("auto") == "auto" and check_temperature(1.5) == 1.5
    assert check_temperature("none") is None and check_temperature(None) is None
    for bad in (0, -1.0, "hot", True, float("inf")):
        with pytest.raises(CifarLabError, match=r"calibration\.temperature=.* is invalid"):
            check_temperature(bad)
    with pytest.raises(CifarLabError, match="holds no image"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_tta_log_probabilities_are_the_log_of_the_averaged_softmax() -> None:
    """Computed in log space, so an over-confident model's tiny probabilities do not underflow."""
    net = torch.nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.mul_(400)  # logit gaps of hundreds: float32 softmax underflows to 0
    views = [torch.randn(5, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    outputs = mean_over_views(net, views, ("log_probs",))

    probs = torch.stack([net(v).double().softmax(1) for v in views]).mean(0)
    assert torch.allclose(outputs["probs"].double(), probs, atol=1e-6)
    exact = torch.stack([net(v).double().log_softmax(1) for v in views]).logsumexp(0) - math.log(3)
    assert torch.allclose(outputs["log_probs"].double(), exact, atol=1e-3)
    assert torch.isfinite(outputs["log_probs"]).all() and (outputs["log_probs"] < -80).any()


# --- selective prediction -------------------------------------------------------------------
def test_a_perfect_ranking_has_the_known_aurc() -> None:
    """4 images, the one error least confident: risks 0, 0, 0, 1/4 at coverage 1/4..1; the
    trapezoid is 1/32, normalised by 1 - 1/4: 1/24."""
    confidences, correct = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 0], bool)

    coverage, risk = risk_coverage(confidences, correct)

    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0] and risk.tolist() == [0, 0, 0, 0.25]
    assert aurc(confidences, correct) == pytest.approx(1 / 24)


def test_a_reversed_ranking_is_worse_and_all_right_is_zero() -> None:
    correct = np.array([1, 1, 1, 0], bool)
    worst = aurc(np.array([0.6, 0.7, 0.8, 0.9]), correct)  # the error most confident

    # risks 1, 1/2, 1/3, 1/4: trapezoid (1.5 + 5/6 + 7/12) / 8, over 3/4
    assert worst == pytest.approx((1.5 + 5 / 6 + 7 / 12) / 8 / 0.75)
    assert aurc(np.arange(5.0), np.ones(5, bool)) == 0.0
    assert math.isnan(aurc(np.array([0.5]), np.array([True])))


def test_accuracy_at_coverage_answers_the_most_confident_ceil_cn_images() -> None:
    """10 images, the errors at confidence ranks 9 and 10: 80% coverage (8 images) makes no
    error, 90% (9 images) one, 95% (ceil 9.5 = 10) two."""
    confidences = np.linspace(1, 0.1, 10)
    correct = np.array([1] * 8 + [0, 0], bool)

    assert accuracy_at_coverage(confidences, correct) == pytest.approx(
        {0.8: 1.0, 0.9: 8 / 9, 0.95: 0.8}
    )


def test_tied_confidences_count_their_errors_evenly_whatever_their_order() -> None:
    confidences = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    correct = np.array([1, 1, 0, 1, 0, 0], bool)

    _, risk = risk_coverage(confidences, correct)
    _, risk_swapped = risk_coverage(confidences, correct[[0, 4, 3, 2, 1, 5]])

    # inside the run of four 0.5s (two errors), each answered image adds half an error
    assert risk.tolist() == pytest.approx([0, 0.5 / 2, 1 / 3, 1.5 / 4, 2 / 5, 3 / 6])
    assert risk_swapped.tolist() == pytest.approx(risk.tolist())


def test_without_ties_aurc_is_torch_uncertaintys() -> None:
    """torch-uncertainty's definition written out: sort by confidence, cumulative error rate,
    trapezoid over coverage 1/N..1, divided by (1 - 1/N)."""
    rng = np.random.default_rng(0)
    confidences = rng.random(500)
    correct = rng.random(500) < confidences

    order = np.argsort(-confidences)
    rates = np.cumsum(~correct[order]) / np.arange(1, 501)
    expected = np.trapezoid(rates, np.arange(1, 501) / 500) / (1 - 1 / 500)

    assert aurc(confidences, correct) == pytest.approx(expected, abs=1e-12)
    assert accuracy_at_coverage(confidences, correct, (0.9,))[0.9] == pytest.approx(
        1 - rates[math.ceil(500 * 0.9) - 1]
    )
