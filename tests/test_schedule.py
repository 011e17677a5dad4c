"""Linear warm-up then cosine, per optimizer step."""

from __future__ import annotations

import math

import pytest
import torch

from cifar_lab.models.schedule import warmup_cosine


def lr_at(step: int, **kwargs) -> float:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = warmup_cosine(optimizer, **kwargs)
    scheduler.step_update(num_updates=step)
    return optimizer.param_groups[0]["lr"]


SCHEDULE = dict(
    total_steps=110, steps_per_epoch=10, warmup_epochs=1, warmup_start_lr=0.001, min_lr=0.0
)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.001),  # warm-up starts at warmup_start_lr
        (5, 0.001 + 5 * (0.1 - 0.001) / 10),  # linear
        (10, 0.1),  # peak once warm-up is over
        (60, 0.05),  # half-way through the cosine: the mean of peak and min
        (10 + 25, 0.05 * (1 + math.cos(math.pi * 25 / 100))),
        (110, 0.0),  # min_lr at the end
    ],
)
def test_warmup_then_cosine(step: int, expected: float) -> None:
    assert lr_at(step, **SCHEDULE) == pytest.approx(expected, abs=1e-9)


def test_min_lr_is_the_floor() -> None:
    assert lr_at(110, **{**SCHEDULE, "min_lr": 1e-5}) == pytest.approx(1e-5)
    assert lr_at(500, **{**SCHEDULE, "min_lr": 1e-5}) == pytest.approx(1e-5)
