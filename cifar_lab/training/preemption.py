"""SIGTERM and SIGUSR1 (what SLURM sends before it preempts or times out a job) and Ctrl-C
(SIGINT): stop after the current batch, save the training state, and tell the caller how to
resume.

Lightning 2.x already turns SIGTERM into a `SIGTERMException` at the next batch or epoch end,
but that is a `SystemExit` with code 0 (a scheduler sees a success) and saves nothing. Here the
signals are recorded by `PreemptionHandler`, training stops at the next train batch end (or
where Lightning stops for SIGTERM) and `on_exception` saves `last.ckpt`; the run's record
(`runs.record`) marks it `terminated` (`interrupted` for Ctrl-C) with the resume command its
entry point gives, and it exits with 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C).

A signal at an epoch boundary (after the epoch's last.ckpt) resumes bit-exactly; one in the
middle of an epoch saves that mid-epoch state, which Lightning resumes from a fresh data
iterator, so the rest of that epoch draws other batches than an uninterrupted run would.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from cifar_lab.runs.record import Stopped, stop_signal

# Ctrl-C (SIGINT) too: Lightning would turn it into a bare exit 1 and save nothing. A second
# Ctrl-C stops at once, as a user who presses it twice expects.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionHandler(Callback):
    """Records SIGTERM/SIGUSR1 while installed; stops fitting after the current train batch and
    saves `checkpoint_path` when fitting stops on a signal."""

    def __init__(self, checkpoint_path: str | Path):
        self.checkpoint_path = Path(checkpoint_path)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def install(self) -> PreemptionHandler:
        """Handle the signals from now on (Lightning adds its own SIGTERM notice on top)."""
        for signum in PREEMPTION_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def check(self) -> None:
        """Raise `Stopped` if a signal came; for the gaps between trainer calls."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.check()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if stop_signal(exception) is None or trainer.state.fn != TrainerFn.FITTING:
            return
        # the whole training state (not weights only), atomically (AtomicCheckpointIO)
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
