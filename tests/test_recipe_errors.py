"""A recipe's keys meet a model they were not written for: one line, naming the key and fix."""

from __future__ import annotations

import pytest

from cifar_lab.errors import CifarLabError
from cifar_lab.train import train


def test_the_smoke_recipes_convnet_keys_on_another_model_are_one_line(train_cfg) -> None:
    cfg = train_cfg("experiment=smoke", "model=resnet50", "model.pretrained=false")

    with pytest.raises(CifarLabError, match=r"model\.widths is not a setting") as err:
        train(cfg)

    assert "~model.widths" in str(err.value) and "\n" not in str(err.value)
