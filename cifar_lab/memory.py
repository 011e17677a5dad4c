"""Peak resident memory of this process and its children, for the figures runs and benches report.

Read from `/proc/self/status` (`VmHWM`, resettable through `/proc/self/clear_refs` on Linux >= 4.0)
so one process can measure several sections; `getrusage` where that file is missing.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


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
