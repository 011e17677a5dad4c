"""The OOD detectors (pytorch-ood's, wired to the network's penultimate layer): every one scores
OOD features as more OOD on a case built to be separable, the settings are checked in one line,
and the predict pass keeps whole outputs only for the sets asked for."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.ood import ImageSet
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.detectors import (
    DETECTORS,
    DetectorSettings,
    check_fit_labels,
    fit_detectors,
    score_outputs,
)
from cifar_lab.evaluation.ood_metrics import detection_metrics
from cifar_lab.evaluation.scoring import score_sets
from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.models.convnet import create_convnet
from cifar_lab.models.net import ClassifierNet


def settings(**changes) -> DetectorSettings:
    config = {"detectors": [d for d in DETECTORS if d != "odin"], "knn": {"k": 5}, **changes}
    return DetectorSettings.from_config(config)


def separable_features(seed: int = 0):
    """4 classes in 16-d features: ID at 5 x the class's unit vector (+ noise), a last layer
    that reads those 4 directions; OOD off them (in the other 12 dimensions), with logits
    near 0, so every detector has something to see."""
    rng = np.random.default_rng(seed)
    classes, width = 4, 16

    def id_features(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % classes
        features = rng.normal(0, 0.5, (n, width))
        features[np.arange(n), labels] += 5
        return features.astype(np.float32), labels

    train, labels = id_features(400)
    test, _ = id_features(100)
    ood = rng.normal(0, 0.5, (100, width))
    ood[:, classes:] += rng.normal(0, 3, (100, width - classes))
    classifier = nn.Linear(width, classes)
    with torch.no_grad():
        classifier.weight.copy_(torch.eye(classes, width) * 2)
        classifier.bias.zero_()
    return (train, labels), test, ood.astype(np.float32), classifier


def test_every_detector_scores_ood_features_as_more_ood() -> None:
    (train, labels), test, ood, classifier = separable_features()
    # ReAct at its 90th percentile would clip the class directions themselves: here only 1 in
    # 16 activations carries the class (a network's penultimate layer has many more)
    chosen = settings(react={"percentile": 99})
    fitted, seconds = fit_detectors(chosen, train, labels, classifier)

    def logits(features: np.ndarray) -> np.ndarray:
        return classifier(torch.as_tensor(features)).detach().numpy()

    id_scores = score_outputs(chosen, fitted, logits(test), test)
    ood_scores = score_outputs(chosen, fitted, logits(ood), ood)

    assert set(seconds) == {"mahalanobis", "knn", "vim", "react_energy"}
    for name in chosen.detectors:
        assert id_scores[name].shape == (100,) and id_scores[name].dtype == np.float64
        assert detection_metrics(id_scores[name], ood_scores[name])["auroc"] > 0.95, name


def test_the_feature_detectors_fit_on_the_features_given() -> None:
    (train, labels), _, _, classifier = separable_features()

    fitted, _ = fit_detectors(settings(), train, labels, classifier)

    normalised = train / np.linalg.norm(train, axis=1, keepdims=True)
    assert np.allclose(fitted["knn"].knn._fit_X, normalised, atol=1e-6)
    means = np.stack([train[labels == k].mean(0) for k in range(4)])
    assert np.allclose(fitted["mahalanobis"].mu.numpy(), means, atol=1e-5)
    assert fitted["react_energy"].threshold == pytest.approx(np.percentile(train, 90), rel=1e-5)
    assert fitted["vim"].principal_subspace.shape == (16, 16 - 8)  # dim: half of 16


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"detectors": ["enrgy"]}, r"'enrgy', not a detector \(did you mean energy\?\)"),
        ({"detectors": ["msp", "msp"]}, r"lists msp more than once"),
        ({"detectors": "msp"}, r"detect.detectors='msp' is not a list"),
        ({"detectors": ["knn"], "knn": {"k": 0}}, r"detect.knn.k=0 is invalid; expected an"),
        ({"detectors": ["odin"], "odin": {"temperature": -1}}, r"detect.odin.temperature=-1"),
        ({"detectors": ["vim"], "vim": {"dim": 2.5}}, r"detect.vim.dim=2.5 is invalid"),
        ({"detectors": ["msp"], "fit_images": 0}, r"detect.fit_images=0 is invalid"),
        ({"detectors": ["react_energy"], "react": {"percentile": 0.9}}, None),  # 0.9th: valid
        ({"detectors": ["react_energy"], "react": {"percentile": 120}}, r"percentile=120"),
    ],
)
def test_bad_detector_settings_are_one_line(config, expected) -> None:
    if expected is None:
        assert DetectorSettings.from_config(config).react_percentile == 0.9
        return
    with pytest.raises(CifarLabError, match=expected) as info:
        DetectorSettings.from_config(config)
    assert "\n" not in str(info.value)


def test_no_detector_means_no_detection() -> None:
    assert DetectorSettings.from_config({"detectors": []}) is None
    assert DetectorSettings.from_config(None) is None


def test_what_the_fit_images_cannot_give_is_one_line() -> None:
    labels = np.array([0, 1, 1, 2])
    with pytest.raises(CifarLabError, match=r"no image of class\(es\) \[3\]; mahalanobis"):
        check_fit_labels(labels, 4, 4, settings())
    with pytest.raises(CifarLabError, match=r"detect.knn.k=5 is more than the 4 training"):
        check_fit_labels(labels, 3, 4, settings())
    with pytest.raises(CifarLabError, match=r"detect.vim.dim=16 does not fit .* 16 penultimate"):
        settings(vim={"dim": 16}).vim_dimension(16)


# --- the penultimate layer ------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [16, 0])
def test_the_last_layer_of_the_features_gives_the_logits(hidden: int) -> None:
    net = create_convnet(10, widths=(8, 8, 16, 16, 16), head_hidden=hidden).eval()
    images = torch.randn(3, 3, 32, 32)

    features = net.features(images)

    assert features.shape == (3, hidden or 16)
    assert torch.allclose(net.classifier(features), net(images), atol=1e-6)


def test_a_head_without_a_last_linear_layer_is_one_line() -> None:
    net = ClassifierNet(nn.Flatten(), nn.Sequential(nn.Linear(12, 4), nn.Softmax(dim=1)))

    with pytest.raises(CifarLabError, match=r"does not end in a Linear layer.*msp,maxlogit"):
        net.features(torch.randn(2, 12))


# --- what the predict pass keeps -------------------------------------------------------------
def test_the_predict_pass_keeps_whole_outputs_only_where_asked(tmp_path, cifar10_root) -> None:
    net = create_convnet(10, widths=(8, 8, 16, 16, 16), head_hidden=16)
    module = CIFARClassifier(net, torch.optim.SGD, num_classes=10)
    module.predict_outputs = ("probs", "logits", "features")
    datamodule = CIFARDataModule(
        name="cifar10", root=str(cifar10_root), download=False, check_integrity=False,
        num_classes=10, batch_size=16, num_workers=0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    extra = ImageSet.in_memory("train/fit", rng.integers(0, 256, (20, 32, 32, 3), np.uint8), None)

    def make_trainer(callbacks):
        return L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=callbacks
        )

    scored = score_sets(
        module, datamodule, make_trainer, extra=[extra], keep={"train/fit": ("features",)}
    )

    (clean,) = scored["clean"][1]
    (fit,) = scored["train/fit"][1]
    assert clean.outputs == {} and len(clean) == 40  # top-k only
    assert set(fit.outputs) == {"features"} and fit.outputs["features"].shape == (20, 16)
    expected = net.eval().features(datamodule.input_pipeline().preprocess(extra.source))
    assert np.allclose(fit.outputs["features"], expected.detach().numpy(), atol=1e-5)
    assert [s.name for s in datamodule.predict_sets] == ["clean"]  # its own sets again
