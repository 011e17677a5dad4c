"""An exponential moving average of the weights (Polyak & Juditsky, 1992) as a Lightning callback.

Lightning 2.6's `EMAWeightAveraging` keeps the average in a `torch.optim.swa_utils.AveragedModel`
beside the module, swaps it in for validation, writes it as the checkpoint's `state_dict` (the
training weights go to `current_model_state`, the update count to `averaging_state`) and copies it
into the module when fitting ends. So `best.ckpt` is chosen by the average's `val/acc`, and
`predict` (which reads `state_dict`) and `test` score the average. Added here:

- a decay warm-up, as timm's `ModelEmaV3` has it: decay_t = min(decay, 1 - (1 + t/gamma)^-power)
  after t updates; without it a 0.999 average of a run of a few hundred steps is mostly the
  first step's weights;
- a checkpoint loaded outside fitting (`trainer.test(ckpt_path=best)`) keeps its `state_dict`,
  the average: Lightning's callback would put the training weights back from
  `current_model_state` if it saw that load (it does not in 2.6, which restores callbacks only
  when fitting; this keeps it so);
- the average moves to the module's device when fitting starts (the callback creates it in
  `setup`, before the strategy moves the module to the GPU).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class WarmupDecay:
    """avg_fn of `AveragedModel`: EMA with decay min(decay, 1 - (1 + t/gamma)^-power); t is the
    number of updates so far, a tensor on the weights' device, so no host sync per tensor."""

    def __init__(self, decay: float, gamma: float = 1.0, power: float | None = 0.75):
        self.decay, self.gamma, self.power = decay, gamma, power

    def __call__(
        self, average: torch.Tensor, current: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        decay: torch.Tensor | float = self.decay
        if self.power:
            decay = (1 - (1 + updates / self.gamma) ** -self.power).clamp(max=self.decay)
        return average + (current - average) * (1 - decay)


class EMA(EMAWeightAveraging):
    """`callbacks=ema`: Lightning's EMA callback with a timm-style decay warm-up
    (`warmup_power: null` turns it off) and an update every `update_every_n_steps` steps from
    `update_starting_at_step` on."""

    def __init__(
        self,
        decay: float = 0.999,
        warmup_gamma: float = 1.0,
        warmup_power: float | None = 0.75,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        use_buffers: bool = True,
    ):
        super().__init__(
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
        )
        self._kwargs["avg_fn"] = WarmupDecay(decay, warmup_gamma, warmup_power)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None and self._device is None:
            self._average_model.to(pl_module.device)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
