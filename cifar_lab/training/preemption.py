"""SIGTERM and SIGUSR1 (what SLURM sends before it preempts or times out a job): stop after the
current batch, save the training state, and tell the caller how to resume.

Lightning 2.x already turns SIGTERM into a `SIGTERMException` at the next batch or epoch end,
but that is a `SystemExit` with code 0 (a scheduler sees a success) and saves nothing. Here the
signals are recorded by `PreemptionHandler`, training stops at the next train batch end (or
where Lightning stops for SIGTERM), `on_exception` saves `last.ckpt`, and `train` marks the run
`terminated` and exits with 128 + the signal number (143 for SIGTERM).

A signal at an epoch boundary (after the epoch's last.ckpt) resumes bit-exactly; one in the
middle of an epoch saves that mid-epoch state, which Lightning resumes from a fresh data
iterator, so the rest of that epoch draws other batches than an uninterrupted run would.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Training stopped on `signum`; its exit code is the shell's 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def stop_signal(err: BaseException) -> int | None:
    """The signal behind `err` (ours or Lightning's SIGTERM stop), None for any other error."""
    if isinstance(err, Preempted):
        return err.signum
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    return None


class PreemptionHandler(Callback):
    """Records SIGTERM/SIGUSR1 while installed; stops fitting after the current train batch and
    saves `checkpoint_path` when fitting stops on a signal."""

    def __init__(self, checkpoint_path: str | Path):
        self.checkpoint_path = Path(checkpoint_path)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

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
        """Raise `Preempted` if a signal came; for the gaps between trainer calls."""
        if self.signum is not None:
            raise Preempted(self.signum)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.check()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if stop_signal(exception) is None or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.checkpoint_path)  # atomic (AtomicCheckpointIO)


def resume_command(run_dir: Path, argv_overrides: Sequence[str] | None = None) -> str:
    """The command line that continues this run in its folder: its overrides, ckpt_path=auto and
    the folder (`hydra.run.dir`), so `auto` finds the last.ckpt the stop saved."""
    if argv_overrides is None:
        argv_overrides = []
        if HydraConfig.initialized():
            argv_overrides = OmegaConf.to_container(HydraConfig.get().overrides.task)
    kept = [o for o in argv_overrides if not o.split("=")[0].lstrip("+~").startswith("ckpt_path")]
    words = ["python", "-m", "cifar_lab.train", *kept, "ckpt_path=auto", f"hydra.run.dir={run_dir}"]
    return shlex.join(words)
