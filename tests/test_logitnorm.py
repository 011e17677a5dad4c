"""`loss=logitnorm` (Wei et al., 2022): cross-entropy on logits / (tau * ||logits||), checked
against values worked out by hand, composed with label smoothing and soft targets, and trained
through `train`."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_ood.loss import logit_norm_loss
from support import TINY_CONVNET
from torch import nn

from cifar_lab.errors import CifarLabError
from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.train import train

# two rows whose norms are 5 and 2: with tau = 0.5 they become [1.2, 1.6] and [0, 2]
LOGITS = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
LABELS = torch.tensor([1, 0])


def module(**kwargs) -> CIFARClassifier:
    """A classifier whose `net` passes its input through: the batch is the logits."""
    settings = {"num_classes": 2, "loss": "logitnorm", "logitnorm_tau": 0.5}
    return CIFARClassifier(net=nn.Identity(), optimizer=None, **{**settings, **kwargs})


def cross_entropy(logits: list[float], target: list[float]) -> float:
    log_sum = math.log(sum(math.exp(z) for z in logits))
    return -sum(t * (z - log_sum) for z, t in zip(logits, target, strict=True))


def test_loss_is_the_cross_entropy_of_the_normalised_logits() -> None:
    loss, logits = module().training_loss(LOGITS, LABELS)

    by_hand = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(2.0))) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)  # 1.319971...
    assert torch.equal(logits, LOGITS)  # metrics and predictions see the raw logits
    assert loss.item() == pytest.approx(logit_norm_loss(LOGITS, LABELS, t=0.5).item(), abs=1e-6)


def test_label_smoothing_applies_to_the_normalised_logits() -> None:
    loss, _ = module(label_smoothing=0.2).training_loss(LOGITS, LABELS)

    # smoothing 0.2 over 2 classes: targets 0.9 for the label and 0.1 for the other
    by_hand = (cross_entropy([1.2, 1.6], [0.1, 0.9]) + cross_entropy([0.0, 2.0], [0.9, 0.1])) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)


def test_soft_targets_of_cutmix_mixup_apply_to_the_normalised_logits() -> None:
    classifier = module(mix={"mixup_alpha": 0.8, "cutmix_alpha": 0.0, "prob": 1.0})
    soft = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    classifier.mixup = lambda images, labels: (images, soft)  # the mixing itself is timm's

    loss, _ = classifier.training_loss(LOGITS, LABELS)

    by_hand = (cross_entropy([1.2, 1.6], [0.3, 0.7]) + cross_entropy([0.0, 2.0], [0.6, 0.4])) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)


@pytest.mark.parametrize("tau", [0, -0.1, "small"])
def test_a_temperature_that_is_not_positive_is_one_line(tau) -> None:
    with pytest.raises(CifarLabError, match=r"loss.logitnorm_tau=.*expected a number > 0"):
        module(logitnorm_tau=tau)


def test_logitnorm_trains_through_train_and_is_stored_in_the_checkpoint(train_cfg) -> None:
    metrics = train(train_cfg("loss=logitnorm", *TINY_CONVNET, "test=false"))

    assert metrics["status"] == "finished" and math.isfinite(float(metrics["train/loss"]))
    stored = read_checkpoint(metrics["last_model_path"]).config["loss"]
    assert stored["name"] == "logitnorm" and stored["logitnorm_tau"] == 0.04
