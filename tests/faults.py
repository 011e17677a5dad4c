"""Faults injected into a real command line: `python -c` installs one, then runs the entry point
as `python -m` would (`command(...)` builds that argv)."""

from __future__ import annotations

import importlib
import os
import signal as signal_module
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

TESTS = Path(__file__).resolve().parent


def kill_while_writing(name: str, nth: int) -> None:
    """SIGKILL this process halfway through writing the `nth` save of a file called `name`."""
    real_save, count = torch.save, 0

    def save(obj, f, *args, **kwargs):
        nonlocal count
        try:
            fd = f.fileno()
            target = os.readlink(f"/proc/self/fd/{fd}")
        except (AttributeError, OSError):  # an in-memory buffer, as Lightning's own save uses
            fd, target = None, ""
        if Path(target).name.startswith(f".{name}.") or Path(target).name == name:
            count += 1
            if count == nth:
                real_save(obj, f, *args, **kwargs)
                f.flush()
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                os.kill(os.getpid(), signal_module.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def run_with_fault(
    fault: str, module: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m module args` with `faults.<fault>` installed first, wandb offline."""
    code = (
        f"import faults, runpy; faults.{fault}; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": path, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip


class SignalAt(Callback):
    """Sends this process `signal` at the end of train epoch `epoch`, or of its batch `batch`:
    a SIGTERM/SIGUSR1 arriving at a known moment. `+callbacks.x._target_=faults.SignalAt`."""

    def __init__(self, signal: str = "SIGTERM", epoch: int = 0, batch: int | None = None):
        self.signum, self.epoch, self.batch = getattr(signal_module, signal), epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.batch == batch_idx and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


def signal_in(target: str, signal: str = "SIGTERM") -> None:
    """Send this process `signal` when the function `target` (`module.function`) is called:
    a stop arriving while an entry point works."""
    module_name, _, name = target.rpartition(".")
    module = importlib.import_module(module_name)
    real = getattr(module, name)

    def stopped_here(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal_module, signal))
        return real(*args, **kwargs)

    setattr(module, name, stopped_here)
