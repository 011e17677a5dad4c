"""The open-set protocol: train and test on k of a dataset's classes; the test images of the
others are unknowns a model should flag (Neal et al., 2018, "Open Set Learning with
Counterfactual Images", ECCV; Vaze et al., 2022, "Open-Set Recognition: a Good Closed-Set
Classifier is All You Need?", ICLR). The classic CIFAR-10 split keeps 6 classes and holds 4 out.

`data.classes` lists the known classes (indices of the dataset, or names), relabelled 0..k-1 in
the order given; the model predicts k classes.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cifar_lab.data.datasets import ImageArrays
from cifar_lab.data.image_files import Candidates
from cifar_lab.errors import CifarLabError


def class_index(value: object, names: Sequence[str], dataset: str) -> int:
    """One entry of `data.classes` (an index or a name of `dataset`'s classes) as its index."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value in names:
        return list(names).index(value)
    close = difflib.get_close_matches(str(value), list(names), n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise CifarLabError(
        f"data.classes has {value!r}, not a class of {dataset}{guess}; expected class indices "
        f"0..{len(names) - 1} or names such as {', '.join(names[:3])}"
    )


@dataclass(frozen=True)
class ClassSubset:
    """The known classes: their indices in the dataset, in the order they are relabelled."""

    indices: tuple[int, ...]
    dataset_classes: tuple[str, ...]

    @classmethod
    def resolve(cls, chosen: object, names: Sequence[str], dataset: str) -> ClassSubset:
        """`data.classes` checked against `dataset`'s class `names`, in one line if it is wrong."""
        is_list = isinstance(chosen, Sequence) and not isinstance(chosen, (str, bytes))
        if not is_list or not 2 <= len(chosen) <= len(names):
            shown = repr(chosen) if len(repr(chosen)) < 80 else f"{repr(chosen)[:80]}..."
            raise CifarLabError(
                f"data.classes={shown} is not a list of 2 to {len(names)} classes; write e.g. "
                f"data.classes=[0,1,2,3,4,5] (indices) or names of {dataset}'s classes"
            )
        indices = tuple(class_index(value, names, dataset) for value in chosen)
        repeated = sorted(names[i] for i, n in Counter(indices).items() if n > 1)
        if repeated:
            raise CifarLabError(
                f"data.classes lists {', '.join(repeated)} more than once; list each class once"
            )
        return cls(indices, tuple(names))

    @property
    def names(self) -> list[str]:
        return [self.dataset_classes[i] for i in self.indices]

    def known(self, split: ImageArrays) -> ImageArrays:
        """The split's images of the known classes, relabelled 0..k-1."""
        if int(split.labels.max(initial=0)) >= len(self.dataset_classes):
            raise CifarLabError(
                f"labels go up to {int(split.labels.max())} but the dataset names "
                f"{len(self.dataset_classes)} classes; its files are damaged: re-download them"
            )
        relabel = np.full(len(self.dataset_classes), -1, dtype=np.int64)
        relabel[list(self.indices)] = np.arange(len(self.indices))
        keep = relabel[split.labels] >= 0
        return ImageArrays(split.images[keep], relabel[split.labels[keep]], self.names)

    def heldout(self, split: ImageArrays) -> Candidates:
        """The split's images of every other class, with their dataset labels (for a
        class-balanced subset); no known class among them."""
        keep = ~np.isin(split.labels, self.indices)
        return Candidates.of_arrays(split.images[keep], split.labels[keep])
