"""The CIFAR-C layout on disk, in one place: the writer, the OOD readers, the tables and the
seen/unseen labelling all read it, so they cannot disagree about where a severity starts.

CIFAR-10/100-C (Hendrycks & Dietterich, 2019, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR) holds one uint8 array (5 * n, 32, 32, 3) per corruption,
`{corruption}.npy`, severity-major: images [(s - 1) * n, s * n) are severity s. `labels.npy`
repeats the n test labels once per severity. The course's leaderboard files share the image
layout and have no labels.

The 15 benchmark corruptions are those RobustBench and AugMix average over; the paper adds 4
extra ones. The families are the paper's four groups (its Figure 1 and appendix), each with
one extra corruption.

This module imports nothing heavier than the standard library, so `cifar_lab.corruptions` can
use it without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cifar_lab.errors import CifarLabError

SEVERITIES = (1, 2, 3, 4, 5)
# CIFAR images, and so every CIFAR-C and leaderboard image, are 32 x 32 RGB.
NATIVE_SIZE = 32
IMAGE_SHAPE = (NATIVE_SIZE, NATIVE_SIZE, 3)


@dataclass(frozen=True)
class CifarCLayout:
    """Severities, image shape, file names, severity blocks and the corruption name lists."""

    benchmark: tuple[str, ...]
    extra: tuple[str, ...]
    families: Mapping[str, tuple[str, ...]]
    severities: tuple[int, ...] = SEVERITIES
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    labels_file: str = "labels.npy"

    @property
    def corruptions(self) -> tuple[str, ...]:
        """All of them, benchmark first: the order files are read and reported in."""
        return self.benchmark + self.extra

    def family(self, corruption: str) -> str:
        """noise, blur, weather or digital."""
        for family, members in self.families.items():
            if corruption in members:
                return family
        raise CifarLabError(
            f"corruption {corruption!r} is in no family; expected one of {list(self.corruptions)}"
        )

    def file_name(self, corruption: str) -> str:
        return f"{corruption}.npy"

    def array_shape(self, length: str) -> str:
        """The shape of a file as text, e.g. `(5*n, 32, 32, 3)` for length `5*n`."""
        return f"({length}, {', '.join(map(str, self.image_shape))})"

    def images_per_file(self, per_severity: int) -> int:
        return len(self.severities) * per_severity

    def block(self, severity: int, per_severity: int) -> slice:
        """The images of `severity` in a file of `per_severity` images per severity."""
        if severity not in self.severities:
            raise CifarLabError(
                f"severity {severity!r} is out of range; expected one of {list(self.severities)}"
            )
        first = self.severities.index(severity) * per_severity
        return slice(first, first + per_severity)

    def blocks(self, per_severity: int) -> tuple[slice, ...]:
        """Every severity's block, in file order."""
        return tuple(self.block(s, per_severity) for s in self.severities)

    def locate(self, position: int, per_severity: int) -> tuple[int, int]:
        """(severity, index within its block) of the image at `position` of a file."""
        block, index = divmod(position, per_severity)
        return self.severities[block], index

    def description(self) -> str:
        """The layout in words, as `corrupt` writes it into manifest.json."""
        length = f"{len(self.severities)}*n"
        return (
            f"{{corruption}}.npy uint8 {self.array_shape(length)}, images [(s-1)*n, s*n) at "
            f"severity s; {self.labels_file} int64 ({length},), the n test labels repeated per "
            f"severity"
        )


# fmt: off
CIFAR_C = CifarCLayout(
    benchmark=(
        "gaussian_noise", "shot_noise", "impulse_noise",
        "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness",
        "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    ),
    extra=("speckle_noise", "gaussian_blur", "spatter", "saturate"),
    families=MappingProxyType(
        {
            "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
            "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
            "weather": ("snow", "frost", "fog", "brightness", "spatter"),
            "digital": (
                "contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"
            ),
        }
    ),
)
# fmt: on
