"""The 19 CIFAR-C corruptions (Hendrycks & Dietterich, 2019): shapes, severity order as the
published CIFAR constants imply it, seeded randomness, and the reference's quirks kept."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import ndimage

from cifar_lab.benchmarks.corrupt import bench_corrupt
from cifar_lab.corruptions import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRA,
    corruption_rng,
    get_corruptions,
    photos,
)
from cifar_lab.corruptions.filters import bilinear_reflect, clipped_zoom, motion_offsets
from cifar_lab.errors import CifarLabError

RANDOM = [name for name, c in CORRUPTIONS.items() if c.random]
CONSECUTIVE = [(1, 2), (2, 3), (3, 4), (4, 5)]
# (milder, harsher) severity pairs whose order the published constants fix; the rest are
# consecutive. Damage is the mean absolute distance from the clean image.
STEPS = {
    # blur sigma 0.05, 0.25, 0.4, 0.25, 0.4 with 1, 1, 1, 2, 2 passes of pixel moves: only the
    # second pass is sure to do more damage
    "glass_blur": [(a, b) for a in (1, 2, 3) for b in (4, 5)],
    # severity 4 only widens the kernel past taps a sigma of 2 has already made negligible
    "motion_blur": [(1, 2), (2, 3), (4, 5)],
    # 3 -> 5 trade image weight (0.9, 0.85, 0.75) for frost (0.4, 0.4, 0.45): darker, so closer
    "frost": [(1, 2), (2, 3), (1, 5)],
    # saturation x0.3, x0.1, then x1.5, x2 + 0.1, x2.5 + 0.2
    "saturate": [(1, 2), (3, 4), (4, 5), (1, 5)],
    # water drops at 1-3, mud at 4-5
    "spatter": [(1, 2), (2, 3), (4, 5), (1, 5)],
    # the affine jitter shrinks (2.56 -> 0.96 px) while the elastic field stays sub-pixel
    "elastic_transform": [(5, 4), (4, 3), (3, 2), (2, 1)],
}


def scenes(n: int = 12, seed: int = 0) -> np.ndarray:
    """Natural-ish 32 x 32 images: a smooth colour gradient with a few flat discs and boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:32, 0:32] / 31.0)[..., None]
    images = np.empty((n, 32, 32, 3), dtype=np.float64)
    for image in images:
        c = rng.uniform(20, 235, (4, 3))
        image[:] = (1 - yy) * ((1 - xx) * c[0] + xx * c[1]) + yy * ((1 - xx) * c[2] + xx * c[3])
        for _ in range(3):
            (cy, cx), r = rng.uniform(6, 26, 2), rng.uniform(3, 9)
            dy, dx = np.abs(yy[..., 0] * 31 - cy), np.abs(xx[..., 0] * 31 - cx)
            disc = rng.random() < 0.5
            image[(dy**2 + dx**2 <= r * r) if disc else (dy <= r) & (dx <= 0.7 * r)] = rng.uniform(
                0, 255, 3
            )
    return images.astype(np.uint8)


IMAGES = scenes()


def corrupt(name: str, severity: int, seed: int = 0, images: np.ndarray = IMAGES) -> np.ndarray:
    return CORRUPTIONS[name](images, severity, np.random.default_rng(seed))


@functools.cache
def damage(name: str) -> list[float]:
    """Mean |corrupted - clean| per severity, with the same draws at every severity."""
    return [float(np.abs(corrupt(name, s).astype(np.float64) - IMAGES).mean()) for s in range(1, 6)]


def test_the_table_holds_the_papers_15_benchmark_and_4_extra_corruptions() -> None:
    assert len(BENCHMARK) == 15 and len(EXTRA) == 4
    assert set(CORRUPTIONS) == set(BENCHMARK) | set(EXTRA)
    assert all(len(c.params) == 5 for c in CORRUPTIONS.values())


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_outputs_are_uint8_images_of_the_input_shape(name: str) -> None:
    for severity in (1, 5):
        out = corrupt(name, severity, images=IMAGES[:3])
        assert out.dtype == np.uint8 and out.shape == (3, 32, 32, 3)


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "elastic_transform"])
def test_severity_5_damages_more_than_severity_1(name: str) -> None:
    mildest, harshest = damage(name)[0], damage(name)[4]
    assert harshest > mildest > 0


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_severity_step_the_constants_order_damages_more(name: str) -> None:
    levels = damage(name)
    for milder, harsher in STEPS.get(name, CONSECUTIVE):
        assert levels[harsher - 1] > levels[milder - 1], (milder, harsher, levels)


def test_elastic_transform_damages_less_as_severity_rises_as_published() -> None:
    levels = damage("elastic_transform")
    assert levels == sorted(levels, reverse=True)


def test_motion_blur_severity_4_equals_3_given_the_same_angles() -> None:
    assert np.array_equal(corrupt("motion_blur", 3), corrupt("motion_blur", 4))


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_gives_identical_bytes_and_another_seed_differs(name: str) -> None:
    first, again, other = (corrupt(name, 3, seed) for seed in (7, 7, 8))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_the_stream_depends_on_seed_name_and_severity_only() -> None:
    draw = [corruption_rng(*key).random(4).tolist() for key in [(0, "fog", 3), (0, "fog", 3)]]
    assert draw[0] == draw[1]
    assert corruption_rng(0, "fog", 3).random() != corruption_rng(0, "snow", 3).random()
    assert corruption_rng(0, "fog", 3).random() != corruption_rng(0, "fog", 4).random()


def test_glass_blur_takes_each_pixel_from_itself_or_an_upper_left_neighbour() -> None:
    """The published swap loop copies (numpy views); at sigma 0.05 both blurs are the identity."""
    out = corrupt("glass_blur", 1)
    assert np.array_equal(out[:, :2], IMAGES[:, :2]) and np.array_equal(
        out[:, :, :2], IMAGES[:, :, :2]
    )
    candidates = np.stack(
        [IMAGES[:, 2 - dy : 32 - dy, 2 - dx : 32 - dx] for dy in (0, 1) for dx in (0, 1)]
    )
    assert (candidates == out[None, :, 2:, 2:]).all(axis=-1).any(axis=0).all()


def test_clipped_zoom_matches_scipy_zoom_of_the_central_crop() -> None:
    image = IMAGES[0].astype(np.float32)
    for factor in (1.02, 1.25, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(
            image[top : top + crop, top : top + crop], (factor, factor, 1), order=1
        )
        trim = (len(zoomed) - 32) // 2
        expected = zoomed[trim : trim + 32, trim : trim + 32]
        np.testing.assert_allclose(clipped_zoom(image[None], factor)[0], expected, atol=1e-3)


def test_bilinear_reflect_matches_scipy_map_coordinates() -> None:
    rng = np.random.default_rng(0)
    image = IMAGES[:1].astype(np.float64)
    rows, cols = rng.uniform(-3, 35, (2, 1, 32, 32))
    expected = np.stack(
        [
            ndimage.map_coordinates(image[0, ..., ch], [rows[0], cols[0]], order=1, mode="reflect")
            for ch in range(3)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(bilinear_reflect(image, rows, cols)[0], expected, atol=1e-9)


def test_motion_blur_taps_follow_the_angle() -> None:
    dx, dy = motion_offsets(5, np.array([0.0, 90.0, -45.0]))
    assert dx[0].tolist() == [0, 1, 2, 3, 4] and dy[0].tolist() == [0] * 5
    assert dx[1].tolist() == [0] * 5 and dy[1].tolist() == [0, 1, 2, 3, 4]
    assert dx[2].tolist() == [0, 1, 1, 2, 3] and dy[2].tolist() == [0, -1, -1, -2, -3]


def test_unknown_names_are_one_error_that_lists_all_19() -> None:
    with pytest.raises(CifarLabError, match="bogus") as err:
        get_corruptions(["fog", "bogus"])
    assert all(name in str(err.value) for name in CORRUPTIONS)
    assert "\n" not in str(err.value)


def test_a_random_corruption_needs_a_generator_and_cifar_shaped_images() -> None:
    with pytest.raises(CifarLabError, match="Generator"):
        CORRUPTIONS["fog"](IMAGES, 1)
    with pytest.raises(CifarLabError, match=r"\(N, 32, 32, 3\) uint8"):
        CORRUPTIONS["contrast"](IMAGES.astype(np.float32), 1)
    with pytest.raises(CifarLabError, match="severity 6"):
        CORRUPTIONS["contrast"](IMAGES, 6)


def test_frost_without_the_photo_package_names_the_pip_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    photos.frost_photos.cache_clear()
    try:
        with pytest.raises(CifarLabError, match=r"pip install imagecorruptions==1\.1\.2"):
            corrupt("frost", 1)
    finally:
        photos.frost_photos.cache_clear()


def test_the_bench_section_reports_rates_and_the_full_set_estimate(cifar10_root: Path) -> None:
    data = {"name": "cifar10", "root": str(cifar10_root), "download": False}
    settings = {"images": 8, "batch_size": 4, "severities": [1, 5], "names": ["contrast", "fog"]}
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "data": {**data, "check_integrity": False},
            "bench": {"warmup": 1, "repeats": 2, "corrupt": settings},
        }
    )

    result = bench_corrupt(cfg, torch.device("cpu"))

    assert list(result["corruptions"]) == ["contrast", "fog"]
    for rates in [result, *result["corruptions"].values()]:
        assert 0 < rates["img_per_s_min"] <= rates["img_per_s"] <= rates["img_per_s_max"]
    assert result["full_set_images"] == 2 * 50_000 and result["full_set_seconds"] > 0
