"""The out-of-distribution sets an OOD detector is scored on, as the datamodule serves them.

OpenOOD and pytorch-ood report a detector per set and averaged over near-OOD sets (close to the
training classes: the other CIFAR, held-out classes of an open-set split) and far-OOD sets
(SVHN, Textures, Places365, MNIST); noise images are a sanity check kept out of both means.
"""

from __future__ import annotations

from dataclasses import dataclass

from cifar_lab.data.ood import ImageSet

GROUPS = ("near", "far", "sanity")


@dataclass(frozen=True)
class DetectionSet:
    """One OOD set: its images (uint8 (n, 32, 32, 3), scored like the clean test split) and the
    group whose mean it counts in."""

    images: ImageSet
    group: str

    @property
    def name(self) -> str:
        return self.images.name
