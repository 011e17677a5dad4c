"""Adversarial evaluation (`predict ... attack=`): budgets respected, eps 0 = clean, attacks that
lower accuracy, AutoAttack equal to the package run directly, sanity flags, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from ood_files import random_images, write_corruption_set
from pyautoattack import AutoAttack
from support import predict_cfg, run_module
from torch import nn

from cifar_lab.attacks.autoattack import SQUARE_WARNING, apgd
from cifar_lab.attacks.flags import CurvePoint, sanity_flags
from cifar_lab.attacks.pgd import fgsm, pgd
from cifar_lab.attacks.pixel_model import PixelModel, check_gradients, pixel_model
from cifar_lab.attacks.settings import AttackSettings
from cifar_lab.attacks.threat import ThreatModel
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.subsets import balanced_subset
from cifar_lab.data.transforms import NORMALIZATION_STATS, build_transforms
from cifar_lab.errors import CifarLabError
from cifar_lab.predict import predict
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.speed import split_model_config

REPO = Path(__file__).resolve().parents[1]


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(128, 10),
    ).eval()  # fmt: skip


def images_at_the_edges(n: int = 16) -> torch.Tensor:
    """Random pixels with some exactly 0 or 1, where clipping to the box matters."""
    pixels = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pixels[:, 0] = (pixels[:, 0] > 0.5).float()
    return pixels


def assert_within(adversarial: torch.Tensor, pixels: torch.Tensor, threat: ThreatModel) -> None:
    delta = (adversarial - pixels).flatten(1)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if threat.norm == "linf":
        assert delta.abs().max() <= threat.radius + 1e-6
    else:
        assert delta.norm(dim=1).max() <= threat.radius + 1e-5


ATTACKS = {
    "fgsm": lambda m, x, y, t: fgsm(m, x, y, t),
    "fgsm_rs": lambda m, x, y, t: fgsm(m, x, y, t, 1.25 * t.radius, random_start=True),
    "pgd": lambda m, x, y, t: pgd(m, x, y, t, steps=5, restarts=2),
    "pgd_big_steps": lambda m, x, y, t: pgd(m, x, y, t, steps=3, alpha=4 * t.radius),
    "apgd": lambda m, x, y, t: apgd(m, x, y, t, steps=5),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("threat", [ThreatModel("linf", 8), ThreatModel("l2", 2.0)], ids=str)
def test_every_perturbation_respects_its_budget_in_pixel_space(attack, threat) -> None:
    model, pixels = small_net(), images_at_the_edges()
    labels = model(pixels).argmax(1)  # all classified right, so APGD attacks each one

    adversarial = ATTACKS[attack](model, pixels, labels, threat)

    assert_within(adversarial, pixels, threat)
    assert not torch.equal(adversarial, pixels)  # it did move (APGD keeps only what fools)


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd"])
def test_a_zero_budget_changes_no_pixel(attack) -> None:
    pixels = images_at_the_edges()
    labels = torch.arange(len(pixels)) % 10

    adversarial = ATTACKS[attack](small_net(), pixels, labels, ThreatModel("linf", 0))

    assert torch.equal(adversarial, pixels)


def test_the_pixel_model_is_the_network_behind_the_eval_preprocessing() -> None:
    transforms = build_transforms({"name": "none"}, "cifar10", 32)
    net = small_net()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    normalised = torch.stack([transforms.eval(image=image)["image"] for image in images])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    torch.testing.assert_close(pixel_model(net, transforms)(pixels), net(normalised))


def test_a_preprocessing_without_gradient_is_refused_in_one_line() -> None:
    transforms = build_transforms({"name": "none", "clahe": True}, "cifar10", 32)

    with pytest.raises(CifarLabError, match="CLAHE, which has no gradient"):
        pixel_model(small_net(), transforms)


class Detached(nn.Module):
    """A model whose output does not depend differentiably on its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return small_net()(x.detach().round())


def test_a_model_without_input_gradients_is_refused_in_one_line() -> None:
    with pytest.raises(CifarLabError, match="gives its input none gradient"):
        check_gradients(Detached(), torch.rand(2, 3, 32, 32))
    check_gradients(small_net(), torch.rand(2, 3, 32, 32))  # a real network passes


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eps": -1}, r"attack.eps=-1 is out of range; expected a number from 0 to 255"),
        ({"eps": [2, 300]}, r"attack.eps=300 is out of range"),
        ({"norm": "l2", "eps": 60}, r"attack.eps=60 is out of range; expected a number from 0"),
        ({"norm": "l1"}, r"attack.norm='l1' is unknown"),
        ({"name": "cw"}, r"attack.name='cw' is unknown"),
        ({"steps": 0}, r"attack.steps=0 is invalid"),
        ({"alpha": -2}, r"attack.alpha=-2 is invalid"),
        ({"version": "fast"}, r"attack.version='fast' is unknown"),
        ({"n": 0}, r"attack.n=0 is invalid"),
    ],
)
def test_bad_attack_settings_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(CifarLabError, match=message) as error:
        AttackSettings(**{"name": "pgd", **settings})
    assert "\n" not in str(error.value)


def point(eps: float, acc: float, **kwargs) -> CurvePoint:
    return CurvePoint(ThreatModel("linf", eps), acc, None, eps, **kwargs)


def test_each_sanity_flag_trips_on_its_sign_of_gradient_masking() -> None:
    clean = 0.8
    healthy = [point(0, 0.8), point(4, 0.5, pgd_acc=0.55), point(8, 0.3, pgd_acc=0.3)]
    assert sanity_flags(healthy, clean) == []

    broken = [
        point(0, 0.7),  # eps 0 is not clean
        point(4, 0.3, pgd_acc=0.2),  # PGD beats AutoAttack
        CurvePoint(ThreatModel("linf", 8), 0.4, None, 8.5, library_warnings=(SQUARE_WARNING,)),
    ]
    flags = sanity_flags(broken, clean)

    names = [flag.split(":")[0] for flag in flags]
    assert names == [
        "eps0_not_clean",
        "pgd_below_autoattack",
        "square_beats_white_box",
        "over_budget",
        "rises_with_eps",  # 0.3 at eps 4 -> 0.4 at eps 8
    ]


# --- predict attack=... on a trained tiny checkpoint ------------------------------------------
def attack_cfg(ckpt: Path, out: Path, root: Path, *overrides: str):
    return predict_cfg(ckpt, out, f"data.root={root}", "data.download=false", *overrides)


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_pgd_at_eps_zero_is_the_clean_accuracy_and_larger_budgets_lower_it(
    cifar10_ckpt: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    metrics = predict(
        attack_cfg(cifar10_ckpt, out, cifar10_root, "attack=pgd", "attack.eps=[0,8,128]",
                   "attack.n=30", "attack.steps=10")
    )  # fmt: skip

    assert metrics["adv/pgd/n"] == 30 and metrics["adv/pgd/norm"] == "linf"
    assert metrics["adv/pgd/eps0/acc"] == metrics["adv/pgd/clean_acc"] > 0.3
    assert metrics["adv/pgd/eps0/success_rate"] == 0
    assert metrics["adv/pgd/eps128/acc"] < metrics["adv/pgd/clean_acc"]
    assert metrics["adv/pgd/eps128/success_rate"] > 0
    assert metrics["adv/pgd/flags"] == []
    assert json.loads((out / "metrics.json").read_text())["adv/pgd/eps8/acc"] is not None
    # the attacked images: a class-balanced subset, indices into the test split
    rows = read_rows(out / "adv_pgd_images.csv")
    test = load_cifar("cifar10", cifar10_root, False, False, False)
    indices = [int(row["index"]) for row in rows]
    assert indices == balanced_subset(test.labels, 30, 0).tolist()
    assert [int(row["label"]) for row in rows] == test.labels[indices].tolist()
    # the clean accuracy is that of the checkpoint's own predict pipeline on those images
    assert metrics["adv/pgd/clean_acc"] == np.mean(
        [row["pred_clean"] == row["label"] for row in rows]
    )
    curve = read_rows(out / "adv_pgd_curve.csv")
    assert [float(row["eps"]) for row in curve] == [0, 8, 128]
    for name in ("adv_pgd_curve.png", "adv_pgd_examples.png"):
        assert (out / name).stat().st_size > 0


def test_apgd_lowers_the_accuracy_of_a_trained_model(
    cifar10_ckpt: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    metrics = predict(
        attack_cfg(cifar10_ckpt, tmp_path / "out", cifar10_root, "attack=apgd",
                   "attack.eps=[0,64]", "attack.n=20", "attack.steps=20")
    )  # fmt: skip

    assert metrics["adv/apgd/eps0/acc"] == metrics["adv/apgd/clean_acc"] > 0.3
    assert metrics["adv/apgd/eps64/acc"] < metrics["adv/apgd/clean_acc"] / 2
    assert metrics["adv/apgd/eps64/max_perturbation"] <= 64 + 1e-3


def direct_model(ckpt: Path) -> nn.Module:
    """The checkpoint's network with CIFAR-10 normalisation in front, built without cifar-lab's
    attack code, in the layout the run used (channels_last)."""
    checkpoint = read_checkpoint(ckpt)
    net_cfg, _ = split_model_config(checkpoint.config["model"])
    net = instantiate(net_cfg)
    checkpoint.load_net_weights(net)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION_STATS["cifar10"])

    class Direct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(((x - mean) / std).contiguous(memory_format=torch.channels_last))

    return Direct().eval()


def test_autoattack_equals_a_direct_pyautoattack_run_on_the_same_weights_images_and_seed(
    cifar10_ckpt: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    metrics = predict(
        attack_cfg(cifar10_ckpt, out, cifar10_root, "attack=autoattack", "attack.eps=48",
                   "attack.n=12", "attack.seed=3", "attack.batch_size=5")
    )  # fmt: skip
    rows = read_rows(out / "adv_autoattack_images.csv")
    test = load_cifar("cifar10", cifar10_root, False, False, False)
    indices = [int(row["index"]) for row in rows]
    pixels = torch.from_numpy(test.images[indices]).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(test.labels[indices]).long()
    model = direct_model(cifar10_ckpt)

    adversary = AutoAttack(model, norm="Linf", eps=48 / 255, version="standard", seed=3)
    adversarial, _ = adversary.run_standard_evaluation(pixels, labels, batch_size=5)

    with torch.no_grad():
        direct = model(adversarial).argmax(1)
    assert [int(row["pred_eps48"]) for row in rows] == direct.tolist()
    assert metrics["adv/autoattack/eps48/acc"] == (direct == labels).float().mean().item()
    assert metrics["adv/autoattack/clean_acc"] > metrics["adv/autoattack/eps48/acc"]
    assert metrics["adv/autoattack/eps48/pgd_acc"] >= metrics["adv/autoattack/eps48/acc"]


def test_tta_is_not_attacked_and_says_so(
    cifar10_ckpt: Path, cifar10_root: Path, tmp_path: Path, caplog
) -> None:
    metrics = predict(
        attack_cfg(cifar10_ckpt, tmp_path / "out", cifar10_root, "tta=flip", "attack=fgsm",
                   "attack.n=10", "attack.examples=0")
    )  # fmt: skip

    assert metrics["adv/fgsm/tta"] == "not attacked (single view; tta=flip)"
    assert "attacks the single-view model" in caplog.text
    assert not (tmp_path / "out" / "adv_fgsm_examples.png").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attack.n=41"], "attack.n=41 is out of range; expected 1..40"),
        (["clean=false", "ood=cifar10c", "ood.root={c10c}"], "attacks images of the clean test"),
        (["+augment.clahe=true", "attack.n=10"], "CLAHE, which has no gradient"),
    ],
)
def test_attacks_that_cannot_run_fail_before_scoring_in_one_line(
    cifar10_ckpt: Path, cifar10_root: Path, tmp_path: Path, overrides, message
) -> None:
    c10c = write_corruption_set(tmp_path / "c10c", {"fog": random_images(5)}, np.zeros(5))
    overrides = [override.format(c10c=c10c) for override in overrides]
    cfg = attack_cfg(cifar10_ckpt, tmp_path / "out", cifar10_root, "attack=pgd", *overrides)
    with pytest.raises(CifarLabError, match=message):
        predict(cfg)
    assert not (tmp_path / "out" / "per_class_accuracy.csv").exists()


def test_a_bad_budget_on_the_command_line_is_one_line(cifar10_ckpt: Path, tmp_path: Path):
    result = run_module(
        "cifar_lab.predict", f"ckpt={cifar10_ckpt}", "attack=pgd", "attack.eps=[4,-8]",
        f"hydra.run.dir={tmp_path / 'out'}", cwd=REPO,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: attack.eps=-8 is out of range; expected a number from 0 to 255 (linf budgets "
        "are in 1/255 steps), e.g. 8 for 8/255"
    )


def test_the_pixel_model_resizes_an_upscaled_run() -> None:
    seen = []
    model = PixelModel(
        lambda x: seen.append(x.shape) or x.flatten(1)[:, :10], (0, 0, 0), (1, 1, 1), 64
    )

    model(torch.rand(2, 3, 32, 32))

    assert seen == [(2, 3, 64, 64)]
