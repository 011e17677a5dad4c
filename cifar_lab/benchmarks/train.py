"""Training-step throughput: Lightning against a plain PyTorch loop, and data + model against model.

All runs use the module `cifar_lab.build.build_module` makes from the config (same net,
optimizer, schedule, loss, memory layout, compile and precision):
- end_to_end: `Trainer.fit` with the configured datamodule, augmentation included; its peak
  RSS (`end_to_end_peak_rss_mib`) is what a training run of this config holds;
- lightning: `Trainer.fit` on batches already in memory (what Lightning adds: hooks, metrics,
  logging); `end_to_end_over_model` = end_to_end / lightning, 1.0 when the input keeps up;
- plain: forward, the module's own `training_loss`, backward, clip, optimizer and schedule
  step in a bare loop on the same batches; `lightning_over_plain` pairs each Lightning
  repeat with a plain one run right after.
The in-memory batches are normal noise already in the model's layout on the device: the
convolutions cost the same whatever the pixels are.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from cifar_lab.benchmarks.timing import figures, synchronize
from cifar_lab.build import build_datamodule, build_module, quiet_trainer, resolve_precision
from cifar_lab.errors import CifarLabError
from cifar_lab.memory import peak_rss_mib
from cifar_lab.models.classifier import CIFARClassifier, loss_views
from cifar_lab.speed import cudnn_benchmark, to_memory_format

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
FULL_PRECISION = ("32-true", "32", 32)

Batch = tuple[torch.Tensor, torch.Tensor]


class StepTimer(Callback):
    """Images/s of each repeat of `steps` training batches after `warmup` batches. The clock is
    read at batch ends, so a repeat includes fetching its batches. `between` runs after each
    timed repeat but the last, off the clock (to interleave another measurement)."""

    def __init__(
        self, warmup: int, repeats: int, steps: int, between: Callable[[], Any] | None = None
    ):
        self.warmup, self.repeats, self.steps = max(1, warmup), repeats, steps
        self.between = between
        self.rates: list[float] = []
        self.start, self.images = 0.0, 0

    @property
    def total_steps(self) -> int:
        return self.warmup + self.repeats * self.steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += len(batch[0])
        done = batch_idx + 1 - self.warmup
        if done < 0 or done % self.steps:
            return
        synchronize(pl_module.device)
        if done > 0:
            self.rates.append(self.images / (time.perf_counter() - self.start))
        if self.between is not None and 0 < done < self.repeats * self.steps:
            self.between()
        self.start, self.images = time.perf_counter(), 0


def bench_trainer(cfg: DictConfig, device: torch.device, timer: StepTimer) -> L.Trainer:
    """A Trainer for `timer.total_steps` training batches: no validation, logging or saving."""
    return quiet_trainer(
        cfg.trainer,
        device,
        cfg.paths.output_dir,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
        max_epochs=1,
        limit_train_batches=timer.total_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )


def memory_batches(cfg: DictConfig, device: torch.device, count: int = 4) -> list[Batch]:
    """`count` batches of normalised-looking images and labels, already on the device (with
    `loss=jsd`, each image as its views: (B, views, 3, S, S))."""
    size, channels_last = cfg.data.img_size, bool(cfg.model.get("channels_last"))
    views = loss_views(cfg.loss.get("name"))
    shape = (cfg.data.batch_size, *([views] if views > 1 else []), 3, size, size)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for _ in range(count):
        images = torch.randn(*shape, generator=generator)
        labels = torch.randint(cfg.data.num_classes, (cfg.data.batch_size,), generator=generator)
        batches.append((to_memory_format(images, channels_last).to(device), labels.to(device)))
    return batches


def lightning_rates(
    cfg: DictConfig, device: torch.device, data: Any, between: Callable[[], Any] | None = None
) -> list[float]:
    """`Trainer.fit` on `data` (a DataLoader or a LightningDataModule)."""
    settings = cfg.bench
    timer = StepTimer(settings.warmup, settings.repeats, settings.train.steps, between)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    trainer = bench_trainer(cfg, device, timer)
    with warnings.catch_warnings():
        # timing trains only: the module's validation_step is meant to go unused here
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no")
        if isinstance(data, L.LightningDataModule):
            trainer.fit(module, datamodule=data)
        else:
            trainer.fit(module, train_dataloaders=data)
    if len(timer.rates) < settings.repeats:
        raise CifarLabError(
            f"bench timed {len(timer.rates)} of {settings.repeats} repeats: the training set "
            f"has fewer than {timer.total_steps} batches of {cfg.data.batch_size}; lower "
            f"bench.train.steps/bench.repeats or use more data"
        )
    return timer.rates


def plain_step(module: CIFARClassifier, cfg: DictConfig, device: torch.device) -> Callable:
    """One training step as a bare PyTorch loop writes it, with the module's own parts."""
    precision = resolve_precision(cfg.trainer.precision)
    if precision not in FULL_PRECISION and precision not in AUTOCAST:
        raise CifarLabError(
            f"trainer.precision={precision!r}: the plain loop of bench runs "
            f"{[*AUTOCAST, '32-true']}; pick one of those"
        )
    dtype = AUTOCAST.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = module.optimizer_factory(module.net)
    scheduler = None
    if module.scheduler_factory is not None:
        steps = cfg.bench.warmup + cfg.bench.repeats * cfg.bench.train.steps
        scheduler = module.scheduler_factory(optimizer, total_steps=steps, steps_per_epoch=steps)
    clip = cfg.trainer.get("gradient_clip_val")
    updates = 0

    def step(batch: Batch) -> int:
        nonlocal updates
        images, labels = batch
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        with autocast:
            loss, _ = module.training_loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.net.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        updates += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=updates)
        return len(images)

    return step


class PlainLoop:
    """The plain loop on in-memory batches, timed a repeat at a time."""

    def __init__(self, cfg: DictConfig, device: torch.device, batches: list[Batch]):
        L.seed_everything(cfg.seed, verbose=False)
        torch.backends.cudnn.benchmark = cudnn_benchmark(cfg.trainer)
        self.module = build_module(cfg).to(device).train()
        self.step = plain_step(self.module, cfg, device)
        self.device, self.batches, self.steps = device, batches, cfg.bench.train.steps
        self.rates: list[float] = []
        for i in range(cfg.bench.warmup):
            self.step(batches[i % len(batches)])

    def run_repeat(self) -> None:
        synchronize(self.device)
        start, images = time.perf_counter(), 0
        for i in range(self.steps):
            images += self.step(self.batches[i % len(self.batches)])
        synchronize(self.device)
        self.rates.append(images / (time.perf_counter() - start))


def bench_train(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`train` section. First Lightning end to end, whose peak memory is that of a training run
    (one model, the datamodule); then Lightning and the plain loop on in-memory batches, their
    repeats interleaved so both see the same load on a shared machine."""
    datamodule = build_datamodule(cfg)
    end_to_end = figures(lightning_rates(cfg, device, datamodule), "end_to_end_img_per_s")
    training_memory = {"end_to_end_peak_rss_mib": peak_rss_mib()}
    if device.type == "cuda":
        training_memory["end_to_end_peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    workers = datamodule.num_workers
    del datamodule

    batches = memory_batches(cfg, device)
    total = cfg.bench.warmup + cfg.bench.repeats * cfg.bench.train.steps
    repeated = DataLoader([batches[i % len(batches)] for i in range(total)], batch_size=None)
    plain = PlainLoop(cfg, device, batches)
    lightning_runs = lightning_rates(cfg, device, repeated, between=plain.run_repeat)
    plain.run_repeat()  # the last pair's plain half
    lightning = figures(lightning_runs, "lightning_img_per_s")
    return {
        "num_workers": workers,
        **lightning,
        **figures(plain.rates, "plain_img_per_s"),
        **end_to_end,
        # the median of the per-pair ratios: robust to load that changes between pairs
        "lightning_over_plain": statistics.median(
            [a / b for a, b in zip(lightning_runs, plain.rates, strict=True)]
        ),
        "end_to_end_over_model": (
            end_to_end["end_to_end_img_per_s"] / lightning["lightning_img_per_s"]
        ),
        **training_memory,
    }
