"""`python -m cifar_lab.bench`: every section runs and reports positive figures under the keys
scripts read (tiny settings: the figures themselves are not checked)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from support import TINY_CONVNET, compose_config, run_module, tiny_data

from cifar_lab.bench import run_bench
from cifar_lab.benchmarks.gpu_check import bench_gpu_check
from cifar_lab.benchmarks.summary import summary_lines
from cifar_lab.errors import CifarLabError

REPO = Path(__file__).resolve().parents[1]

# Keys that scripts rely on (dotted paths into the JSON); each has _min/_max beside it.
FIGURES = [
    "data.albumentations.img_per_s",
    "data.batched.img_per_s",
    "train.lightning_img_per_s",
    "train.plain_img_per_s",
    "train.end_to_end_img_per_s",
    "predict.img_per_s",
]
RATIOS = ["train.lightning_over_plain", "train.end_to_end_over_model"]


def tiny_overrides(root: Path, output_dir: Path) -> list[str]:
    return [
        *tiny_data(root),
        "trainer=cpu",
        *TINY_CONVNET,
        f"paths.output_dir={output_dir}",
        "bench.warmup=1",
        "bench.repeats=2",
        "bench.data.images=64",
        "bench.data.batch_size=16",
        "bench.data.workers=1",
        "bench.train.steps=2",
        "bench.predict.images=16",
        "bench.predict.batch_size=8",
    ]


def lookup(result: dict, dotted: str):
    for key in dotted.split("."):
        result = result[key]
    return result


def compose_bench(overrides: list[str]):
    return compose_config("bench", overrides)


def test_all_sections_report_positive_figures(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_bench(["bench=all", *tiny_overrides(cifar100_root, tmp_path)])

    result = run_bench(cfg)

    for key in FIGURES:
        low, mid, high = (lookup(result, key + suffix) for suffix in ("_min", "", "_max"))
        assert 0 < low <= mid <= high, key
    assert all(lookup(result, key) > 0 for key in RATIOS)
    for augment in ("basic", "seed"):
        assert result["data"]["albumentations"][augment]["img_per_s"] > 0
        assert result["data"]["batched"][augment]["img_per_s"] > 0
    assert result["predict"]["shift"]["views"] == 16 and result["predict"]["none"]["views"] == 1
    none, shift = result["predict"]["none"], result["predict"]["shift"]
    overhead = none["img_per_s"] / (16 * shift["img_per_s"])
    assert shift["tta_overhead"] == overhead and "tta_overhead" not in none
    assert result["train"]["end_to_end_peak_rss_mib"] > 0
    for section in ("data", "train", "predict"):
        assert result[section]["peak_rss_mib"] > 0 and result[section]["seconds"] > 0


def test_the_detect_section_times_scoring_with_and_without_detection(
    cifar10_root: Path, tmp_path: Path
) -> None:
    overrides = [*tiny_overrides(cifar10_root, tmp_path), "data=cifar10", "bench=detect",
                 "bench.detect.images=16", "bench.detect.batch_size=8",
                 "bench.detect.fit_images=100", "bench.detect.config.knn.k=5"]  # fmt: skip

    result = run_bench(compose_bench(overrides))["detect"]

    for key in ("plain", "detect", "odin"):
        assert 0 < result[key]["img_per_s_min"] <= result[key]["img_per_s_max"], key
    assert (
        result["detect_over_plain"] == result["detect"]["img_per_s"] / result["plain"]["img_per_s"]
    )
    assert result["fit"]["fit_images"] == 100 and result["fit"]["feature_dim"] == 16
    for name in ("mahalanobis", "knn", "vim", "react_energy"):
        assert result["fit"][name]["fit_seconds"] > 0 and result["fit"][name]["peak_rss_mib"] > 0
    lines = "\n".join(summary_lines({"detect": result}))
    assert "detect.detect_over_plain" in lines and "detect.fit.knn.fit_seconds" in lines


def test_a_section_choice_runs_only_that_section(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_bench(["bench=data", *tiny_overrides(cifar100_root, tmp_path)])

    result = run_bench(cfg)

    assert "data" in result and "train" not in result and "predict" not in result


def test_an_unknown_section_names_the_choices(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_bench([*tiny_overrides(cifar100_root, tmp_path), "bench.sections=[speed]"])

    with pytest.raises(CifarLabError, match=r"\['speed'\].*data.*train.*predict"):
        run_bench(cfg)


@pytest.mark.slow
def test_the_command_prints_the_figures_of_the_json_it_writes(
    cifar100_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(cifar100_root, run_dir) + ["bench=train", f"hydra.run.dir={run_dir}"]
    done = run_module("cifar_lab.bench", *overrides, cwd=REPO, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((run_dir / "bench.json").read_text())
    lightning = f"{written['train']['lightning_img_per_s']:,.1f}"
    assert re.search(rf"train\.lightning_img_per_s +{re.escape(lightning)}  \(", done.stdout)
    assert "{" not in done.stdout and len(done.stdout.splitlines()) < 20  # no raw JSON
    assert (
        done.stdout.strip().splitlines()[-1].endswith(f"bench.json written to {run_dir}/bench.json")
    )
    assert written["train"]["lightning_over_plain"] > 0 and written["model"] == "convnet"


@pytest.mark.slow
def test_the_gpu_check_runs_every_case_in_reduced_mode_on_a_cpu(
    cifar100_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = [*tiny_data(cifar100_root), "bench=gpu_check", f"hydra.run.dir={run_dir}"]
    done = run_module("cifar_lab.bench", *overrides, cwd=REPO, timeout=600)

    assert done.returncode == 0, done.stderr[-2000:]
    check = json.loads((run_dir / "bench.json").read_text())["gpu_check"]
    assert check["reduced"] is True and check["failed"] == []
    for model in ("convnet", "resnet50"):
        for backend in ("albumentations", "batched"):
            assert check[f"{model}_{backend}"]["end_to_end_over_model"] > 0
    assert check["compile"]["lightning_img_per_s"] > 0
    assert check["predict_shift"]["shift"]["views"] == 16
    for recipe in ("speedrun", "speedrun_muon_ema"):
        assert 0.0 <= check[recipe]["val/acc"] <= 1.0 and check[recipe]["fit_seconds"] > 0


def test_a_failing_gpu_check_case_is_recorded_and_the_others_still_run(
    cifar100_root: Path, tmp_path: Path
) -> None:
    cfg = compose_bench(["bench=gpu_check", *tiny_overrides(cifar100_root, tmp_path)])
    with open_dict(cfg):
        cfg.bench.gpu_check.overrides = tiny_data(cifar100_root)  # the cases' own command line
        cases = cfg.bench.gpu_check.cases
        cfg.bench.gpu_check.cases = {
            "broken": {"kind": "train", "overrides": ["model=no_such_model"]},
            "speedrun": cases.speedrun,
        }

    result = bench_gpu_check(cfg, torch.device("cpu"))

    assert result["failed"] == ["broken"] and "no_such_model" in result["broken"]["error"]
    assert 0.0 <= result["speedrun"]["val/acc"] <= 1.0
