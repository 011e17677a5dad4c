"""Input-pipeline throughput: albumentations per worker process against the batched kornia path.

albumentations is timed as one DataLoader worker runs it: one process, one torch thread, image
by image. The batched path is timed where training runs it: on the GPU, on the device; on the
CPU, in `bench.data.workers` loader processes (all usable cores by default), plus one of them
alone for the per-process comparison.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cifar_lab.benchmarks.timing import figures, measure_rates
from cifar_lab.data.batched_augment import BatchedPipeline, from_albumentations
from cifar_lab.data.batches import BatchedImages, batch_loader
from cifar_lab.data.datasets import ImageArrays, load_cifar
from cifar_lab.data.transforms import Transforms, build_transforms
from cifar_lab.speed import usable_cores

PREFETCH = 2  # DataLoader's default prefetch_factor: batches each worker has ready


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_split(data_cfg: DictConfig, train: bool, limit: int) -> ImageArrays:
    """The first `limit` images of a split of the configured dataset."""
    arrays = load_cifar(
        data_cfg.name, data_cfg.root, train, data_cfg.download, data_cfg.check_integrity
    )
    return ImageArrays(arrays.images[:limit], arrays.labels[:limit], arrays.classes)


def albumentations_rates(
    transforms: Transforms, images: np.ndarray, timing: DictConfig
) -> dict[str, Any]:
    transform = transforms.train
    stream = itertools.cycle(images)

    def step() -> int:
        transform(image=next(stream))
        return 1

    with torch_threads(1):
        rates = measure_rates(step, timing.warmup, timing.repeats, len(images))
    return {**figures(rates), "where": "1 process, 1 thread (one DataLoader worker)"}


def _pipeline_rates(
    pipeline: BatchedPipeline, data: BatchedImages, batch_size: int, timing: DictConfig
) -> list[float]:
    """The pipeline on random batches of `data`, in this process, on `data`'s device."""

    def step() -> int:
        index = torch.randint(len(data), (batch_size,), device=data.device)
        pipeline(data.images[index])
        return batch_size

    steps = max(1, len(data) // batch_size)
    return measure_rates(step, timing.warmup, timing.repeats, steps, data.device)


def _loader_rates(
    data: BatchedImages, batch_size: int, workers: int, timing: DictConfig
) -> list[float]:
    """Batches as the training loader serves them, built and augmented in `workers` processes."""
    # Batches arrive from the workers in bursts; several per worker average the bursts out.
    steps = max(len(data) // batch_size, 4 * workers)
    # Warm-up drains the batches prefetched while the workers started, so repeats see the
    # steady state.
    warmup = timing.warmup + workers * PREFETCH
    total = (warmup + timing.repeats * steps) * batch_size
    batches = iter(batch_loader(data, batch_size, True, num_workers=workers, num_samples=total))

    def step() -> int:
        return len(next(batches)[0])

    return measure_rates(step, warmup, timing.repeats, steps)


def batched_rates(
    transforms: Transforms,
    arrays: ImageArrays,
    device: torch.device,
    settings: DictConfig,
    timing: DictConfig,
) -> dict[str, Any]:
    pipeline = from_albumentations(transforms.train, transforms.img_size)
    batch_size = settings.batch_size
    if device.type != "cpu":
        data = BatchedImages(arrays.images, arrays.labels, device=device)
        rates = _pipeline_rates(pipeline, data, batch_size, timing)
        return {**figures(rates), "where": f"{device}, whole batches on the device"}
    workers = usable_cores() if settings.workers == "auto" else int(settings.workers)
    with torch_threads(1):
        per_process = _pipeline_rates(
            pipeline, BatchedImages(arrays.images, arrays.labels), batch_size, timing
        )
    data = BatchedImages(arrays.images, arrays.labels, pipeline)
    rates = _loader_rates(data, batch_size, workers, timing)
    return {
        **figures(rates),
        "where": f"cpu, {workers} loader worker process(es) x 1 thread",
        "per_process_img_per_s": figures(per_process)["img_per_s"],
    }


def bench_data(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`data` section: both backends for each augment config in `bench.data.augments`."""
    settings, timing = cfg.bench.data, cfg.bench
    arrays = load_split(cfg.data, train=True, limit=settings.images)
    # Every compared pipeline is normalised with the run's own augment config's statistics.
    stats = OmegaConf.to_container(cfg.augment, resolve=True).get("stats", "dataset")
    albumentations: dict[str, Any] = {}
    batched: dict[str, Any] = {}
    for name, augment_cfg in settings.augments.items():
        augment = {**OmegaConf.to_container(augment_cfg, resolve=True), "stats": stats}
        transforms = build_transforms(augment, cfg.data.name, cfg.data.img_size)
        albumentations[name] = albumentations_rates(transforms, arrays.images, timing)
        batched[name] = batched_rates(transforms, arrays, device, settings, timing)
    headline = settings.headline
    return {
        "augment": headline,
        "images": len(arrays),
        "batch_size": settings.batch_size,
        "albumentations": {**albumentations[headline], **albumentations},
        "batched": {**batched[headline], **batched},
    }
