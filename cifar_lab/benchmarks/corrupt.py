"""Corruption throughput: how fast this machine writes a CIFAR-C-style set (`cifar_lab.corrupt`).

Each corruption is timed on `bench.corrupt.images` test images at each severity in
`bench.corrupt.severities`, chunk by chunk as the writer runs it (one process, numpy/OpenCV on
the CPU whatever the device). From the per-corruption rates it estimates the time for the full
set of Hendrycks & Dietterich (2019): 19 corruptions x 5 severities x 10,000 test images.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from cifar_lab.benchmarks.data import load_split
from cifar_lab.benchmarks.timing import figures, measure_rates
from cifar_lab.corruptions import SEVERITIES, Corruption, corruption_rng, get_corruptions
from cifar_lab.errors import CifarLabError

FULL_SET_IMAGES = 10_000 * len(SEVERITIES)  # per corruption: CIFAR's test split at 5 severities


def corruption_rates(
    corruption: Corruption,
    images: np.ndarray,
    severities: list[int],
    batch_size: int,
    seed: int,
    timing: DictConfig,
) -> dict[str, float]:
    """img/s of one corruption; a step is one chunk at one severity, cycling over both."""
    chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    streams = {s: corruption_rng(seed, corruption.name, s) for s in severities}
    work = itertools.cycle(itertools.product(severities, chunks))

    def step() -> int:
        severity, chunk = next(work)
        corruption(chunk, severity, streams[severity])
        return len(chunk)

    steps = len(severities) * len(chunks)
    return figures(measure_rates(step, timing.warmup, timing.repeats, steps))


def bench_corrupt(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`corrupt` section: img/s per corruption and for all of them, and the full-set estimate."""
    settings = cfg.bench.corrupt
    severities = [int(s) for s in settings.severities]
    if not severities or any(s not in SEVERITIES for s in severities):
        raise CifarLabError(
            f"bench.corrupt.severities={severities} must be a non-empty subset of "
            f"{list(SEVERITIES)}"
        )
    names = None if settings.names is None else list(settings.names)
    images = load_split(cfg.data, train=False, limit=settings.images).images
    rates = {
        c.name: corruption_rates(c, images, severities, settings.batch_size, cfg.seed, cfg.bench)
        for c in get_corruptions(names)
    }
    # Every corruption writes as many images, so the overall rate is the harmonic mean.
    overall = {
        key: len(rates) / sum(1 / r[key] for r in rates.values())
        for key in ("img_per_s", "img_per_s_min", "img_per_s_max")
    }
    return {
        "images": len(images),
        "batch_size": settings.batch_size,
        "severities": severities,
        "where": "cpu, 1 process (numpy/SciPy/OpenCV), whatever the device",
        **overall,
        "full_set_images": FULL_SET_IMAGES * len(rates),
        "full_set_seconds": FULL_SET_IMAGES * len(rates) / overall["img_per_s"],
        "corruptions": rates,
    }
