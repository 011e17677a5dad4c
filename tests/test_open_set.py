"""The open-set protocol (`data.classes`) and the datamodule's detection interface: known classes
relabelled, held-out classes as the `heldout_classes` OOD set, the fit and calibration sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_CONVNET, predict_cfg

from cifar_lab.data import CIFARDataModule, load_cifar
from cifar_lab.data.detection_sources import DetectionSources
from cifar_lab.errors import CifarLabError
from cifar_lab.predict import prepare
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.train import train

KNOWN = [0, 1, 2, 3, 4, 5]


def datamodule(root: Path, **kwargs) -> CIFARDataModule:
    settings = {
        "name": "cifar10",
        "num_classes": 6,
        "classes": KNOWN,
        "download": False,
        "check_integrity": False,
        "num_workers": 0,
        "augment": {},
        "val_fraction": 0.2,
    }
    return CIFARDataModule(root=str(root), **{**settings, **kwargs})


def rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_known_classes_are_relabelled_and_the_others_are_the_heldout_set(cifar10_root: Path):
    test = load_cifar("cifar10", cifar10_root, train=False, check_integrity=False)
    detect = DetectionSources(sets=["heldout_classes"], max_images=None)
    dm = datamodule(cifar10_root, classes=[5, 0, 1, 2, 3, 4], detect=detect)

    clean, heldout = dm.load_predict_sets()

    assert (clean.name, heldout.name) == ("clean", "heldout_classes")
    assert [(s.name, s.group) for s in dm.detection_sets] == [("heldout_classes", "near")]
    assert dm.classes == [
        "class_005",
        "class_000",
        "class_001",
        "class_002",
        "class_003",
        "class_004",
    ]
    relabelled = {5: 0, 0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
    assert clean.labels.tolist() == [relabelled[int(y)] for y in test.labels if y < 6]
    assert rows(heldout.read(0, heldout.num_images)) == rows(test.images[test.labels >= 6])
    assert heldout.num_images == int((test.labels >= 6).sum()) and heldout.labels is None


def test_fit_and_calibration_sets_are_the_training_images_train_used(cifar10_root: Path):
    dm = datamodule(cifar10_root)
    dm.setup("fit")
    val_images = dm.val_set.images

    calibration = dm.calibration_set()
    fit = dm.fit_set(12, seed=0)

    assert rows(calibration.read(0, calibration.num_images)) == rows(val_images)
    assert set(calibration.labels.tolist()) <= set(range(6))
    assert np.bincount(fit.labels, minlength=6).tolist() == [2] * 6  # class-balanced
    assert rows(fit.read(0, 12)).isdisjoint(rows(val_images))
    batches = list(dm.loader_of(fit))
    assert sum(len(b) for b in batches) == 12
    assert batches[0].dtype == torch.float32 and batches[0].shape[1:] == (3, 32, 32)


def test_calibration_without_a_validation_split_is_one_line(cifar10_root: Path) -> None:
    with pytest.raises(CifarLabError, match="data.val_fraction=0") as err:
        datamodule(cifar10_root, val_fraction=0.0).calibration_set()
    assert "\n" not in str(err.value)
    with pytest.raises(CifarLabError, match="detect.fit_images"):
        datamodule(cifar10_root).fit_set(0, seed=0)


@pytest.mark.parametrize(
    ("classes", "num_classes", "expected"),
    [
        (["class_000", "class_0001"], 2, r"'class_0001', not a class of cifar10 \(did you mean"),
        ([0, 0, 1], 3, "lists class_000 more than once"),
        ([3], 1, "not a list of 2 to 10 classes"),
        ([0, 1] * 6, 12, "not a list of 2 to 10 classes"),
        ([0, 10], 2, "10, not a class of cifar10"),
        ([0, 1, 2], 10, "data.num_classes=3"),
    ],
)
def test_bad_class_lists_are_one_line(cifar10_root: Path, classes, num_classes, expected) -> None:
    dm = datamodule(cifar10_root, classes=classes, num_classes=num_classes)
    with pytest.raises(CifarLabError, match=expected):
        dm.setup("fit")


def test_heldout_classes_of_a_model_trained_on_every_class_is_refused(cifar10_root: Path):
    detect = DetectionSources(sets=["heldout_classes"])
    dm = datamodule(cifar10_root, classes=None, num_classes=10, detect=detect)
    with pytest.raises(CifarLabError, match="trained on every class"):
        dm.load_predict_sets()


def test_an_open_set_run_trains_k_outputs_and_predict_rebuilds_the_protocol(
    train_cfg, cifar10_root: Path, tmp_path: Path
) -> None:
    cfg = train_cfg(
        "data=cifar10", *TINY_CONVNET, "data.classes=[0,1,2,3,4,5]", "test=false",
        root=cifar10_root,
    )  # fmt: skip
    ckpt = Path(train(cfg)["last_model_path"])

    checkpoint = read_checkpoint(ckpt)
    assert checkpoint.num_classes == 6 and checkpoint.config["data"]["classes"] == KNOWN
    out = tmp_path / "predict"
    module, dm, _ = prepare(
        predict_cfg(ckpt, out, f"data.root={cifar10_root}", "data.download=false", "detect=openset")
    )
    assert module.net(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    assert [d.name for d in dm.detection_sets] == ["heldout_classes"]
    test = load_cifar("cifar10", cifar10_root, train=False, check_integrity=False)
    heldout = dm.detection_sets[0].images
    assert rows(heldout.read(0, heldout.num_images)) == rows(test.images[test.labels >= 6])
    assert dm.predict_sets[0].num_images == int((test.labels < 6).sum())
