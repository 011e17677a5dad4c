"""What an offline wandb run wrote: its `.wandb` records and the exit code it finished with."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2


def wandb_records(run_file: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The records of an offline run's .wandb file.

    Hand-written because wandb 0.31 ships no reader for it: a 7-byte ':W&B' header, then the
    LevelDB log format (32 KiB blocks of crc32 | length | type | data chunks)."""
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a FULL record, or the LAST chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def wandb_exit_code(job: Path) -> int | None:
    """The exit code `wandb.finish` recorded in the job's one offline run (None: not finished)."""
    (run_file,) = job.glob("wandb/offline-run-*/*.wandb")
    exits = [record.exit.exit_code for record in wandb_records(run_file) if record.HasField("exit")]
    return exits[-1] if exits else None
