"""`python -m cifar_lab.bench bench=attack`: attack throughput and the training-step cost of
adversarial training, under the keys scripts read (tiny settings: figures are not checked)."""

from __future__ import annotations

from pathlib import Path

from support import TINY_CONVNET, compose_config, tiny_data

from cifar_lab.bench import run_bench


def test_bench_attack_reports_attack_throughput_and_training_step_costs(
    cifar10_root: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "bench",
        [
            "bench=attack", "data=cifar10", *tiny_data(cifar10_root), "trainer=cpu",
            *TINY_CONVNET, f"paths.output_dir={tmp_path}", "bench.warmup=1", "bench.repeats=2",
            "bench.attack.images=8", "bench.attack.batch_size=4", "bench.attack.pgd_steps=2",
            "bench.attack.autoattack_images=0", "bench.attack.eps=64", "bench.train.steps=1",
        ],
    )  # fmt: skip

    result = run_bench(cfg)["attack"]

    assert 0 < result["pgd_img_per_s_min"] <= result["pgd_img_per_s"] <= result["pgd_img_per_s_max"]
    assert "autoattack_img_per_s" not in result  # autoattack_images=0 (minutes on a fresh net)
    train = result["train"]
    for name in ("standard", "fgsm_rs", "pgd"):  # the adv options of bench.attack.adv
        assert train[f"{name}_img_per_s"] > 0, name
    assert train["fgsm_rs_step_cost"] > 0 and train["pgd_step_cost"] > 0
    assert "standard_step_cost" not in train
