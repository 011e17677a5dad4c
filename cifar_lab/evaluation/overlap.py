"""Which test corruptions a model already saw in training: honest OOD scores.

A corruption is `seen` when a training augmentation of the checkpoint's augment config applies
the same kind of distortion (Gaussian noise in training makes `gaussian_noise` at test a seen
distortion, not a measure of robustness to an unknown shift). The reference recipe's
augmentation list trains on noise, JPEG and brightness/contrast, so its "OOD" accuracy is partly
in-distribution. `ood/acc/mean_unseen` averages only the corruptions no augmentation covered.

AugMix's operation set (autocontrast, equalize, posterize, rotate, solarize, shear, translate)
leaves out every operation that overlaps a CIFAR-C corruption by design (Hendrycks et al.,
2020, section 3), and crops, flips, rotations, CutMix/MixUp and random erasing change geometry
or mix images without reproducing any corruption's pixel statistics: none of them marks one.
`augment.augmix.all_ops=true` brings brightness, contrast, colour and sharpness back, and so
the photometric corruptions. RandAugment's and TrivialAugment's Sharpness below 1 softens an
image a little; it is not counted as covering the blurs, whose kernels are far wider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
PHOTOMETRIC = ("brightness", "contrast", "saturate")

# augment config key -> (the corruptions it covers, why)
SEEN_BY: dict[str, tuple[tuple[str, ...], str]] = {
    "gauss_noise": (NOISES, "per-pixel random noise, the family of all four noise corruptions"),
    "jpeg": (("jpeg_compression",), "JPEG re-encoding at random quality"),
    "brightness_contrast": (
        ("brightness", "contrast"),
        "random brightness shift and contrast scaling",
    ),
    "color_jitter": (PHOTOMETRIC, "random brightness, contrast and saturation (and hue)"),
    "randaugment": (
        PHOTOMETRIC,
        "RandAugment's Brightness, Contrast and Color (saturation) operations",
    ),
    "trivialaugment": (
        PHOTOMETRIC,
        "TrivialAugment's Brightness, Contrast and Color (saturation) operations",
    ),
    # only with all_ops=true (see `covered_by`): the paper's set leaves these operations out
    "augmix": (PHOTOMETRIC, "AugMix with all_ops=true adds Brightness, Contrast and Color"),
}


def covered_by(step: str, spec: Any) -> tuple[str, ...]:
    """The corruptions the augment step `step` (configured as `spec`) covers."""
    if step == "augmix" and not (isinstance(spec, Mapping) and spec.get("all_ops")):
        return ()
    return SEEN_BY.get(step, ((), ""))[0]


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
