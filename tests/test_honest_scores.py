"""Honest OOD scores: corruptions seen in training are marked, calibration is measured, and a
mean carries a benchmark's name only when every corruption of that benchmark was scored."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from support import compose_train

from cifar_lab.data.augment_steps import AUGMENT_STEPS
from cifar_lab.data.ood import CorruptionSet, ImageSet
from cifar_lab.evaluation.calibration import expected_calibration_error, reliability_bins
from cifar_lab.evaluation.evaluate import evaluate_corruptions, summary_groups
from cifar_lab.evaluation.overlap import seen_corruptions
from cifar_lab.evaluation.scoring import Scores

BENCHMARK = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur"]
BENCHMARK += ["motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast"]
BENCHMARK += ["elastic_transform", "pixelate", "jpeg_compression"]
EXTRA = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]


def augment_config(name: str) -> dict:
    return OmegaConf.to_container(compose_train([f"augment={name}"]).augment, resolve=True)


def cifar100c(root: Path = Path("unused")) -> CorruptionSet:
    return CorruptionSet(str(root), benchmark=BENCHMARK, extra=EXTRA, num_classes=100)


def test_the_reference_augmentations_see_noise_jpeg_and_photometric_corruptions() -> None:
    seen = seen_corruptions(augment_config("seed"), BENCHMARK + EXTRA)

    assert set(seen) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
        "jpeg_compression", "brightness", "contrast", "saturate",
    }  # fmt: skip
    assert seen["gaussian_noise"] == "gauss_noise"
    assert seen["brightness"] == "brightness_contrast+color_jitter"


def test_crop_and_flip_see_no_corruption() -> None:
    assert seen_corruptions(augment_config("basic"), BENCHMARK + EXTRA) == {}


def test_augmix_sees_nothing_unless_all_its_operations_are_on() -> None:
    augmix = augment_config("augmix")
    with_all_ops = {**augmix, "augmix": {**augmix["augmix"], "all_ops": True}}

    assert seen_corruptions(augmix, BENCHMARK + EXTRA) == {}
    assert set(seen_corruptions(with_all_ops, BENCHMARK + EXTRA)) == {
        "brightness", "contrast", "saturate"
    }  # fmt: skip


def test_a_step_switched_off_sees_nothing() -> None:
    augment = {**augment_config("seed"), "gauss_noise": {"p": 0.0, "std_range": [0.1, 0.2]}}

    assert "gaussian_noise" not in seen_corruptions(augment, BENCHMARK + EXTRA)


def test_every_mapped_corruption_is_a_real_one() -> None:
    for step in AUGMENT_STEPS:
        assert set(step.covers) <= set(BENCHMARK + EXTRA), step.name
        assert step.why, step.name


def test_ece_equals_the_hand_computed_value() -> None:
    confidences = np.array([0.95, 0.92, 0.55, 0.52, 0.51, 0.15])
    correct = np.array([1, 0, 1, 1, 0, 0])
    # 15 equal bins of width 1/15: [0.933, 1] holds 0.95; [0.867, 0.933) 0.92;
    # [0.533, 0.6) 0.55; [0.467, 0.533) 0.52 and 0.51; [0.133, 0.2) 0.15
    expected = (
        abs(1 - 0.95) + abs(0 - 0.92) + abs(1 - 0.55) + 2 * abs(0.5 - 0.515) + abs(0 - 0.15)
    ) / 6

    assert expected_calibration_error(confidences, correct) == pytest.approx(expected, abs=1e-6)
    bins = reliability_bins(confidences, correct)
    assert bins.count.sum() == 6 and bins.count[7] == 2
    assert bins.accuracy[7] == pytest.approx(0.5) and bins.confidence[7] == pytest.approx(0.515)


def test_benchmark_names_need_every_corruption_of_the_benchmark() -> None:
    ood = cifar100c()

    partial = summary_groups(ood, ["fog", "snow"], seen=set())
    benchmark_only = summary_groups(ood, BENCHMARK, seen=set())
    everything = summary_groups(ood, BENCHMARK + EXTRA, seen={"fog"})

    assert set(partial) == {"present", "unseen"}
    assert set(benchmark_only) == {"benchmark", "present", "unseen"}
    assert set(everything) == {"benchmark", "all", "unseen"} and "fog" not in everything["unseen"]


def scored_set(name: str, n: int, accuracy_per_severity: list[float]) -> tuple:
    """An ImageSet of 5 blocks of n labelled images and Scores right on the given fraction."""
    labels = np.zeros(5 * n, dtype=np.int64)
    blocks = tuple(slice(s * n, (s + 1) * n) for s in range(5))
    image_set = ImageSet(name, Path(f"{name}.npy"), blocks, labels)
    scores = []
    for acc in accuracy_per_severity:
        right = int(round(acc * n))
        top = np.array([[0, 1]] * right + [[1, 0]] * (n - right))
        probs = np.full((n, 2), [0.8, 0.2], dtype=np.float32)
        scores.append(Scores(top, probs, seconds=1.0))
    return image_set, scores


def test_mean_unseen_leaves_out_the_seen_corruptions_and_the_csv_marks_them(tmp_path) -> None:
    scored = {
        "gaussian_noise": scored_set("gaussian_noise", 10, [0.9] * 5),  # seen by gauss_noise
        "fog": scored_set("fog", 10, [0.5, 0.4, 0.3, 0.2, 0.1]),
    }

    metrics = evaluate_corruptions(
        cifar100c(tmp_path), scored, tmp_path, None, augment_config("seed")
    )

    assert metrics["ood/seen"] == ["gaussian_noise"]
    assert metrics["ood/acc/mean_unseen"] == pytest.approx(0.3)
    assert metrics["ood/acc/mean_present"] == pytest.approx((0.9 + 0.3) / 2)
    assert metrics["ood/ece/fog/1"] == pytest.approx(abs(0.5 - 0.8))
    with open(tmp_path / "ood_accuracy.csv", newline="") as f:
        rows = {row["corruption"]: row for row in csv.DictReader(f)}
    assert rows["gaussian_noise"]["seen_in_training"] == "gauss_noise"
    assert rows["fog"]["seen_in_training"] == ""
    assert (tmp_path / "reliability.png").stat().st_size > 0
