"""The augmentation preview writes a grid that shows what the pipeline does."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from support import compose_config, run_module, tiny_data

from cifar_lab.errors import CifarLabError
from cifar_lab.show_augment import augmentation_grid


def preview(augment: str, root: Path, output: Path) -> np.ndarray:
    cfg = compose_config(
        "show_augment",
        [f"augment={augment}", *tiny_data(root), "num_images=3", "num_views=4", f"output={output}"],
    )
    assert augmentation_grid(cfg) == output
    return matplotlib.image.imread(output)


def test_preview_grid_shows_the_augmented_views(cifar100_root: Path, tmp_path: Path) -> None:
    plain = preview("none", cifar100_root, tmp_path / "none.png")
    seed = preview("seed", cifar100_root, tmp_path / "seed.png")

    height, width = seed.shape[:2]
    assert width > height  # 5 columns (original + 4 views) by 3 rows
    assert plain.shape == seed.shape
    # same images, same layout: only the augmented views can tell the two apart
    assert np.abs(plain.astype(float) - seed.astype(float)).mean() > 0.01


def cli_preview(root: Path, tmp_path: Path, name: str, *overrides: str) -> np.ndarray:
    output = tmp_path / f"{name}.png"
    result = run_module(
        "cifar_lab.show_augment",
        "augment=basic",
        *tiny_data(root),
        "num_images=4",
        "num_views=3",
        f"output={output}",
        *overrides,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return matplotlib.image.imread(output)


def in_process_preview(root: Path, tmp_path: Path, name: str, *overrides: str) -> np.ndarray:
    """What `cli_preview` writes with these overrides, drawn in this process."""
    output = tmp_path / f"{name}.png"
    cfg = compose_config(
        "show_augment",
        ["augment=basic", *tiny_data(root), "num_images=4", "num_views=3", f"output={output}",
         *overrides],
    )  # fmt: skip
    assert augmentation_grid(cfg) == output
    return matplotlib.image.imread(output)


@pytest.mark.slow
def test_preview_shows_the_batched_backend_and_the_mixing_that_train(
    cifar100_root: Path, tmp_path: Path
) -> None:
    plain = cli_preview(cifar100_root, tmp_path, "plain")  # the command line writes the grid
    batched = in_process_preview(cifar100_root, tmp_path, "batched", "augment.backend=batched")
    mixed = in_process_preview(
        cifar100_root, tmp_path, "mixed", "augment.mix={mixup_alpha: 0.8, cutmix_alpha: 1.0}"
    )

    assert batched.shape == plain.shape  # same layout, kornia's own draws
    assert np.abs(batched.astype(float) - plain.astype(float)).mean() > 0.01
    assert mixed.shape[0] > plain.shape[0]  # a row of mixed images below the views
    assert mixed.shape[1] == plain.shape[1]


def test_a_folder_of_the_test_split_alone_previews_with_split_test(cifar100_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cifar100_root, root)
    (root / "cifar-100-python" / "train").unlink()  # only the test split and the class names
    settings = [*tiny_data(root), f"output={tmp_path / 'grid.png'}"]

    with pytest.raises(CifarLabError, match=r"files \['train'\] are missing .*; or preview the "
                       r"test split: split=test"):  # fmt: skip
        augmentation_grid(compose_config("show_augment", settings))
    path = augmentation_grid(compose_config("show_augment", [*settings, "split=test"]))

    assert path.is_file()
