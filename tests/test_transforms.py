"""Each augment config builds a pipeline with the right output; typos are errors, not no-ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import compose_train

from cifar_lab.data.transforms import (
    build_eval_transform,
    build_train_transform,
    normalization_stats,
)
from cifar_lab.errors import CifarLabError

MEAN, STD = normalization_stats("dataset", "cifar100")


def augment_cfg(name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_train([f"augment={name}", *overrides])
    return OmegaConf.to_container(cfg.augment, resolve=True)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["none", "basic", "seed"])
@pytest.mark.parametrize("img_size", [32, 64])
def test_every_pipeline_outputs_a_normalised_chw_float(name: str, img_size: int) -> None:
    pipeline = build_train_transform(augment_cfg(name), img_size, MEAN, STD)

    out = pipeline(image=image())["image"]

    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (3, img_size, img_size)
    lowest = (0 - max(MEAN)) / min(STD)
    highest = (1 - min(MEAN)) / min(STD)
    assert lowest - 1e-4 <= out.min() and out.max() <= highest + 1e-4


def test_seed_pipeline_is_random_and_eval_is_deterministic() -> None:
    train = build_train_transform(augment_cfg("seed"), 32, MEAN, STD)
    evaluate = build_eval_transform(augment_cfg("seed"), 32, MEAN, STD)
    img = image()

    train_views = [train(image=img)["image"] for _ in range(4)]
    eval_views = [evaluate(image=img)["image"] for _ in range(2)]

    assert not torch.equal(train_views[0], train_views[1])
    assert torch.equal(eval_views[0], eval_views[1])


def test_clahe_applies_to_eval_as_well() -> None:
    plain = build_eval_transform(augment_cfg("none"), 32, MEAN, STD)
    clahe = build_eval_transform(augment_cfg("none", "augment.clahe=true"), 32, MEAN, STD)
    img = image()

    assert not torch.equal(plain(image=img)["image"], clahe(image=img)["image"])


def test_a_misspelt_albumentations_argument_is_an_error() -> None:
    spec = augment_cfg("seed")
    spec["gauss_noise"] = {"p": 0.5, "std_range": [0.01, 0.02], "var_limit": [10, 50]}

    with pytest.raises(CifarLabError, match="var_limit"):
        build_train_transform(spec, 32, MEAN, STD)


def test_an_unknown_step_is_an_error() -> None:
    spec = augment_cfg("basic")
    spec["hflipp"] = {"p": 0.5}

    with pytest.raises(CifarLabError, match="hflipp"):
        build_train_transform(spec, 32, MEAN, STD)


def test_imagenet_stats_can_be_chosen() -> None:
    assert normalization_stats("imagenet", "cifar100")[0] == (0.485, 0.456, 0.406)
    with pytest.raises(CifarLabError, match="augment.stats='imagnet'"):
        normalization_stats("imagnet", "cifar100")
