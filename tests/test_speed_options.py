"""Speed options change speed only: channels_last, torch.compile, threads, cudnn autotuning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import TINY_CONVNET

from cifar_lab.build import build_module
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.speed import configure_torch, cudnn_benchmark, split_model_config, usable_cores
from cifar_lab.train import train


def conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.ndim == 4]


def test_channels_last_changes_layout_not_outputs(train_cfg) -> None:
    torch.manual_seed(0)
    fast = build_module(train_cfg(*TINY_CONVNET, "model.channels_last=true")).eval()
    plain = build_module(train_cfg(*TINY_CONVNET, "model.channels_last=false")).eval()
    plain.net.load_state_dict(fast.net.state_dict())
    images = torch.randn(4, 3, 32, 32)

    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(fast))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain))
    torch.testing.assert_close(fast(images), plain(images), atol=1e-5, rtol=1e-4)


def test_speed_keys_stay_out_of_the_model_factory(train_cfg) -> None:
    cfg = train_cfg(*TINY_CONVNET, "model.compile={mode: max-autotune}")

    factory, options = split_model_config(cfg.model)

    assert "channels_last" not in factory and "compile" not in factory
    assert options == {"channels_last": True, "compile": {"mode": "max-autotune"}}
    assert factory["num_classes"] == cfg.data.num_classes  # interpolations resolved


def assert_compiled_run_loads_into_a_plain_model(train_cfg, compile_option: str) -> None:
    cfg = train_cfg(*TINY_CONVNET, f"model.compile={compile_option}")
    assert build_module(cfg).net._compiled_call_impl is not None  # nn.Module.compile() took

    state = read_checkpoint(train(cfg)["last_model_path"]).state_dict

    assert not [key for key in state if "_orig_mod" in key]
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    plain = build_module(OmegaConf.merge(cfg, {"model": {"compile": False}}))
    plain.net.load_state_dict(net_state)  # strict: the same keys, no prefix to strip
    torch.testing.assert_close(plain.net.state_dict(), net_state)


def test_a_compiled_run_saves_plain_state_dict_keys(train_cfg) -> None:
    """Dynamo traces the net (eager backend: no C++ build, seconds on a CPU)."""
    assert_compiled_run_loads_into_a_plain_model(train_cfg, "{backend: eager}")


@pytest.mark.slow
def test_an_inductor_compiled_run_saves_plain_state_dict_keys(train_cfg) -> None:
    """The default torch.compile backend, C++ code generation included."""
    assert_compiled_run_loads_into_a_plain_model(train_cfg, "true")


def test_usable_cores_follows_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"

    quota.write_text("max 100000\n")
    assert usable_cores(quota) == affinity
    quota.write_text("50000 100000\n")  # half a core still gets one thread
    assert usable_cores(quota) == 1
    assert usable_cores(tmp_path / "missing") == affinity


def test_torch_threads_are_sized_to_the_usable_cores() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        configure_torch()
        assert torch.get_num_threads() == usable_cores()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("configured", "deterministic", "expected"),
    [(None, False, True), (None, True, False), (False, False, False), (True, True, True)],
)
def test_cudnn_benchmark_is_on_unless_determinism_is_asked(configured, deterministic, expected):
    trainer_cfg = {"benchmark": configured, "deterministic": deterministic}

    assert cudnn_benchmark(trainer_cfg) is expected


def test_speedrun_experiment_trains_with_its_gpu_settings_swapped_for_cpu(train_cfg) -> None:
    cfg = train_cfg(
        "experiment=speedrun",
        "trainer=cpu",  # the experiment asks for a GPU and bf16
        "trainer.precision=32-true",
        "model.compile=false",
        "model.name=resnet18",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
    )

    assert cfg.augment.backend == "batched" and cfg.model.compile is False
    metrics = train(cfg)

    assert metrics["status"] == "finished" and 0.0 <= metrics["test/acc"] <= 1.0
