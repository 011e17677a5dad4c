"""Checkpoint files written atomically, whatever filesystem `$TMPDIR` is on.

Lightning's `TorchCheckpointIO` saves through an fsspec transaction that stages the file in the
temp folder; when that is another filesystem than the run folder (a RAM-disk `/tmp`), the final
move becomes a copy that first truncates `last.ckpt`, so a kill during the copy leaves an empty
checkpoint and the staged file stranded in `/tmp`. Here the file is written beside its target,
fsynced and `os.replace`d (`cifar_lab.files.atomic_write`): a kill at any moment leaves the old
checkpoint or the new one, and no temp file outside the run folder.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cifar_lab.files import atomic_write, unwritable

ZIP_WRITE_FAILED = ("unexpected pos", "file write failed")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves go through a temp file in the destination folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options: {storage_options}")
        path = Path(path)
        remove_stale_temp_files(path)
        try:
            with atomic_write(path, "wb") as f:
                torch.save(checkpoint, f)
        except RuntimeError as err:
            # torch's zip writer reports a write the disk refused (a full disk) as "unexpected
            # pos"; the temp file is gone already (atomic_write), the old checkpoint kept.
            if not any(sign in str(err) for sign in ZIP_WRITE_FAILED):
                raise
            raise unwritable(path, OSError(errno.ENOSPC, "No space left on device")) from err


def remove_stale_temp_files(path: Path) -> None:
    """Delete temp files of earlier saves of `path` that a kill (SIGKILL) left behind; only one
    process (rank 0) writes a given checkpoint, so none of them is still being written."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
