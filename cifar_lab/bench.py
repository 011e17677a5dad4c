"""`python -m cifar_lab.bench`: measure this machine's input pipelines, training and scoring speed.

    python -m cifar_lab.bench data.root=/data                       # all sections
    python -m cifar_lab.bench bench=data data.root=/data            # augmentation only
    python -m cifar_lab.bench bench=train model=resnet50 data.batch_size=512 augment.backend=batched
    python -m cifar_lab.bench bench=gpu_check data.root=/data   # every GPU path (reduced on a CPU)
    python -m cifar_lab.bench bench=detect data.root=/data      # what OOD detection adds
    python -m cifar_lab.bench bench=attack experiment=smoke data=cifar10   # attacks, adv. training

Prints the figures, rounded (median and min-max), and writes the whole result to
`<run dir>/bench.json`. Every figure is the median over
`bench.repeats` repeats after `bench.warmup` warm-up steps, with `_min`/`_max` beside it; each
section records its peak RSS (and peak GPU memory on a GPU).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cifar_lab.benchmarks.attack import bench_attack
from cifar_lab.benchmarks.corrupt import bench_corrupt
from cifar_lab.benchmarks.data import bench_data
from cifar_lab.benchmarks.detect import bench_detect
from cifar_lab.benchmarks.gpu_check import bench_gpu_check
from cifar_lab.benchmarks.predict import bench_predict
from cifar_lab.benchmarks.summary import summary_lines
from cifar_lab.benchmarks.timing import memory_section
from cifar_lab.benchmarks.train import bench_train
from cifar_lab.build import resolve_precision
from cifar_lab.cli import check_command_line, exit_on_user_error, setup_run_output
from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_json
from cifar_lab.runs.record import RunRecord
from cifar_lab.speed import configure_torch, usable_cores

log = logging.getLogger(__spec__.name)  # the module's name, also under `python -m`

SECTIONS: dict[str, Callable[[DictConfig, torch.device], dict[str, Any]]] = {
    "data": bench_data,
    "train": bench_train,
    "predict": bench_predict,
    "corrupt": bench_corrupt,
    "gpu_check": bench_gpu_check,
    "detect": bench_detect,
    "attack": bench_attack,
}


def bench_device(cfg: DictConfig) -> torch.device:
    """The GPU when there is one and `trainer.accelerator` allows it, else the CPU."""
    if cfg.trainer.accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def describe(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """What was measured and on what: the config choices and the machine."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": choices.get("model") or model.get("name") or model["_target_"],
        "batch_size": cfg.data.batch_size,
        "precision": resolve_precision(cfg.trainer.precision),
        "channels_last": bool(model.get("channels_last")),
        "compile": model.get("compile") or False,
        "augment": cfg.augment.get("name"),
        "backend": cfg.augment.get("backend") or "albumentations",
    }


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Every section in `bench.sections`, in order; the JSON-ready result."""
    unknown = [name for name in cfg.bench.sections if name not in SECTIONS]
    if unknown:
        raise CifarLabError(
            f"bench.sections has unknown {unknown}; expected some of {list(SECTIONS)} "
            f"(or bench=data|train|predict|corrupt|detect|attack|all)"
        )
    configure_torch()
    device = bench_device(cfg)
    result: dict[str, Any] = describe(cfg, device)
    start = time.perf_counter()
    for name in cfg.bench.sections:
        section: dict[str, Any] = {}
        section_start = time.perf_counter()
        with memory_section(device, section):
            section.update(SECTIONS[name](cfg, device))
        section["seconds"] = time.perf_counter() - section_start
        result[name] = section
    result["seconds"] = time.perf_counter() - start
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    setup_run_output()
    with exit_on_user_error():
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        path = Path(cfg.paths.output_dir) / "bench.json"
        with RunRecord(cfg.paths.output_dir, stop_signals=(signal.SIGTERM,)) as record:
            result = run_bench(cfg)
            write_json(path, result)
            record.update({"bench_json": str(path)})
            print("\n".join(summary_lines(result)))
            log.info("bench.json written to %s", path)
            failed = result.get("gpu_check", {}).get("failed")
            if failed:
                raise CifarLabError(f"gpu_check cases {failed} failed; their errors are in {path}")


if __name__ == "__main__":
    check_command_line("bench")
    main()
