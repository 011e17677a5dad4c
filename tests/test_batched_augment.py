"""The batched (kornia) augmentation: same steps, probabilities and ranges as albumentations,
random per sample, and wired into the datamodule for CPU workers and GPU batches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from support import TINY_CONVNET, compose_train, tiny_data

from cifar_lab.data import CIFARDataModule
from cifar_lab.data.batched_augment import build_batched_eval, build_batched_train
from cifar_lab.data.pipelines import BatchedInput
from cifar_lab.data.transforms import (
    TRAIN_STEPS,
    Transforms,
    build_eval_transform,
    build_train_transform,
)
from cifar_lab.errors import CifarLabError
from cifar_lab.train import train

# Identity normalisation: outputs stay on the 0-1 pixel scale, so ranges read directly.
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
N = 400


def augment(name: str = "seed", *overrides: str) -> dict:
    cfg = compose_train([f"augment={name}", *overrides])
    return OmegaConf.to_container(cfg.augment, resolve=True)


def only(step: str) -> dict:
    """The seed config with every random step but `step` switched off."""
    seed = augment("seed")
    return {**seed, **{name: None for name in TRAIN_STEPS if name != step}}


def sample_image(kind: str, seed: int = 0) -> np.ndarray:
    """A uint8 HWC image: mid-grey (reads intensity parameters) or smooth colour (geometry)."""
    if kind == "grey":
        return np.full((32, 32, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    return np.kron(coarse, np.ones((4, 4, 1), dtype=np.uint8))


def run_albumentations(config: dict, image: np.ndarray, n: int = N) -> torch.Tensor:
    transform = build_train_transform(config, 32, *UNIT)
    transform.set_random_seed(0)  # fixed draws: the statistical checks cannot flake
    return torch.stack([transform(image=image)["image"] for _ in range(n)])


def run_batched(config: dict, image: np.ndarray, n: int = N) -> torch.Tensor:
    batch = torch.from_numpy(image).permute(2, 0, 1).expand(n, 3, 32, 32)
    torch.manual_seed(0)
    return build_batched_train(config, 32, *UNIT)(batch)


def changed(outputs: torch.Tensor, image: np.ndarray) -> torch.Tensor:
    """Per sample: did the step touch it (beyond 3/255 rounding anywhere)?"""
    original = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    return (outputs - original).abs().flatten(1).amax(dim=1) > 3 / 255


@pytest.mark.parametrize(
    ("step", "image_kind"),
    [
        ("crop", "colour"),
        ("hflip", "colour"),
        ("brightness_contrast", "grey"),
        ("gauss_noise", "grey"),
        ("rotate", "colour"),
        ("color_jitter", "colour"),
        ("jpeg", "colour"),
    ],
)
def test_each_seed_step_fires_as_often_in_both_backends(step: str, image_kind: str) -> None:
    config, image = only(step), sample_image(image_kind)

    fired = {
        "albumentations": changed(run_albumentations(config, image), image).float().mean(),
        "batched": changed(run_batched(config, image), image).float().mean(),
    }

    # Both estimate the config's probability from N=400 draws: agree to a few standard errors.
    assert abs(fired["albumentations"] - fired["batched"]) < 0.1, fired


def test_brightness_contrast_draws_from_the_same_range() -> None:
    """On mid-grey, x*(1+c)+b with c, b in [-0.2, 0.2] spans 0.5 +- 0.3."""
    config = only("brightness_contrast")
    config["brightness_contrast"]["p"] = 1.0
    image = sample_image("grey")

    levels = {
        "albumentations": run_albumentations(config, image).mean(dim=(1, 2, 3)),
        "batched": run_batched(config, image).mean(dim=(1, 2, 3)),
    }

    for name, level in levels.items():
        assert level.min() >= 0.5 * 0.8 - 0.2 - 0.01 and level.max() <= 0.5 * 1.2 + 0.2 + 0.01, name
        assert level.max() - level.min() > 0.4, f"{name} does not vary per sample"
    assert abs(levels["albumentations"].std() - levels["batched"].std()) < 0.03


def test_gauss_noise_std_stays_in_the_configured_range() -> None:
    config = only("gauss_noise")
    config["gauss_noise"]["p"] = 1.0
    low, high = config["gauss_noise"]["std_range"]
    image = sample_image("grey")

    for name, outputs in {
        "albumentations": run_albumentations(config, image),
        "batched": run_batched(config, image),
    }.items():
        std = (outputs - 128 / 255).flatten(1).std(dim=1)
        assert std.min() > low * 0.85 and std.max() < high * 1.15, name
        assert std.max() - std.min() > (high - low) / 2, f"{name}: one std for every sample"


def test_every_sample_of_a_batch_gets_its_own_parameters() -> None:
    """Unlike a torchvision v2 transform on a batch, which draws one crop for all of it."""
    image = sample_image("colour")

    for name, outputs in {
        "albumentations": run_albumentations(augment("seed"), image, n=64),
        "batched": run_batched(augment("seed"), image, n=64),
    }.items():
        distinct = torch.unique(outputs.flatten(1), dim=0)
        assert len(distinct) == 64, name


def test_outputs_are_normalised_float_batches_in_pixel_range() -> None:
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.2)

    out = build_batched_train(augment("seed"), 64, mean, std)(images)

    assert out.shape == (32, 3, 64, 64) and out.dtype == torch.float32
    pixels = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_eval_pipeline_is_deterministic_and_equals_albumentations() -> None:
    config = augment("seed")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.2)
    batched = build_batched_eval(config, 32, mean, std)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)

    transform = build_eval_transform(config, 32, mean, std)
    expected = torch.stack([transform(image=image)["image"] for image in images])

    torch.testing.assert_close(batched(batch), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched(batch), batched(batch))


def test_clahe_preprocessing_runs_on_batches() -> None:
    images = torch.from_numpy(sample_image("colour")).permute(2, 0, 1).expand(4, 3, 32, 32)
    plain = build_batched_eval(augment("none"), 32, *UNIT)(images)

    equalised = build_batched_eval(augment("none", "augment.clahe=true"), 32, *UNIT)(images)

    assert equalised.shape == plain.shape
    assert (equalised - plain).abs().max() > 0.02


def test_an_option_kornia_cannot_reproduce_is_refused_with_the_fix() -> None:
    config = augment("seed", "+augment.rotate.interpolation=3")  # cv2.INTER_AREA

    with pytest.raises(CifarLabError, match=r"Rotate.*augment.backend=albumentations"):
        build_batched_train(config, 32, *UNIT)


def test_unknown_backend_names_the_choices(cifar100_root) -> None:
    with pytest.raises(CifarLabError, match=r"augment.backend='gpu'.*albumentations.*batched"):
        CIFARDataModule(root=str(cifar100_root), augment={**augment("basic"), "backend": "gpu"})


def batched_datamodule(cifar100_root, *overrides: str):
    cfg = compose_train(
        [
            *tiny_data(cifar100_root),
            "augment=seed",
            "augment.backend=batched",
            *overrides,
        ]
    )
    datamodule = instantiate(
        cfg.data, augment=OmegaConf.to_container(cfg.augment, resolve=True), _convert_="all"
    )
    datamodule.setup("fit")
    return datamodule


def test_on_cpu_the_loader_serves_augmented_float_batches(cifar100_root) -> None:
    datamodule = batched_datamodule(cifar100_root, "data.num_workers=1")

    images, labels = next(iter(datamodule.train_dataloader()))

    assert images.dtype == torch.float32 and images.shape == (16, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    assert not datamodule.input.on_device  # nothing left for on_after_batch_transfer


def test_after_transfer_hook_augments_training_batches_and_only_preprocesses_eval(
    cifar100_root,
) -> None:
    """The GPU path, driven on the CPU: pipelines run on uint8 batches after the transfer."""
    datamodule = batched_datamodule(cifar100_root)
    unit = Transforms(
        train=build_train_transform(datamodule.augment, 32, *UNIT),
        eval=build_eval_transform(datamodule.augment, 32, *UNIT),
        mean=UNIT[0],
        std=UNIT[1],
        img_size=32,
    )
    datamodule.input = BatchedInput(unit, 0, torch.device("cpu"), on_device=True)
    raw = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(16)

    datamodule.trainer = SimpleNamespace(training=True)
    first, second = (datamodule.on_after_batch_transfer((raw, labels), 0)[0] for _ in range(2))
    datamodule.trainer = SimpleNamespace(training=False)
    evaluated = datamodule.on_after_batch_transfer((raw, labels), 0)

    assert not torch.equal(first, second)
    torch.testing.assert_close(evaluated[0], raw.float() / 255)
    assert evaluated[1] is labels
    floats = torch.rand(2, 3, 32, 32)
    assert datamodule.on_after_batch_transfer((floats, labels), 0)[0] is floats


def test_training_with_the_batched_backend_finishes(train_cfg) -> None:
    cfg = train_cfg(*TINY_CONVNET, "augment=seed", "augment.backend=batched")

    metrics = train(cfg)

    assert metrics["status"] == "finished" and 0.0 <= metrics["test/acc"] <= 1.0
