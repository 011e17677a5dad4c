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
    if not isinstance(mix, Mapping):
        raise CifarLabError(
            f"augment.mix={mix!r} is not a group of settings; expected null (off) or e.g. "
            f"'augment.mix={{mixup_alpha:0.8,cutmix_alpha:1.0,prob:0.5,switch_prob:0.5}}'"
        )
    alphas = mix_number(mix, "mixup_alpha", 0.0) + mix_number(mix, "cutmix_alpha", 0.0)
    return alphas > 0 and mix_number(mix, "prob", 1.0) > 0


def mix_number(mix: Mapping[str, Any], key: str, default: float) -> float:
    """`mix[key]` as a number >= 0 (an alpha or a probability); a one-line error otherwise."""
    value = mix.get(key, default)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not 0 <= value < float("inf"):
        raise CifarLabError(
            f"augment.mix.{key}={value!r} is invalid; expected a number >= 0, e.g. "
            f"augment.mix.{key}={default or 1.0}"
        )
    return float(value)


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
