"""A run's record on disk, `metrics.json`: written from a run's start to its end, read back by
`report` and by the refusal to write into a folder that holds another run.

`RunRecord` is the one writer (train, predict, corrupt and bench all use it): `running` (pid,
host, start time) from the start, then `finished` with the results, `failed` with the error,
`terminated` (SIGTERM/SIGUSR1, with the resume command the entry point gave), `interrupted`
(Ctrl-C) or `diverged` (a NaN or infinite training loss, with its step). A record is
append-only: a later attempt in the same folder keeps the earlier records under `earlier`, and
an attempt that fails or stops after a finished one leaves that finished record in place with
the attempt added under `attempts`, so no kill, typo or refused resume turns a finished result
into a failed one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from hydra.errors import InstantiationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_json

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
FINISHED = "finished"
# the status of a run that a signal stopped
STOP_STATUS = {
    signal.SIGTERM: "terminated",
    signal.SIGUSR1: "terminated",
    signal.SIGINT: "interrupted",
}


class Stopped(SystemExit):
    """The run stopped on `signum`; its exit code is the shell's 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class Diverged(CifarLabError):
    """Training stopped because its loss became NaN or infinite at `step`."""

    def __init__(self, step: int, loss: float, lr: float | None = None):
        at_lr = f" (lr {lr:.3g})" if lr is not None else ""
        super().__init__(
            f"training diverged: the loss became {loss} at step {step}{at_lr}; last.ckpt and "
            f"best.ckpt keep the last finite epoch: lower optim.optimizer.lr or raise "
            f"trainer.gradient_clip_val"
        )
        self.step = step


def stop_signal(err: BaseException | None) -> int | None:
    """The signal behind `err` (ours, Lightning's SIGTERM stop, Ctrl-C), None for any other."""
    if isinstance(err, Stopped):
        return err.signum
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return signal.SIGINT
    return None


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# --- reading ------------------------------------------------------------------------------
def read_record(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's metrics.json; {} when it is missing, half-written or not an object."""
    try:
        metrics = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def running_status(start_time: str) -> dict[str, Any]:
    """What a run's record says while it runs: who writes it, where and since when."""
    return {
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": start_time,
    }


def process_alive(pid: Any) -> bool:
    """Whether process `pid` exists on this host (signal 0 tests without sending anything)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OverflowError:
        return False
    return True


def run_state(metrics: Mapping[str, Any]) -> str | None:
    """A run's status from its metrics.json; `killed` for a `running` one whose process is gone
    on this host (SIGKILL, out of memory, a lost node cannot write their own status)."""
    status = metrics.get("status")
    here = metrics.get("host") == socket.gethostname()
    if status == "running" and here and not process_alive(metrics.get("pid")):
        return "killed"
    return status if isinstance(status, str) else None


def refuse_to_overwrite(run_dir: str | Path, holds: Sequence[str], fix: str) -> None:
    """Raise a one-line error if `run_dir` holds files of another run: any of the `holds`
    patterns, or a metrics.json that is finished or still being written by a live process."""
    run_dir = Path(run_dir)
    found = sorted(
        {str(p.relative_to(run_dir)) for pattern in holds for p in run_dir.glob(pattern)}
    )
    state = run_state(read_record(run_dir))
    if state in (FINISHED, "running"):
        found.insert(0, f"{METRICS_FILE} ({state})")
    if found:
        listed = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        raise CifarLabError(
            f"{run_dir} already holds a run ({listed}); refusing to overwrite it: {fix}"
        )


# --- writing ------------------------------------------------------------------------------
def error_text(err: BaseException) -> str:
    """`Type: message` of what ended a run (what a Hydra instantiation wrapped, unwrapped)."""
    cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
    return f"{type(cause).__name__}: {cause}"


class RunRecord:
    """The `metrics.json` of the run in `run_dir`, from `with RunRecord(...)` to its end.

    `update()` adds results as they come; leaving the block writes the final status. An
    exception is never swallowed; a stop by a signal leaves as `SystemExit(128 + signal)`.
    `writes=False` (DDP ranks but 0) keeps the record in memory only. `stop_signals` become
    `Stopped` while the block runs, for entry points with no handler of their own (train has
    `training.preemption`); `resume_command` is what a stopped record tells the user to run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        writes: bool = True,
        resume_command: str | None = None,
        stop_signals: Sequence[int] = (),
        **fields: Any,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.writes = writes
        self.resume_command = resume_command
        self.stop_signals = tuple(stop_signals)
        self.metrics: dict[str, Any] = {}
        self._fields = fields
        self.previous: dict[str, Any] = {}  # the record the folder held when the run began
        self._previous_handlers: dict[int, Any] = {}

    @property
    def finished_before(self) -> bool:
        """Whether the folder held a finished run when this one began (a resume in place)."""
        return self.previous.get("status") == FINISHED

    @property
    def status(self) -> str | None:
        return self.metrics.get("status")

    def update(self, values: Mapping[str, Any]) -> None:
        self.metrics.update(values)

    def write(self) -> None:
        """metrics.json as it stands; a record that cannot be written (a full disk) is said in
        the log, and never hides the error that ended the run."""
        if not self.writes:
            return
        try:
            write_json(self.path, self.metrics)
        except CifarLabError as err:
            if self.status == "running":
                raise
            log.error("the run's record was not saved: %s", err)

    def __enter__(self) -> RunRecord:
        self.previous = read_record(self.run_dir)
        earlier = dict(self.previous) if self.writes else {}
        self.metrics = {**running_status(now()), "run_dir": str(self.run_dir), **self._fields}
        if earlier:
            before = earlier.pop("earlier", [])
            self.metrics["earlier"] = [*(before if isinstance(before, list) else []), earlier]
        self.write()
        for signum in self.stop_signals:
            self._previous_handlers[signum] = signal.signal(signum, self._stop)
        return self

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        self.metrics["end_time"] = now()
        signum = stop_signal(err)
        if err is None:
            self.metrics["status"] = FINISHED
        elif signum is not None:
            self.metrics.update(
                status=STOP_STATUS.get(signum, "terminated"), signal=signal.Signals(signum).name
            )
            if self.resume_command:
                self.metrics["resume_command"] = self.resume_command
        elif isinstance(err, SystemExit) and not err.code:
            self.metrics["status"] = FINISHED
        elif isinstance(err, Diverged):
            self.metrics.update(status="diverged", step=err.step, error=str(err))
        else:
            self.metrics.update(status="failed", error=error_text(err))
        self._keep_a_finished_record()
        self.write()
        if signum is not None:
            hint = f"; resume with: {self.resume_command}" if self.resume_command else ""
            log.warning("stopped by %s%s", signal.Signals(signum).name, hint)
            raise SystemExit(128 + signum) from None  # the shell's code, whatever raised it
        return False

    def _keep_a_finished_record(self) -> None:
        """An attempt that did not finish, after a finished record: keep the finished record at
        the top and add this attempt to its `attempts`."""
        earlier = self.metrics.get("earlier") or []
        last = earlier[-1] if earlier else {}
        if self.status == FINISHED or not isinstance(last, dict) or last.get("status") != FINISHED:
            return
        attempt = {k: v for k, v in self.metrics.items() if k != "earlier"}
        attempts = last.get("attempts")
        kept = {**last, "attempts": [*(attempts if isinstance(attempts, list) else []), attempt]}
        if len(earlier) > 1:
            kept["earlier"] = earlier[:-1]
        self.metrics = kept
