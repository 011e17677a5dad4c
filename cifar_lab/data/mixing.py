"""CutMix (Yun et al., 2019) and MixUp (Zhang et al., 2018) on batches, through timm's `Mixup`.

timm folds label smoothing into the mixed soft targets, so one object yields targets that sum
to 1 for every combination of mixing and smoothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data import Mixup

from cifar_lab.errors import CifarLabError


def mixing_enabled(mix: Mapping[str, Any] | None) -> bool:
    """True when the config turns on MixUp or CutMix with a non-zero probability."""
    if not mix:
        return False
    alphas = float(mix.get("mixup_alpha", 0.0)) + float(mix.get("cutmix_alpha", 0.0))
    return alphas > 0 and float(mix.get("prob", 1.0)) > 0


def build_mixup(
    mix: Mapping[str, Any] | None, num_classes: int, label_smoothing: float = 0.0
) -> Mixup | None:
    """timm `Mixup` for `augment.mix`, or None when mixing is off."""
    if not mixing_enabled(mix):
        return None
    try:
        return Mixup(num_classes=num_classes, label_smoothing=label_smoothing, **dict(mix))
    except TypeError as err:
        raise CifarLabError(
            f"augment.mix={dict(mix)} has an argument timm.data.Mixup does not take ({err}); "
            f"expected mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode"
        ) from err
