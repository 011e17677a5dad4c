"""CutMix/MixUp and label smoothing together still give targets that are distributions."""

from __future__ import annotations

import pytest
import torch

from cifar_lab.data.mixing import build_mixup, mixing_enabled
from cifar_lab.errors import CifarLabError


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize(
    "mix", [{"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}]
)
def test_mixed_smoothed_targets_sum_to_one(mix: dict, smoothing: float) -> None:
    torch.manual_seed(0)
    mixup = build_mixup(mix, num_classes=100, label_smoothing=smoothing)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8)

    mixed, targets = mixup(images, labels)

    assert mixed.shape == images.shape and targets.shape == (8, 100)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8))
    assert (targets >= 0).all()
    assert (targets > 0).sum(dim=1).min() >= 2  # mixed or smoothed: never a pure one-hot


def test_mixing_off_gives_no_mixer() -> None:
    assert build_mixup(None, 100) is None
    assert not mixing_enabled({"mixup_alpha": 0.0, "cutmix_alpha": 0.0})
    assert not mixing_enabled({"mixup_alpha": 1.0, "prob": 0.0})


def test_a_bad_mix_argument_names_the_expected_ones() -> None:
    with pytest.raises(CifarLabError, match="cutmix_alpha"):
        build_mixup({"mixup_alpha": 1.0, "cutmix_alfa": 1.0}, 100)


@pytest.mark.parametrize(
    ("mix", "expected"),
    [
        ({"mixup_alpha": "x"}, r"augment.mix.mixup_alpha='x' is invalid; expected a number >= 0"),
        ({"cutmix_alpha": -1.0}, r"augment.mix.cutmix_alpha=-1.0 is invalid"),
        ({"mixup_alpha": 1.0, "prob": None}, r"augment.mix.prob=None is invalid"),
        ("on", r"augment.mix='on' is not a group of settings"),
    ],
)
def test_a_mix_setting_of_the_wrong_type_is_one_line(mix, expected) -> None:
    """From the command line (augment.mix={mixup_alpha:x}) or a checkpoint: float() raised."""
    with pytest.raises(CifarLabError, match=expected):
        build_mixup(mix, 100)
