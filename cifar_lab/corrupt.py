"""`python -m cifar_lab.corrupt`: write a labelled CIFAR-C-style set from the test split.

    python -m cifar_lab.corrupt                                  # CIFAR-100, all 19 corruptions
    python -m cifar_lab.corrupt data=cifar10 corrupt.n=1000 corrupt.names=[fog,snow]
    python -m cifar_lab.predict ckpt=... ood=cifar100c ood.root=<corrupt.out>   # score it

The layout is CIFAR-10/100-C's (Hendrycks & Dietterich, 2019), which `ood=cifar100c`/`cifar10c`
reads: `{corruption}.npy` uint8 (5 * n, 32, 32, 3) in severity-major blocks of n images, and
`labels.npy` (the n labels repeated for each severity). Beside them: `manifest.json` (source,
seed, parameters per severity, library versions) and `corruptions.png` (the paper's figure).
The writing itself (memory-mapped files renamed into place when complete, the manifest, the
grid, resuming an interrupted run) is `cifar_lab.corruptions.writer`.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from cifar_lab.cli import check_command_line, exit_on_user_error, setup_run_output
from cifar_lab.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    get_corruptions,
)
from cifar_lab.corruptions.writer import (
    GRID,
    MANIFEST,
    build_manifest,
    draw_grid,
    grid_rows,
    prepare_out,
    write_files,
)
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.subsets import balanced_subset
from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_json
from cifar_lab.runs.record import RunRecord

log = logging.getLogger(__spec__.name)  # the module's name, also under `python -m`
STOPS = (signal.SIGTERM,)  # end as `terminated`; the set's finished files stay, resumable


def check_settings(settings: DictConfig) -> None:
    if settings.names is not None and (
        isinstance(settings.names, str) or not OmegaConf.is_list(settings.names)
    ):
        raise CifarLabError(
            f"corrupt.names={settings.names!r} is not a list; write e.g. "
            f"corrupt.names=[fog,snow], or null for all {len(CORRUPTIONS)}"
        )
    if settings.names is not None and len(set(settings.names)) != len(settings.names):
        repeated = sorted({name for name in settings.names if list(settings.names).count(name) > 1})
        raise CifarLabError(
            f"corrupt.names lists {repeated} more than once; give each corruption once, e.g. "
            f"corrupt.names=[{','.join(dict.fromkeys(settings.names))}]"
        )
    n = settings.n
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise CifarLabError(
            f"corrupt.n={n!r} is not a whole number of test images; expected an integer >= 1 "
            f"(e.g. corrupt.n=1000) or null for the whole test split"
        )
    out = Path(str(settings.out)).expanduser()
    if out.exists() and not out.is_dir():
        raise CifarLabError(
            f"corrupt.out={out} is a file, not a folder; give a folder for the set (it is made "
            f"if missing), e.g. corrupt.out={out.parent / (out.name + '-c')}"
        )
    if not isinstance(settings.seed, int) or settings.seed < 0:
        raise CifarLabError(f"corrupt.seed={settings.seed!r} must be a non-negative integer")
    if int(settings.batch_size) < 1:
        raise CifarLabError(f"corrupt.batch_size={settings.batch_size} must be at least 1")
    if settings.grid_severity not in SEVERITIES:
        raise CifarLabError(
            f"corrupt.grid_severity={settings.grid_severity} is not a severity; expected one "
            f"of {list(SEVERITIES)}"
        )


def write_set(cfg: DictConfig) -> Path:
    """Write the set `cfg.corrupt` describes; the folder it is in."""
    settings = cfg.corrupt
    check_settings(settings)
    names = None if settings.names is None else list(settings.names)
    corruptions = get_corruptions(names)
    data = load_cifar(
        cfg.data.name, cfg.data.root, False, cfg.data.download, cfg.data.check_integrity
    )
    chosen = balanced_subset(data.labels, settings.n, settings.seed)
    images, labels = data.images[chosen], data.labels[chosen]
    manifest = build_manifest(cfg, corruptions, len(data), len(chosen))
    out = Path(settings.out).expanduser()
    todo = prepare_out(out, manifest, settings.overwrite)
    written = []
    if todo is not None:
        written = write_files(out, manifest, corruptions, todo, images, labels, settings)
    if settings.grid_images > 0:
        rows = grid_rows(labels, settings.grid_images, settings.seed)
        captions = [data.classes[label] for label in labels[rows]]
        draw_grid(
            out, [c.name for c in corruptions], rows, images[rows], captions, len(chosen),
            settings.grid_severity, cfg.data.name,
        )  # fmt: skip
        written.append(GRID)
    if todo is not None:
        write_json(out / MANIFEST, {**manifest, "complete": True})
        written.append(MANIFEST)
    already = "" if todo is not None else " (it already held this set, complete)"
    log.info("wrote %s to %s%s", ", ".join(written) or "nothing", out, already)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="corrupt")
def main(cfg: DictConfig) -> None:
    setup_run_output()
    with exit_on_user_error():
        # The job's own record (its Hydra folder); the set's completeness is its manifest.json.
        record = RunRecord(cfg.paths.output_dir, out=str(cfg.corrupt.out), stop_signals=STOPS)
        with record:
            write_set(cfg)


if __name__ == "__main__":
    check_command_line("corrupt")
    main()
