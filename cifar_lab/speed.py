"""Run-time speed settings that change no result: threads, cudnn autotuning, memory layout, compile.

- Threads: as many as the cores this process may use (CPU affinity and the cgroup quota of a
  container), not the host's core count, which oversubscribes a small container. They wait
  passively (`OMP_WAIT_POLICY=PASSIVE`, set in `cifar_lab/__init__.py` before torch loads):
  spinning threads starved the DataLoader workers and each other on 2 shared cores (ConvNet at
  batch 128: 40 img/s spinning, 180 img/s passive, 190 img/s with one thread).
- cudnn.benchmark: on unless the run asks for determinism (Lightning leaves it off otherwise).
- channels_last: NHWC tensors, the layout cuDNN/oneDNN convolutions run fastest in (the ConvNet
  at batch 128, fp32, 2 CPU cores: 361 img/s against 258 img/s in NCHW, `bench=train`).
- torch.compile through `nn.Module.compile()`, which compiles in place: the state dict keeps its
  keys (no `_orig_mod.` prefix), so a checkpoint of a compiled run loads into a plain model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

# Keys of the `model` config that set how the net runs, not what it is.
SPEED_KEYS = ("channels_last", "compile")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPU cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def configure_torch(threads: int | None = None) -> None:
    """Threads sized to the usable cores; TF32 matmuls on GPUs for fp32 runs (bf16 runs are
    unaffected)."""
    torch.set_num_threads(threads or usable_cores())
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def cudnn_benchmark(trainer_cfg: Mapping[str, Any]) -> bool:
    """`trainer.benchmark`, where null means on unless `trainer.deterministic` is set."""
    benchmark = trainer_cfg.get("benchmark")
    return (not trainer_cfg.get("deterministic")) if benchmark is None else bool(benchmark)


def split_model_config(model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the factory's config, the speed options) of a `model` config, resolved."""
    if OmegaConf.is_config(model_cfg):
        spec = OmegaConf.to_container(model_cfg, resolve=True)
    else:
        spec = dict(model_cfg)
    options = {key: spec.pop(key) for key in SPEED_KEYS if key in spec}
    return spec, options


def compile_options(compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`model.compile`: false/null = eager, true = torch.compile defaults, a mapping = its
    keyword arguments (e.g. {mode: max-autotune})."""
    if not compile:
        return None
    return {} if compile is True else dict(compile)


def prepare_net(net: nn.Module, channels_last: bool = False, compile: Any = None) -> nn.Module:
    """`net` in the channels_last layout and/or compiled in place; returns the same module."""
    if channels_last:
        net.to(memory_format=torch.channels_last)
    options = compile_options(compile)
    if options is not None:
        net.compile(**options)
    return net


def to_memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D batch in the net's layout (a no-op when it already is)."""
    if channels_last and images.ndim == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
