"""`python -m cifar_lab.show_augment augment=seed`: a PNG grid of what the pipeline does.

Each row is one image: the original, then `num_views` independent draws of the training
pipeline of the chosen backend (albumentations per image, or kornia on a batch for
`augment.backend=batched`), with the normalisation undone. When `augment.mix` turns on
CutMix/MixUp, a last row shows the first views mixed as a training batch is, each titled with
its label weights.
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

from cifar_lab.cli import check_command_line, exit_on_user_error, setup_run_output
from cifar_lab.data.batched_augment import from_albumentations
from cifar_lab.data.batches import to_nchw
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.mixing import build_mixup
from cifar_lab.data.pipelines import resolve_backend
from cifar_lab.data.transforms import Transforms, build_transforms
from cifar_lab.errors import CifarLabError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__spec__.name)  # the module's name, also under `python -m`


def to_display(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised CHW tensor back to an HWC image in [0, 1] for plotting."""
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()


def check_grid_settings(cfg: DictConfig) -> None:
    if cfg.split not in ("train", "test"):
        raise CifarLabError(f"split={cfg.split!r} is unknown; expected split=train or split=test")
    for key, least in (("num_images", 1), ("num_views", 0)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise CifarLabError(f"{key}={value!r} is invalid; expected an integer >= {least}")


def training_views(
    cfg: DictConfig, transforms: Transforms, images: np.ndarray
) -> list[list[torch.Tensor]]:
    """`cfg.num_views` normalised training views of each uint8 HWC image, drawn by the backend
    that trains with `cfg.augment`: albumentations per image, or kornia on a batch of views."""
    if resolve_backend(cfg.augment.get("backend")) == "batched":
        pipeline = from_albumentations(transforms.train, transforms.img_size)
        torch.manual_seed(cfg.seed)
        return [list(pipeline(to_nchw(np.stack([image] * cfg.num_views)))) for image in images]
    transforms.train.set_random_seed(cfg.seed)
    return [
        [transforms.train(image=image)["image"] for _ in range(cfg.num_views)] for image in images
    ]


def mixed_views(
    cfg: DictConfig, first_views: list[torch.Tensor], labels: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """CutMix/MixUp of one view per image, as `augment.mix` mixes a training batch: the mixed
    images and their label weights; None when mixing is off."""
    mix = cfg.augment.get("mix")
    mixup = build_mixup(
        OmegaConf.to_container(mix, resolve=True) if mix else None, cfg.data.num_classes
    )
    even = len(first_views) - len(first_views) % 2  # timm mixes a batch with its reverse
    if mixup is None or even < 2:
        return None
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # timm draws lambda and CutMix boxes with numpy
    images = torch.stack(first_views[:even])
    return mixup(images, torch.as_tensor(labels[:even]))


def label_weights(weights: torch.Tensor, classes: Sequence[str]) -> str:
    """'cat 0.62\ndog 0.38': the classes a mixed image's target weighs, largest first."""
    top = weights.topk(min(2, len(weights)))
    pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    return "\n".join(f"{classes[i]} {w:.2f}" for w, i in pairs if w >= 0.005)


def augmentation_grid(cfg: DictConfig) -> Path:
    """Draw the grid for `cfg` and save it to `cfg.output`."""
    check_grid_settings(cfg)
    try:
        data = load_cifar(
            cfg.data.name,
            cfg.data.root,
            cfg.split == "train",
            cfg.data.download,
            cfg.data.check_integrity,
        )
    except CifarLabError as err:
        if cfg.split != "train" or "are missing" not in str(err):
            raise
        # a preview needs one split: the test split may be all this folder holds
        raise CifarLabError(f"{err}; or preview the test split: split=test") from err
    augment = OmegaConf.to_container(cfg.augment, resolve=True)
    transforms = build_transforms(augment, cfg.data.name, cfg.data.img_size)
    mean, std = transforms.mean, transforms.std
    picks = np.random.default_rng(cfg.seed).choice(
        len(data), min(cfg.num_images, len(data)), replace=False
    )
    views = training_views(cfg, transforms, data.images[picks])
    mixed = mixed_views(cfg, [row[0] for row in views], data.labels[picks])

    cols = cfg.num_views + 1
    rows = len(picks) + (mixed is not None)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for row, index, row_views in zip(axes, picks, views, strict=False):
        row[0].imshow(data.images[index])
        row[0].set_title(data.classes[data.labels[index]], fontsize=7)
        for ax, view in zip(row[1:], row_views, strict=True):
            ax.imshow(to_display(view, mean, std))
    if mixed is not None:
        for ax, image, weights in zip(axes[-1], *mixed, strict=False):
            ax.imshow(to_display(image, mean, std))
            ax.set_title(label_weights(weights, data.classes), fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    backend = resolve_backend(cfg.augment.get("backend"))
    title = f"augment={cfg.augment.name} ({backend}): original, then {cfg.num_views} training views"
    if mixed is not None:
        title += "\nlast row: the first views mixed by CutMix/MixUp, with their label weights"
    fig.suptitle(title, fontsize=9)
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
    check_command_line("show_augment")
    main()
