"""The OOD detection sets (`detect=`): each torchvision layout read from its real on-disk format,
made CIFAR-shaped, bounded, fetched only when missing, and every bad input one line."""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from cifar_files import write_cifar
from detect_files import (
    colour_of,
    labels_of,
    write_dtd,
    write_idx_set,
    write_image,
    write_places365,
    write_svhn,
)
from support import compose_config

from cifar_lab.build import build_detection_sources
from cifar_lab.data.detection_sources import DetectionSources
from cifar_lab.errors import CifarLabError

DIGITS = list(range(10)) * 2


def load(root: Path, *sets: str, dataset: str = "cifar100", **settings):
    settings = {"check_integrity": False, "max_images": None, **settings}
    return DetectionSources(sets=list(sets), root=str(root), **settings).load(dataset)


def only(root: Path, name: str, **settings) -> np.ndarray:
    (loaded,) = load(root, name, **settings)
    assert loaded.name == name and loaded.images.labels is None
    images = loaded.images.read(0, loaded.images.num_images)
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    return images


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_svhn_mat_file_loads_with_zero_for_label_ten(tmp_path: Path) -> None:
    write_svhn(tmp_path, [0, 1, 2, 3])

    images = only(tmp_path, "svhn")

    assert images.shape == (4, 32, 32, 3)
    assert images[:, 0, 0].tolist() == [[0, 0, 0]] * 4  # (n, H, W, C), not MATLAB's order
    assert [tuple(i) for i in images[:, 5, 5]] == [colour_of(label) for label in range(4)]


@pytest.mark.parametrize(
    ("name", "folder", "packed"),
    [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True)],
)
def test_idx_digits_load_grey_as_three_channels_at_32_px(tmp_path, caplog, name, folder, packed):
    write_idx_set(tmp_path, folder, [0, 1, 2, 3], packed=packed)

    with caplog.at_level(logging.INFO):
        images = only(tmp_path, name)

    assert images.shape == (4, 32, 32, 3)
    assert (images[..., 0] == images[..., 2]).all()  # grey copied to every channel
    assert images[:, 16, 16, 0].tolist() == [30, 50, 70, 90]
    said = [r.getMessage() for r in caplog.records if "CIFAR-shaped" in r.getMessage()]
    assert len(said) == 1 and f"{name} (grey to 3 channels, 28x28 px to 32x32)" in said[0]


def test_dtd_folders_and_split_lists_load_every_listed_image(tmp_path: Path) -> None:
    write_dtd(tmp_path, ["banded", "dotted"], per_class=3)

    images = only(tmp_path, "textures")

    assert len(images) == 6  # train1 + val1 + test1 name each image once
    assert sorted(labels_of(images)) == [0, 0, 0, 1, 1, 1]


def test_places365_list_and_small_images_load_bounded_and_class_balanced(tmp_path: Path) -> None:
    write_places365(tmp_path, [0] * 6 + [1] * 2 + [2] * 4)

    images = only(tmp_path, "places365", max_images=6)
    again = only(tmp_path, "places365", max_images=6)
    other_seed = only(tmp_path, "places365", max_images=6, seed=1)

    assert sorted(labels_of(images)) == [0, 0, 1, 1, 2, 2]  # not the six of class 0
    np.testing.assert_array_equal(images, again)
    assert len(other_seed) == 6


def test_the_other_cifar_is_near_ood_and_its_own_dataset_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=20)

    (near,) = load(tmp_path, "other_cifar")

    assert (near.name, near.group, near.images.num_images) == ("cifar10", "near", 20)
    with pytest.raises(CifarLabError, match="the dataset this model was trained on") as err:
        load(tmp_path, "cifar10", dataset="cifar10")
    assert "other_cifar" in one_line(err)


def fetch_recorder(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[str]:
    """Replace only torchvision's network fetch: record each URL, or fail as offline."""
    fetched: list[str] = []

    def urlretrieve(url: str, filename: str, chunk_size: int = 0) -> None:
        fetched.append(url)
        if fail:
            raise urllib.error.URLError("Temporary failure in name resolution")
        raise AssertionError(f"a file that is present was fetched again: {url}")

    monkeypatch.setattr("torchvision.datasets.utils._get_redirect_url", lambda url, max_hops: url)
    monkeypatch.setattr("torchvision.datasets.utils._urlretrieve", urlretrieve)
    return fetched


def test_download_true_never_fetches_sets_that_are_there(tmp_path, monkeypatch) -> None:
    fetched = fetch_recorder(monkeypatch)
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=10)
    write_svhn(tmp_path, DIGITS)
    write_idx_set(tmp_path, "MNIST", DIGITS)
    write_idx_set(tmp_path, "FashionMNIST", DIGITS, packed=True)
    write_dtd(tmp_path, ["banded", "dotted"], per_class=3)
    write_places365(tmp_path, [0, 1, 2])
    names = ["other_cifar", "svhn", "textures", "places365", "mnist", "fashion_mnist"]

    loaded = load(tmp_path, *names, download=True)

    assert fetched == []
    assert [s.name for s in loaded] == ["cifar10", *names[1:]]


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("svhn", "test_32x32.mat"),
        ("mnist", "t10k-images-idx3-ubyte.gz"),
        ("textures", "dtd-r1.0.1.tar.gz"),
        ("places365", "filelist_places365-standard.tar"),
        ("other_cifar", "cifar-10-python.tar.gz"),
    ],
)
def test_download_offline_is_one_line_and_leaves_nothing_partial(tmp_path, monkeypatch, name, file):
    fetched = fetch_recorder(monkeypatch, fail=True)

    with pytest.raises(CifarLabError, match="could not download") as err:
        load(tmp_path, name, download=True)

    message = one_line(err)
    assert "name resolution" in message and "check the network" in message and file in message
    assert fetched and all(url.endswith(file) for url in fetched)  # every MNIST mirror tried
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_missing_sets_offline_are_named_together_with_the_fix(tmp_path: Path) -> None:
    write_idx_set(tmp_path, "MNIST", DIGITS)

    with pytest.raises(CifarLabError, match="OOD sets not found") as err:
        load(tmp_path, "svhn", "mnist", "textures")

    message = one_line(err)
    assert "svhn (" in message and "textures (" in message and "mnist (" not in message
    assert "detect.download=true" in message and "detect.sets=[mnist]" in message


def test_a_file_failing_its_official_md5_is_refused_not_downloaded_again(tmp_path, monkeypatch):
    fetched = fetch_recorder(monkeypatch)
    write_svhn(tmp_path, DIGITS)

    with pytest.raises(CifarLabError, match="fails the official MD5 check") as err:
        load(tmp_path, "svhn", download=True, check_integrity=True)

    assert "detect.check_integrity=false" in one_line(err) and fetched == []


def test_damaged_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"not a MATLAB file")
    write_idx_set(tmp_path, "MNIST", DIGITS)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03short")

    for name, expected in (("svhn", "is not svhn's file"), ("mnist", "is not mnist's file")):
        with pytest.raises(CifarLabError, match=expected) as err:
            load(tmp_path, name)
        assert "detect.download=true" in one_line(err)


def test_a_list_file_naming_a_path_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    write_places365(tmp_path, [0, 1])
    secret = write_image(tmp_path / "secret.jpg", (1, 2, 3), (8, 8))
    (tmp_path / "places365" / "places365_val.txt").write_text(f"../../{secret.name} 0\nx.jpg 1\n")

    with pytest.raises(CifarLabError, match="a path out of") as err:
        load(tmp_path, "places365")
    one_line(err)


def test_unknown_set_name_says_did_you_mean() -> None:
    with pytest.raises(CifarLabError, match=r"'svnh', not a known OOD set \(did you mean svhn\?\)"):
        DetectionSources(sets=["svnh"])


def test_bad_settings_are_one_line_each() -> None:
    for settings, key in (
        ({"sets": "svhn"}, "detect.sets='svhn'"),
        ({"max_images": 1}, "detect.max_images=1"),
        ({"noise_images": 0}, "detect.noise_images=0"),
        ({"user_group": "middle"}, "detect.user_group='middle'"),
        ({"download": "yes"}, "detect.download='yes'"),
    ):
        with pytest.raises(CifarLabError, match=key):
            DetectionSources(**settings)


def test_noise_sets_are_seeded_sanity_sets(tmp_path: Path) -> None:
    first = load(tmp_path, "noise_gaussian", "noise_uniform", noise_images=50, seed=3)
    again = load(tmp_path, "noise_gaussian", "noise_uniform", noise_images=50, seed=3)
    other = load(tmp_path, "noise_gaussian", noise_images=50, seed=4)

    gaussian, uniform = (s.images.read(0, 50) for s in first)
    assert [s.group for s in first] == ["sanity", "sanity"]
    assert gaussian.shape == uniform.shape == (50, 32, 32, 3)
    np.testing.assert_array_equal(gaussian, again[0].images.read(0, 50))
    assert not np.array_equal(gaussian, other[0].images.read(0, 50))
    assert abs(gaussian.mean() - 127.5) < 2 and 55 < gaussian.std() < 70
    assert uniform.min() == 0 and uniform.max() == 255 and abs(uniform.std() - 73.9) < 2


# --- a user's own folder or .npy ---------------------------------------------------------
def test_a_folder_of_png_and_jpeg_images_is_one_set_named_after_it(tmp_path: Path) -> None:
    folder = tmp_path / "my photos"
    write_image(folder / "a.png", colour_of(0), (32, 32))
    write_image(folder / "sub" / "b.JPG", colour_of(1), (64, 48))
    (folder / "notes.txt").write_text("not an image")

    (loaded,) = DetectionSources(folder=str(folder), user_group="near").load("cifar100")

    assert (loaded.name, loaded.group, loaded.images.num_images) == ("my_photos", "near", 2)
    assert tuple(loaded.images.read(0, 1)[0, 16, 16]) == colour_of(0)


def test_bad_folders_are_one_line_each(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    write_image(single / "a.png", (1, 2, 3), (8, 8))
    broken = tmp_path / "broken"
    write_image(broken / "a.png", (1, 2, 3), (8, 8))
    (broken / "b.png").write_bytes(b"\x89PNG but not really")
    linked = tmp_path / "linked"
    write_image(linked / "a.png", (1, 2, 3), (8, 8))
    os.symlink(write_image(tmp_path / "outside.png", (1, 2, 3), (8, 8)), linked / "b.png")

    for folder, expected in (
        (empty, "holds no PNG or JPEG image"),
        (single, "holds 1 image"),
        (broken, "b.png cannot be read as PNG or JPEG"),
        (linked, "leads outside"),
        (tmp_path / "absent", "is not a folder"),
    ):
        with pytest.raises(CifarLabError, match=expected) as err:
            DetectionSources(folder=str(folder)).load("cifar100")
        one_line(err)


def test_an_npy_of_grey_images_of_any_size_becomes_cifar_shaped(tmp_path: Path) -> None:
    path = tmp_path / "scans.npy"
    np.save(path, np.arange(3 * 20 * 24, dtype=np.uint8).reshape(3, 20, 24))

    (loaded,) = DetectionSources(npy=str(path)).load("cifar100")

    images = loaded.images.read(0, 3)
    assert loaded.name == "scans" and images.shape == (3, 32, 32, 3)
    assert (images[..., 0] == images[..., 1]).all()


def test_bad_npy_files_are_one_line_each(tmp_path: Path) -> None:
    arrays = {
        "floats": np.zeros((4, 32, 32, 3), np.float32),
        "one": np.zeros((1, 32, 32, 3), np.uint8),
        "channels": np.zeros((4, 32, 32, 2), np.uint8),
        "objects": np.array([{"x": 1}, {"y": 2}], dtype=object),
    }
    expected = {
        "floats": "holds float32",
        "one": "holds 1 image",
        "channels": "expected uint8 images",
        "objects": "not a readable .npy array",
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array, allow_pickle=True)
        with pytest.raises(CifarLabError, match=expected[name]) as err:
            DetectionSources(npy=str(tmp_path / f"{name}.npy")).load("cifar100")
        one_line(err)


def test_the_detect_configs_build_their_sets_and_none_builds_nothing(tmp_path: Path) -> None:
    def sources(option: str, *overrides: str) -> DetectionSources | None:
        cfg = compose_config("predict", ["ckpt=x", f"detect={option}", *overrides])
        return build_detection_sources(cfg.detect)

    assert sources("none") is None
    standard = sources("standard", f"data.root={tmp_path}")
    assert standard.sets == [
        "other_cifar",
        "svhn",
        "textures",
        "places365",
        "mnist",
        "fashion_mnist",
    ]
    assert standard.root == tmp_path and standard.max_images == 2000
    assert sources("openset").sets == ["heldout_classes"]
    assert sources("noise").sets == ["noise_gaussian", "noise_uniform"]
    assert sources("custom", f"detect.folder={tmp_path}").folder == tmp_path
    with pytest.raises(CifarLabError, match="detect=custom names no OOD set"):
        sources("custom")
