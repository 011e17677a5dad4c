"""`python -m cifar_lab.bench`: every section runs and reports positive figures under the keys
scripts read (tiny settings: the figures themselves are not checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY_CONVNET, run_module, tiny_data
from hydra import compose, initialize_config_dir

from cifar_lab.bench import run_bench
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
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("bench", overrides=overrides)


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
    assert result["train"]["end_to_end_peak_rss_mib"] > 0
    for section in ("data", "train", "predict"):
        assert result[section]["peak_rss_mib"] > 0 and result[section]["seconds"] > 0


def test_a_section_choice_runs_only_that_section(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_bench(["bench=data", *tiny_overrides(cifar100_root, tmp_path)])

    result = run_bench(cfg)

    assert "data" in result and "train" not in result and "predict" not in result


def test_an_unknown_section_names_the_choices(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_bench([*tiny_overrides(cifar100_root, tmp_path), "bench.sections=[speed]"])

    with pytest.raises(CifarLabError, match=r"\['speed'\].*data.*train.*predict"):
        run_bench(cfg)


@pytest.mark.slow
def test_the_command_prints_the_json_it_writes(cifar100_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(cifar100_root, run_dir) + ["bench=train", f"hydra.run.dir={run_dir}"]
    done = run_module("cifar_lab.bench", *overrides, cwd=REPO, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((run_dir / "bench.json").read_text())
    printed, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{\n") :])
    assert printed == written
    assert (
        done.stdout.strip().splitlines()[-1].endswith(f"bench.json written to {run_dir}/bench.json")
    )
    assert written["train"]["lightning_over_plain"] > 0 and written["model"] == "convnet"
