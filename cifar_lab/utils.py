"""Small helpers every layer may use: files written atomically, JSON/CSV results, run folders
and their state, peak memory.

Results are written to a temporary file in the destination folder, flushed to disk and then
renamed over the target (`os.replace` is atomic within one filesystem), so a kill at any moment
leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import resource
import socket
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from cifar_lab.errors import CifarLabError

STATUS = Path("/proc/self/status")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; results are shared files
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's file-mode mask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def to_number(value: Any) -> Any:
    """Tensor metric values as plain floats; NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [to_number(v) for v in value]
    return value


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """`payload` as indented JSON, atomically; NaN is written as null."""
    text = json.dumps({k: to_number(v) for k, v in payload.items()}, indent=2, allow_nan=False)
    with atomic_write(path) as f:
        f.write(text + "\n")
    return Path(path)


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with a header row and `\\n` line ends, atomically; None cells are written empty."""
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return Path(path)


# --- run folders ---------------------------------------------------------------------------
def process_alive(pid: Any) -> bool:
    """Whether process `pid` exists on this host (signal 0 tests without sending anything)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def running_status(start_time: str) -> dict[str, Any]:
    """What a run's metrics.json says while it runs: who writes it, where and since when."""
    return {
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": start_time,
    }


def run_state(metrics: Mapping[str, Any]) -> str | None:
    """A run's status from its metrics.json; `killed` for a `running` one whose process is gone
    on this host (SIGKILL, out of memory, a lost node cannot write their own status)."""
    status = metrics.get("status")
    here = metrics.get("host") == socket.gethostname()
    if status == "running" and here and not process_alive(metrics.get("pid")):
        return "killed"
    return status


def read_metrics_json(run_dir: Path) -> dict[str, Any]:
    """A run folder's metrics.json; {} when it is missing, half-written or not an object."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def refuse_to_overwrite(run_dir: Path, holds: Sequence[str], fix: str) -> None:
    """Raise a one-line error if `run_dir` holds files of another run: any of the `holds`
    patterns, or a metrics.json that is finished or still being written by a live process."""
    run_dir = Path(run_dir)
    found = sorted(
        {str(p.relative_to(run_dir)) for pattern in holds for p in run_dir.glob(pattern)}
    )
    state = run_state(read_metrics_json(run_dir))
    if state in ("finished", "running"):
        found.insert(0, f"metrics.json ({state})")
    if found:
        listed = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        raise CifarLabError(
            f"{run_dir} already holds a run ({listed}); refusing to overwrite it: {fix}"
        )


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the resident-set high-water mark (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process's peak resident memory since the last reset (since start where no reset)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def peak_child_rss_mib() -> float:
    """The largest peak of any finished child process (e.g. DataLoader workers), since start."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
