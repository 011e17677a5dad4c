"""Writing a labelled CIFAR-C-style set: the chosen test images, every corruption file filled
through a memory map under a temporary name, labels.npy, manifest.json and corruptions.png.

Each file is renamed into place when complete, so a killed run never leaves a partial file under
a final name; the manifest says `"complete": false` until the last file is in, and a rerun with
the same settings writes only what is missing (`python -m cifar_lab.corrupt` drives this).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
import scipy
from matplotlib.figure import Figure
from omegaconf import DictConfig
from tqdm import tqdm

from cifar_lab.corruptions import CORRUPTIONS, Corruption, corruption_rng, describe
from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.errors import CifarLabError
from cifar_lab.files import atomic_write, reserve, write_json

LABELS, MANIFEST, GRID = CIFAR_C.labels_file, "manifest.json", "corruptions.png"


def versions() -> dict[str, str]:
    try:
        own = importlib.metadata.version("cifar-lab")
    except importlib.metadata.PackageNotFoundError:
        own = "not installed"
    return {
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "cifar_lab": own,
    }


def build_manifest(
    cfg: DictConfig, corruptions: Sequence[Corruption], test_size: int, n: int
) -> dict[str, Any]:
    """Everything the bytes depend on; two runs with equal manifests write equal files."""
    manifest = {
        "layout": CIFAR_C.description(),
        "dataset": cfg.data.name,
        "root": str(Path(cfg.data.root).expanduser().resolve()),
        "split": "test",
        "test_images": test_size,
        "n": n,
        "images_per_file": CIFAR_C.images_per_file(n),
        "seed": cfg.corrupt.seed,
        "batch_size": cfg.corrupt.batch_size,
        "severities": list(CIFAR_C.severities),
        "corruptions": {c.name: describe(c) for c in corruptions},
        "versions": versions(),
    }
    return json.loads(json.dumps(manifest))  # as it reads back from disk


def our_files(out: Path) -> list[Path]:
    """Files of a set in `out` that this tool writes (other files there are left alone)."""
    names = [CIFAR_C.file_name(c) for c in CORRUPTIONS] + [LABELS, MANIFEST, GRID]
    return [out / name for name in names if (out / name).is_file()]


def missing_files(out: Path, manifest: dict[str, Any]) -> list[str]:
    """The corruption files of `manifest` not yet in `out` (each appears only when complete)."""
    corruptions = manifest["corruptions"]
    return [name for name in corruptions if not (out / CIFAR_C.file_name(name)).is_file()]


def prepare_out(out: Path, manifest: dict[str, Any], overwrite: bool) -> list[str] | None:
    """The corruptions still to write into `out`: None when it holds this set complete, those
    missing after a killed run of the same settings, all of them for a new folder. A different
    set there is refused, or cleared with `overwrite`."""
    everything = list(manifest["corruptions"])
    if (out / MANIFEST).exists() and not (out / MANIFEST).is_file():
        raise CifarLabError(
            f"corrupt.out={out} holds a {MANIFEST} that is not a file (a folder?); remove it or "
            f"choose another corrupt.out"
        )
    existing = our_files(out)
    if not existing:
        return everything
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((out / MANIFEST).read_text())
    if not isinstance(old, dict):  # a damaged manifest describes no set
        old = {}
    done = old.pop("complete", False)
    if old == manifest:
        missing = missing_files(out, manifest)
        return None if done and not missing and (out / LABELS).is_file() else missing
    if not overwrite:
        differ = sorted(k for k in manifest.keys() | old.keys() if old.get(k) != manifest.get(k))
        what = f"its {MANIFEST} differs in {differ}" if old else f"it has no {MANIFEST}"
        raise CifarLabError(
            f"corrupt.out={out} already holds a different set ({what}); set "
            f"corrupt.overwrite=true to replace it, or choose another corrupt.out"
        )
    (out / MANIFEST).unlink(missing_ok=True)  # first: no manifest may describe a mixed set
    for path in existing:
        path.unlink(missing_ok=True)
    return everything


def write_corruption(
    path: Path,
    corruption: Corruption,
    images: np.ndarray,
    seed: int,
    batch_size: int,
) -> None:
    """All 5 severity blocks of one corruption, chunk by chunk into a memory-mapped temporary
    file, renamed to `path` when complete."""
    n = len(images)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        blocks = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(CIFAR_C.images_per_file(n), *images.shape[1:])
        )
        reserve(tmp, tmp.stat().st_size)  # a full disk fails here, not as a SIGBUS mid-write
        for severity in CIFAR_C.severities:
            rng = corruption_rng(seed, corruption.name, severity)
            offset = CIFAR_C.block(severity, n).start
            for start in range(0, n, batch_size):
                chunk = images[start : start + batch_size]
                blocks[offset + start : offset + start + len(chunk)] = corruption(
                    chunk, severity, rng
                )
        blocks.flush()
        del blocks
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def grid_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Positions of up to `count` images for the grid, one per class while classes last."""
    order = np.random.default_rng(seed).permutation(len(labels))
    _, first = np.unique(labels[order], return_index=True)
    rest = np.setdiff1d(np.arange(len(labels)), order[first], assume_unique=True)
    return np.concatenate([np.sort(order[first]), rest])[:count]


def draw_grid(
    out: Path,
    names: Sequence[str],
    rows: np.ndarray,
    clean: np.ndarray,
    captions: Sequence[str],
    n: int,
    severity: int,
    dataset: str,
) -> Path:
    """The paper's figure: the images at positions `rows` of the set, clean and then under every
    corruption at `severity`, read back from the written files."""
    block = CIFAR_C.block(severity, n).start + rows
    columns = [("clean", clean)] + [
        (name, np.load(out / CIFAR_C.file_name(name), mmap_mode="r")[block]) for name in names
    ]
    fig = Figure(figsize=(0.8 * len(columns), 0.9 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for col, (name, pictures) in enumerate(columns):
        axes[0, col].set_title(name.replace("_", "\n"), fontsize=6)
        for row, picture in enumerate(pictures):
            axes[row, col].imshow(picture, interpolation="nearest")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    for row, caption in enumerate(captions):
        axes[row, 0].set_ylabel(caption, fontsize=6)
    fig.suptitle(f"{dataset} test images, clean and corrupted at severity {severity}", fontsize=9)
    fig.tight_layout()
    with atomic_write(out / GRID, "wb") as f:
        fig.savefig(f, format="png", dpi=150)
    return out / GRID


def write_files(
    out: Path,
    manifest: dict[str, Any],
    corruptions: Sequence[Corruption],
    todo: Sequence[str],
    images: np.ndarray,
    labels: np.ndarray,
    settings: DictConfig,
) -> list[str]:
    """labels.npy and the corruption files named in `todo`, under a manifest that says
    `"complete": false` until the caller marks it done; what was written, for the log."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, {**manifest, "complete": False})
    with atomic_write(out / LABELS, "wb") as f:
        np.save(f, np.tile(labels.astype(np.int64), len(CIFAR_C.severities)))
    remaining = [c for c in corruptions if c.name in todo]
    for corruption in tqdm(remaining, desc="corruptions", unit="file"):
        path = out / CIFAR_C.file_name(corruption.name)
        write_corruption(path, corruption, images, settings.seed, settings.batch_size)
    kept = len(corruptions) - len(remaining)
    kept_note = f" ({kept} kept from an interrupted run)" if kept else ""
    blocks = f"{len(CIFAR_C.severities)} x {len(images)} images"
    return [f"{len(remaining)} corruption files of {blocks}{kept_note}", LABELS]
