"""Damaged copies of a real checkpoint: what a flipped bit, a cut copy or a hand edit leaves."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def entry_data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Each zip entry's (offset of its stored bytes, size): where its payload lies in the file."""
    raw = path.read_bytes()
    offsets = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 :][:4])
            start = info.header_offset + 30 + name_len + extra_len
            offsets[info.filename] = (start, info.compress_size)
    return offsets


def largest_tensor_entry(path: Path) -> tuple[int, int]:
    """(offset, size) of the biggest tensor storage (`<archive>/data/<n>`) in the checkpoint."""
    storages = {k: v for k, v in entry_data_offsets(path).items() if "/data/" in k}
    return max(storages.values(), key=lambda offset_size: offset_size[1])


def flip_bit(source: Path, target: Path, position: int, bit: int = 4) -> Path:
    data = bytearray(source.read_bytes())
    data[position] ^= 1 << bit
    target.write_bytes(bytes(data))
    return target
