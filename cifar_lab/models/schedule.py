"""Linear warm-up then cosine decay (Loshchilov & Hutter, 2017), stepped per optimizer step.

timm's `CosineLRScheduler` does the arithmetic; this wrapper only converts the config's epochs
into optimizer steps, which Lightning knows once the dataloaders exist.

A resumed run restores the schedule's state from the checkpoint, and with it the length the
first run was given: raising `trainer.max_epochs` on resume would train the extra epochs at the
minimum lr. As timm's `train.py` does for a new `--epochs`, the schedule is sized for this run's
epochs instead (`resize_schedule`), with a notice.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from timm.scheduler import CosineLRScheduler
from torch.optim import Optimizer

from cifar_lab.errors import CifarLabError

log = logging.getLogger(__name__)
SIZE_KEYS = ("t_initial", "warmup_t")


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_start_lr: float = 1e-6,
    min_lr: float = 1e-6,
) -> CosineLRScheduler:
    """LR goes linearly from `warmup_start_lr` to the optimizer's lr over `warmup_epochs`,
    then follows a half cosine down to `min_lr` at `total_steps`."""
    for key, value in (("warmup_epochs", warmup_epochs), ("warmup_start_lr", warmup_start_lr),
                       ("min_lr", min_lr)):  # fmt: skip
        # a negative warm-up would shift the cosine (timm starts it part-way), silently
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise CifarLabError(
                f"optim.scheduler.{key}={value!r} is invalid; expected a number >= 0, e.g. "
                f"optim.scheduler.{key}={1 if key == 'warmup_epochs' else 1e-6}"
            )
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    return CosineLRScheduler(
        optimizer,
        # at least 2: the lr of a lone cosine step is the same, and timm warns about 1
        t_initial=max(total_steps - warmup_steps, 2),
        lr_min=min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_start_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def schedule_size(scheduler: Any) -> dict[str, int]:
    """The length fields of a timm scheduler (empty for other schedulers)."""
    return {
        k: getattr(scheduler, k) for k in SIZE_KEYS if isinstance(getattr(scheduler, k, None), int)
    }


def resize_schedule(trainer: L.Trainer, size: dict[str, int]) -> None:
    """Give the (restored) schedule the length `size` that this run's epochs ask for."""
    for config in trainer.lr_scheduler_configs:
        restored = schedule_size(config.scheduler)
        if not size or restored == size:
            continue
        scheduler = config.scheduler
        for key, value in size.items():
            setattr(scheduler, key, value)
        if scheduler.warmup_t:  # timm precomputes the warm-up's lr increments
            scheduler.warmup_steps = [
                (base - scheduler.warmup_lr_init) / scheduler.warmup_t
                for base in scheduler.base_values
            ]
        log.warning(
            "the resumed LR schedule was sized for %s steps; trainer.max_epochs=%s sizes it for "
            "%s (warm-up %s), so the lr follows the cosine of this run's length from here on",
            restored.get("t_initial", 0) + restored.get("warmup_t", 0),
            trainer.max_epochs,
            size.get("t_initial", 0) + size.get("warmup_t", 0),
            size.get("warmup_t", 0),
        )
