"""`python -m cifar_lab.show_augment augment=seed`: a PNG grid of what the pipeline does.

Each row is one image: the original, then `num_views` independent draws of the training
pipeline (undone normalisation, so colours are as the model sees them before scaling).
CutMix/MixUp act on whole batches during training and are not shown here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import matplotlib
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cifar_lab.cli import exit_on_user_error, reject_added_groups, setup_run_output
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.transforms import build_transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger("cifar_lab.show_augment")


def to_display(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised CHW tensor back to an HWC image in [0, 1] for plotting."""
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()


def augmentation_grid(cfg: DictConfig) -> Path:
    """Draw the grid for `cfg` and save it to `cfg.output`."""
    data = load_cifar(
        cfg.data.name,
        cfg.data.root,
        cfg.split == "train",
        cfg.data.download,
        cfg.data.check_integrity,
    )
    augment = OmegaConf.to_container(cfg.augment, resolve=True)
    transforms = build_transforms(augment, cfg.data.name, cfg.data.img_size)
    mean, std, pipeline = transforms.mean, transforms.std, transforms.train
    pipeline.set_random_seed(cfg.seed)
    picks = np.random.default_rng(cfg.seed).choice(
        len(data), min(cfg.num_images, len(data)), replace=False
    )

    cols = cfg.num_views + 1
    fig, axes = plt.subplots(
        len(picks), cols, figsize=(1.3 * cols, 1.4 * len(picks)), squeeze=False
    )
    for row, index in zip(axes, picks, strict=False):
        image = data.images[index]
        row[0].imshow(image)
        row[0].set_title(data.classes[data.labels[index]], fontsize=7)
        for ax in row[1:]:
            ax.imshow(to_display(pipeline(image=image)["image"], mean, std))
        for ax in row:
            ax.axis("off")
    fig.suptitle(
        f"augment={cfg.augment.name}: original, then {cfg.num_views} training views", fontsize=9
    )
    fig.tight_layout()
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


@hydra.main(version_base="1.3", config_path="../conf", config_name="show_augment")
def main(cfg: DictConfig) -> None:
    setup_run_output()
    with exit_on_user_error():
        path = augmentation_grid(cfg)
    log.info("augmentation preview written to %s", path)
    print(path)


if __name__ == "__main__":
    reject_added_groups("show_augment")
    main()
