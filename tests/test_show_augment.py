"""The augmentation preview writes a grid of the requested size."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from cifar_lab.show_augment import augmentation_grid


def test_preview_writes_a_png_grid(cifar100_root: Path, tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "show_augment",
            overrides=[
                "augment=seed",
                f"data.root={cifar100_root}",
                "data.check_integrity=false",
                "data.download=false",
                "num_images=3",
                "num_views=4",
                f"output={tmp_path / 'grid.png'}",
            ],
        )

    path = augmentation_grid(cfg)

    image = matplotlib.image.imread(path)
    assert path == tmp_path / "grid.png"
    height, width = image.shape[:2]
    assert width > height  # 5 columns (original + 4 views) by 3 rows
