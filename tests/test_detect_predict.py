"""OOD detection, calibration and selective prediction through `predict`: every detector on a
tiny CIFAR-10 model from the command line, the feature detectors fitted on the training images
(not the validation or test split), a given or fitted temperature."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_ood.detector import KNN, Mahalanobis
from sklearn.metrics import roc_auc_score
from support import TINY_CONVNET, compose_train, predict_cfg, run_module, tiny_data, tiny_training

from cifar_lab.data.datamodule import split_indices
from cifar_lab.data.datasets import load_cifar
from cifar_lab.evaluation.detectors import DETECTORS
from cifar_lab.models.net import ClassifierNet
from cifar_lab.predict import predict, prepare
from cifar_lab.train import train

REPO = Path(__file__).resolve().parents[1]
SETS = ("noise_gaussian", "noise_uniform", "near_photos")
# the tests of this file share one trained checkpoint: one xdist worker runs them all
pytestmark = pytest.mark.xdist_group("detect_predict")


@pytest.fixture(scope="module")
def cifar10_ckpt(tmp_path_factory: pytest.TempPathFactory, cifar10_root: Path) -> Path:
    """A tiny ConvNet, 3 batches of the tiny CIFAR-10 (100 training images, 10 held out)."""
    run = tmp_path_factory.mktemp("detect_run")
    overrides = ["data=cifar10", *tiny_data(cifar10_root), *tiny_training(batches=3),
                 *TINY_CONVNET, "test=false", "logger=none", f"paths.output_dir={run}"]  # fmt: skip
    return Path(train(compose_train(overrides))["last_model_path"])


@pytest.fixture(scope="module")
def near_npy(tmp_path_factory: pytest.TempPathFactory, cifar10_root: Path) -> Path:
    """A user's own OOD set, counted as near: the test photos darkened and flipped upside down."""
    test = load_cifar("cifar10", cifar10_root, train=False, download=False, check_integrity=False)
    path = tmp_path_factory.mktemp("near") / "near_photos.npy"
    np.save(path, (test.images[:, ::-1] // 3).astype(np.uint8))
    return path


def detect_args(cifar10_root: Path, near: Path, *extra: str) -> list[str]:
    return [
        f"data.root={cifar10_root}", "data.download=false", "data.check_integrity=false",
        "data.num_workers=0", "trainer.enable_progress_bar=false",
        "detect=noise", f"detect.npy={near}", "detect.user_group=near", "detect.noise_images=30",
        f"detect.detectors=[{','.join(DETECTORS)}]", "detect.fit_images=60", "detect.knn.k=5",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_every_detector_runs_from_the_command_line(
    cifar10_ckpt: Path, cifar10_root: Path, near_npy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = detect_args(cifar10_root, near_npy, "tta=flip", f"hydra.run.dir={out}")

    done = run_module("cifar_lab.predict", f"ckpt={cifar10_ckpt}", *args, cwd=REPO)

    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for detector in DETECTORS:
        for name in SETS:
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
                assert 0 <= metrics[f"detect/{detector}/{name}/{metric}"] <= 1
        # the near mean is the one near set's; noise (sanity) counts in no mean
        near = metrics[f"detect/{detector}/near_photos/auroc"]
        assert metrics[f"detect/{detector}/mean_near/auroc"] == near
        assert f"detect/{detector}/mean_far/auroc" not in metrics
    assert "2 TTA views" in metrics["detect/outputs"] and metrics["detect/fit_images"] == 60
    # every score is in the npz: the metrics recompute from it (ID positive: -score ranks ID)
    scores = np.load(out / "detection_scores.npz", allow_pickle=False)
    assert list(scores["sets"]) == list(SETS) and scores["id_correct"].mean() == pytest.approx(
        metrics["clean/acc"]
    )
    for detector in DETECTORS:
        ood = scores[f"ood/near_photos/{detector}"]
        is_id = np.r_[np.ones(40), np.zeros(len(ood))]
        recomputed = roc_auc_score(is_id, -np.r_[scores[f"id/{detector}"], ood])
        assert recomputed == pytest.approx(metrics[f"detect/{detector}/near_photos/auroc"])
    with open(out / "ood_detection.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(DETECTORS) * (len(SETS) + 1)  # + the mean_near row
    for name in ("roc.png", "score_histograms.png", "risk_coverage.png"):
        assert (out / name).stat().st_size > 10_000
    # calibration and selective prediction come with every clean run
    assert (
        metrics["clean/temperature"] > 0
        and "calibration set" in metrics["clean/temperature_fitted_on"]
    )
    for key in (
        "clean/nll",
        "clean/brier",
        "clean/ts/nll",
        "clean/ts/ece",
        "selective/aurc",
        "selective/acc_at_cov80",
        "selective/acc_at_cov90",
        "selective/acc_at_cov95",
    ):
        assert metrics[key] >= 0, key  # fmt: skip
    log = [
        line
        for line in (out / "predict.log").read_text().splitlines()
        if "[cifar_lab.predict]" in line
    ]
    best = metrics["detect/best"]
    assert f"OOD detection: best detector {best}: mean_near AUROC" in log[-4]
    assert "averaged over the 2 TTA views (odin: the plain image)" in log[-3]
    assert "ood_detection.csv, detection_scores.npz, roc.png, score_histograms.png" in log[-2]


def pooled_pixels(self, images: torch.Tensor) -> torch.Tensor:
    """Features that tell the images apart (a 4 x 4 average of the red channel), in place of
    the tiny model's, whose features differ between images by 1e-5 only."""
    return torch.nn.functional.adaptive_avg_pool2d(images[:, :1], 4).flatten(1)


def test_the_feature_detectors_fit_on_training_images_only_and_a_given_temperature_is_kept(
    cifar10_ckpt: Path, cifar10_root: Path, near_npy: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ClassifierNet, "features", pooled_pixels)
    fitted = {}
    for cls in (KNN, Mahalanobis):
        original = cls.fit_features

        def spy(self, z, y, original=original, name=cls.__name__):
            fitted[name] = (z.detach().cpu().numpy(), y.cpu().numpy())
            return original(self, z, y)

        monkeypatch.setattr(cls, "fit_features", spy)
    args = detect_args(
        cifar10_root, near_npy, "detect.detectors=[mahalanobis,knn]", "calibration.temperature=2.5"
    )
    cfg = predict_cfg(cifar10_ckpt, tmp_path / "out", *args)

    metrics = predict(cfg)

    assert metrics["clean/temperature"] == 2.5  # applied as given, not fitted
    assert metrics["clean/temperature_fitted_on"] == "given (calibration.temperature)"
    assert metrics["clean/ts/nll"] != metrics["clean/nll"]

    _, datamodule, _ = prepare(cfg)  # the run's eval preprocessing

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        arrays = load_cifar("cifar10", cifar10_root, split == "train", False, False)
        images = datamodule.input_pipeline().preprocess(arrays.images)
        return pooled_pixels(None, images).numpy(), arrays.labels

    (train_features, train_labels), (test_features, _) = features("train"), features("test")
    train_rows, val_rows = split_indices(len(train_labels), 0.1, 42)  # the run's split
    for name, (z, y) in fitted.items():
        assert z.shape == (60, 16), name
        distance = np.abs(z[:, None, :] - train_features[None]).max(axis=2)
        rows = distance.argmin(axis=1)
        assert (distance.min(axis=1) < 1e-5).all(), name  # each one a training image's
        assert len(set(rows)) == 60 and set(rows) <= set(train_rows), name  # none held out
        assert not set(rows) & set(val_rows) and (y == train_labels[rows]).all(), name
        assert np.abs(z[:, None, :] - test_features[None]).max(axis=2).min() > 1e-3, name


def test_temperature_scaling_lowers_the_nll_of_an_over_confident_model(
    cifar10_ckpt: Path, tmp_path: Path, cifar10_root: Path
) -> None:
    from cifar_lab.predict import prepare_extras, score

    cfg = predict_cfg(cifar10_ckpt, tmp_path / "out", f"data.root={cifar10_root}",
                      "data.download=false")  # fmt: skip
    module, datamodule, _ = prepare(cfg)
    with torch.no_grad():  # logits x30: the same predictions, far too sure of them
        module.net.classifier.weight.mul_(30)
        module.net.classifier.bias.mul_(30)
    extras = prepare_extras(cfg, module, datamodule)

    metrics = score(cfg, module, datamodule, tmp_path / "out", extras)

    assert metrics["clean/temperature"] > 3
    assert metrics["clean/ts/nll"] < metrics["clean/nll"]
    assert metrics["clean/ts/ece"] < metrics["clean/ece"]
