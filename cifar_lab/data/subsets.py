"""Class-balanced choices of images: an order whose every prefix covers the classes evenly, and
a seeded subset of `n` images, for scoring part of a split (a batch limit, `corrupt.n`,
`ood.per_severity`) without favouring the classes a file happens to list first."""

from __future__ import annotations

import numpy as np

from cifar_lab.errors import CifarLabError


def class_interleaved(labels: np.ndarray) -> np.ndarray:
    """An order of `labels` that takes one image of each class in turn (class 0, 1, ..., then
    the second of each): any prefix, such as `trainer.limit_val_batches` / `limit_test_batches`
    score, covers the classes evenly even when the split is sorted by class. A whole split
    scores the same in any order."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(labels), dtype=np.int64)  # the image's place within its class
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rank[order] = np.arange(len(labels)) - np.repeat(starts, counts)
    return np.lexsort((labels, rank))


def balanced_subset(
    labels: np.ndarray, n: int | None, seed: int, key: str = "corrupt.n"
) -> np.ndarray:
    """Sorted indices of `n` images spread as evenly over the classes as the split allows.

    Images are ranked within their class in a seeded random order and taken rank by rank, so
    class counts differ by at most one (where every class has enough images). `key` names the
    setting in the error for an `n` out of range.
    """
    if n is None:
        return np.arange(len(labels))
    if not 0 < n <= len(labels):
        raise CifarLabError(
            f"{key}={n} is out of range; expected 1..{len(labels)} (the split's size) or null "
            f"for all of it"
        )
    order = np.random.default_rng(seed).permutation(len(labels))
    ranks = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        ranks[members] = np.arange(len(members))
    return np.sort(order[np.argsort(ranks[order], kind="stable")][:n])
