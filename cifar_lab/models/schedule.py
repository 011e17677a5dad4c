"""Linear warm-up then cosine decay (Loshchilov & Hutter, 2017), stepped per optimizer step.

timm's `CosineLRScheduler` does the arithmetic; this wrapper only converts the config's epochs
into optimizer steps, which Lightning knows once the dataloaders exist.
"""

from __future__ import annotations

from timm.scheduler import CosineLRScheduler
from torch.optim import Optimizer


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
