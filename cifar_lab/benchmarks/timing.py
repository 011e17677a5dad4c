"""Throughput and memory figures: warm-up, then repeats, reported as median with min and max.

GPU work is asynchronous, so each repeat ends with a device synchronisation before the clock is
read (as airbench times with CUDA events after a warm-up). Peak memory is per section: the
kernel's resident-set high-water mark is reset before each one (Linux `clear_refs`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from cifar_lab.memory import peak_child_rss_mib, peak_rss_mib, reset_peak_rss


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def figures(rates: Sequence[float], name: str = "img_per_s") -> dict[str, float]:
    """`name` (the median), `name_min`, `name_max` of per-repeat rates."""
    return {
        name: statistics.median(rates),
        f"{name}_min": min(rates),
        f"{name}_max": max(rates),
    }


def measure_rates(
    step: Callable[[], int],
    warmup: int,
    repeats: int,
    steps_per_repeat: int,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Items/s of `step` (which returns how many items it processed) for each repeat."""
    for _ in range(warmup):
        step()
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start, items = time.perf_counter(), 0
        for _ in range(steps_per_repeat):
            items += step()
        synchronize(device)
        rates.append(items / (time.perf_counter() - start))
    return rates


@contextmanager
def memory_section(device: torch.device | str, into: dict[str, Any]) -> Iterator[None]:
    """Record the section's peak RSS (and peak GPU memory on a GPU) into `into`."""
    since_start = not reset_peak_rss()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    yield
    into["peak_rss_mib"] = peak_rss_mib()
    if since_start:
        into["peak_rss_note"] = "peak since process start (clear_refs not allowed)"
    into["peak_worker_rss_mib"] = peak_child_rss_mib()
    if cuda:
        into["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
