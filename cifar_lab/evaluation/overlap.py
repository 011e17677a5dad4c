"""Which test corruptions a model already saw in training: honest OOD scores.

A corruption is `seen` when a training augmentation of the checkpoint's augment config applies
the same kind of distortion; each step's record in `cifar_lab.data.augment_steps` says which
corruptions it covers and why. The reference recipe's augmentation list trains on noise, JPEG
and brightness/contrast, so its "OOD" accuracy is partly in-distribution.
`ood/acc/mean_unseen` averages only the corruptions no augmentation covered.

Crops, flips, rotations, CutMix/MixUp and random erasing change geometry or mix images without
reproducing any corruption's pixel statistics: none of them marks one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cifar_lab.data.augment_steps import STEP_BY_NAME


def covered_by(step: str, spec: Any) -> tuple[str, ...]:
    """The corruptions the augment step `step` (configured as `spec`) covers."""
    record = STEP_BY_NAME.get(step)
    if record is None or not record.covers_if(spec):
        return ()
    return record.covers


def enabled_steps(augment: Mapping[str, Any]) -> list[str]:
    """The augment config's training steps that are on (not null, false or an empty mapping,
    and not with probability 0)."""
    steps = []
    for key, spec in augment.items():
        if not spec:
            continue
        if isinstance(spec, Mapping) and float(spec.get("p", 1.0)) == 0.0:
            continue
        steps.append(key)
    return steps


def seen_corruptions(augment: Mapping[str, Any], corruptions: Iterable[str]) -> dict[str, str]:
    """Corruption -> the augment step(s) that cover it, for those of `corruptions` it covers."""
    seen: dict[str, list[str]] = {}
    for step in enabled_steps(augment):
        for corruption in covered_by(step, augment[step]):
            seen.setdefault(corruption, []).append(step)
    return {c: "+".join(seen[c]) for c in corruptions if c in seen}
