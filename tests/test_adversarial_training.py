"""Adversarial training (`train ... adv=fgsm_rs|pgd|trades`): examples within their budget in
pixel space whatever the normalisation, no gradient leaking into the weights from the attack,
the combinations it refuses, the command line, and resume (exact resume: test_train.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import TINY_CONVNET, compose_train, metrics_of, run_sweep
from torch import nn

from cifar_lab.attacks.training import AdversarialTraining
from cifar_lab.build import build_module
from cifar_lab.data.transforms import NORMALIZATION_STATS
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import CheckpointPayload, RunCheckpoint
from cifar_lab.runs.rebuild import given_by_overrides, rebuild_config
from cifar_lab.train import train

MEAN, STD = NORMALIZATION_STATS["cifar10"]


class Recorder(nn.Module):
    """A small network that keeps every (normalised) batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.net(x)


def normalised_batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pixels[:, 1] = (pixels[:, 1] > 0.5).float()  # pixels at 0 and 1: clipping matters
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    return (pixels - mean) / std, torch.arange(n) % 10


@pytest.mark.parametrize(
    ("name", "steps", "alpha"), [("fgsm_rs", 1, 10.0), ("pgd", 3, 2.0), ("trades", 3, 2.0)]
)
def test_training_examples_stay_within_the_budget_in_pixel_space(name, steps, alpha) -> None:
    adversary = AdversarialTraining(name, eps=8, alpha=alpha, steps=steps, mean=MEAN, std=STD)
    model = Recorder().train()
    images, labels = normalised_batch()

    loss, logits = adversary(model, images, labels)

    assert loss.ndim == 0 and torch.isfinite(loss) and logits.shape == (8, 10)
    assert all(p.grad is None for p in model.parameters())  # the attack left no gradient
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    clean = images * std + mean
    for seen in model.seen:  # every batch the network saw: the attack's and the loss's
        pixels = seen * std + mean
        assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
        assert (pixels - clean).abs().max() <= 8 / 255 + 1e-5
    trained_on = model.seen[-1] * std + mean
    assert (trained_on - clean).abs().max() > 4 / 255  # the loss did see a perturbed batch
    assert model.training  # TRADES attacks in eval mode and puts train mode back


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+augment.mix={mixup_alpha: 0.8}"], "adv=fgsm_rs attacks each image against its own"),
        (["loss=jsd", "augment=augmix"], "adv=fgsm_rs trains on one view per image"),
        (["loss=logitnorm"], "loss=logitnorm would be ignored"),
        (["adv.eps=-1"], r"adv.eps=-1 is out of range; expected a number from 0 to 255"),
        (["adv.eps=300"], r"adv.eps=300 is out of range"),
        (["adv.steps=3"], "adv.steps=3 with adv=fgsm_rs: FGSM takes one step"),
        (["adv.alpha=0"], r"adv.alpha=0 is invalid"),
    ],
)
def test_combinations_and_values_adversarial_training_refuses(overrides, message) -> None:
    cfg = compose_train(["adv=fgsm_rs", *TINY_CONVNET, *overrides])
    with pytest.raises(CifarLabError, match=message) as error:
        build_module(cfg)
    assert "\n" not in str(error.value)


def test_each_method_trains_through_the_command_line(cifar10_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"

    result = run_sweep(cifar10_root, sweep, "adv=fgsm_rs,pgd,trades", "adv.steps=1")

    assert result.returncode == 0, result.stderr[-2000:]
    for job, name in enumerate(["fgsm_rs", "pgd", "trades"]):
        metrics = metrics_of(sweep / str(job))
        assert metrics["status"] == "finished", metrics
        assert 0 <= metrics["test/acc"] <= 1
        stored = OmegaConf.load(sweep / str(job) / ".hydra" / "config.yaml")
        assert stored.adv.name == name


def test_a_resume_takes_the_adversarial_training_stored_in_the_checkpoint(train_cfg) -> None:
    stored = OmegaConf.to_container(train_cfg(*TINY_CONVNET, "adv=trades"), resolve=True)
    checkpoint = RunCheckpoint(Path("x.ckpt"), CheckpointPayload("0.1.0", 100, stored), raw={})

    plain = train_cfg(*TINY_CONVNET)  # the command line does not repeat adv=trades
    resumed, _ = rebuild_config(plain, checkpoint, given_by_overrides(plain, []))
    given = ["adv.beta=2.0"]
    beta_given = train_cfg(*TINY_CONVNET, *given)
    with_beta, _ = rebuild_config(beta_given, checkpoint, given_by_overrides(beta_given, given))
    older = {key: value for key, value in stored.items() if key != "adv"}
    before_adv = RunCheckpoint(Path("x.ckpt"), CheckpointPayload("0.1.0", 100, older), raw={})
    kept, _ = rebuild_config(plain, before_adv, given_by_overrides(plain, []))

    assert resumed.adv.name == "trades" and resumed.adv.beta == 6.0
    assert with_beta.adv.name == "trades" and with_beta.adv.beta == 2.0
    assert kept.adv.name == "none"  # a checkpoint from before adv= keeps this command line's
    assert build_module(resumed).adversary.name == "trades"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_the_attack_steps_work_under_autocast(dtype) -> None:
    adversary = AdversarialTraining("pgd", eps=8, alpha=2, steps=2, mean=MEAN, std=STD)
    model = Recorder().train()
    images, labels = normalised_batch()

    with torch.autocast("cpu", dtype=dtype):
        loss, _ = adversary(model, images, labels)

    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))
    moved = (model.seen[-1] * std - images * std).abs().max()
    assert torch.isfinite(loss) and 4 / 255 < moved <= 8 / 255 + 1e-5


def test_adversarial_training_composes_with_bf16_clipping_and_ema(train_cfg) -> None:
    cfg = train_cfg(
        *TINY_CONVNET, "adv=pgd", "adv.steps=2", "trainer.precision=bf16-mixed",
        "trainer.gradient_clip_val=1.0", "callbacks=ema", "optim=sgd",
    )  # fmt: skip

    metrics = train(cfg)

    assert metrics["status"] == "finished" and metrics["global_step"] == 3


def test_the_fast_adversarial_training_recipe_composes() -> None:
    cfg = compose_train(["experiment=adversarial_resnet18"])

    module = build_module(cfg)

    assert cfg.data.name == "cifar10" and cfg.model.name == "resnet18"
    assert module.adversary.name == "fgsm_rs" and module.adversary.threat.eps == 8
    assert module.adversary.alpha == pytest.approx(10 / 255)  # Wong et al.: 1.25 eps
