"""Result files written atomically (JSON, CSV, any stream), for every layer; a full disk or a
read-only folder is one line naming the folder (and the free space), not a traceback.

Results are written to a temporary file in the destination folder, flushed to disk and then
renamed over the target (`os.replace` is atomic within one filesystem), so a kill at any moment
leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from cifar_lab.errors import CifarLabError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise unwritable(path, err) from err
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; results are shared files
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise unwritable(path, err) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# a full disk or quota, a read-only filesystem, a folder the user may not write
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def unwritable(path: Path, err: OSError, needed: int | None = None) -> OSError | CifarLabError:
    """A one-line error for writing `path` where it cannot be written (other OS errors as they
    are): the folder, why, and for a full disk the free space (and what was needed)."""
    if err.errno not in UNWRITABLE:
        return err
    folder = path.parent
    why = os.strerror(err.errno).lower()
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        want = f", {needed / 2**20:,.0f} MiB needed" if needed else ""
        return CifarLabError(
            f"cannot write {path.name} in {folder}: {why} ({free / 2**20:,.0f} MiB free{want}); "
            f"free space there or write elsewhere (hydra.run.dir=<folder on another disk>)"
        )
    return CifarLabError(
        f"cannot write {path.name} in {folder}: {why}; write elsewhere (hydra.run.dir=<a folder "
        f"you can write>) or make it writable"
    )


def reserve(path: Path, size: int) -> None:
    """Allocate `size` bytes of `path` on disk now, so a full disk is an error here and not a
    SIGBUS later, when a memory map of the file writes into a page the disk cannot hold."""
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as err:
        raise unwritable(path, err, needed=size) from err


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


def cell(value: Any) -> Any:
    """A CSV cell: None empty, a float to 6 decimals (no 0.30000000000000004 from a mean)."""
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with a header row and `\\n` line ends, atomically; see `cell` for the values."""
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([cell(v) for v in row] for row in rows)
    return Path(path)
