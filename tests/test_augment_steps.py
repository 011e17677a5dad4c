"""One record per augment step (`cifar_lab.data.augment_steps`): every key of every augment
config has one (or is a setting), and each record's two backends and its overlap agree."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support import CONF_DIR, compose_train

from cifar_lab.data.augment_steps import AUGMENT_STEPS, SETTINGS, STEP_BY_NAME, TRAIN_STEPS
from cifar_lab.data.cifar_c import CIFAR_C

AUGMENT_CONFIGS = sorted(path.stem for path in (Path(CONF_DIR) / "augment").glob("*.yaml"))
# Values for the steps no shipped config switches on.
EXTRA_SPECS = {"clahe": True, "random_erasing": {"p": 0.5}}


def augment(name: str) -> dict:
    return OmegaConf.to_container(compose_train([f"augment={name}"]).augment, resolve=True)


@functools.cache
def example_specs() -> dict:
    """A switched-on value for every step, from the shipped configs."""
    specs = dict(EXTRA_SPECS)
    for name in AUGMENT_CONFIGS:
        for key, spec in augment(name).items():
            if key in STEP_BY_NAME and spec:
                specs.setdefault(key, spec)
    return specs


@pytest.mark.parametrize("name", AUGMENT_CONFIGS)
def test_every_key_of_an_augment_config_is_a_step_record_or_a_setting(name: str) -> None:
    keys = set(augment(name))

    assert keys <= set(STEP_BY_NAME) | set(SETTINGS)


def test_the_records_are_the_pipeline_in_its_order() -> None:
    assert TRAIN_STEPS == (
        "crop", "hflip", "randaugment", "trivialaugment", "augmix",
        "brightness_contrast", "gauss_noise", "rotate", "color_jitter", "jpeg",
    )  # fmt: skip
    assert [s.name for s in AUGMENT_STEPS if s.stage != "train"] == ["clahe", "random_erasing"]
    assert not set(STEP_BY_NAME) & set(SETTINGS)


@pytest.mark.parametrize("step", AUGMENT_STEPS, ids=lambda step: step.name)
def test_each_transform_a_step_builds_has_a_batched_converter_in_its_record(step) -> None:
    spec = example_specs()[step.name]

    built = step.per_image(spec, 32)

    assert built and {type(t) for t in built} <= set(step.per_batch), step.name


@pytest.mark.parametrize("step", AUGMENT_STEPS, ids=lambda step: step.name)
def test_each_step_covers_only_cifar_c_corruptions_and_says_why(step) -> None:
    assert set(step.covers) <= set(CIFAR_C.corruptions)
    assert step.why
