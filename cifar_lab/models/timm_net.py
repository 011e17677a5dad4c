"""timm backbones (ResNet-50/101, ResNeXt-50 32x4d, He et al. 2016 / Xie et al. 2017) for CIFAR.

ImageNet stems shrink a 32x32 image 4x before the first block (7x7 stride-2 conv + max-pool);
the CIFAR stem (a 3x3 stride-1 conv, no max-pool) keeps the resolution, as in He et al.'s CIFAR
experiments. Keep the ImageNet stem when the images are upscaled (`data.img_size`=96-224) to
reuse pretrained features.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import timm
from torch import nn

from cifar_lab.errors import CifarLabError
from cifar_lab.models.net import ClassifierHead, ClassifierNet

STEMS = ("cifar", "imagenet")


def use_cifar_stem(model: nn.Module) -> None:
    """Swap a ResNet-family stem for a 3x3 stride-1 conv (new weights) and drop the max-pool."""
    conv1 = getattr(model, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise CifarLabError(
            f"model.stem=cifar needs a ResNet-style backbone (conv1 + maxpool) but "
            f"{type(model).__name__} has none; use model.stem=imagenet"
        )
    model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def pretrained_args(pretrained: bool | str | None) -> dict[str, Any]:
    """timm.create_model arguments for `model.pretrained`: false, true (hub) or a weights file."""
    if pretrained in (None, False, "false", ""):
        return {"pretrained": False}
    if pretrained is True or pretrained == "true":
        return {"pretrained": True}
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise CifarLabError(
            f"model.pretrained={pretrained!r} is neither true/false nor an existing weights file; "
            f"give the path of a .pth/.safetensors state dict for this backbone"
        )
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


HUB_ADDRESS = ("huggingface.co", 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the timm hub answers (always assumed through a proxy, which sockets bypass)."""
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection(HUB_ADDRESS, timeout=timeout).close()
    except OSError:
        return False
    return True


def read_hub_cache_only_when_offline() -> None:
    """Without a network, make huggingface_hub read its local cache only (as `HF_HUB_OFFLINE=1`
    does), so weights that are not cached fail at once instead of after a minute of retries."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        constants.HF_HUB_OFFLINE = True


def create_timm_net(
    name: str,
    num_classes: int = 100,
    act_layer: str | None = "relu",
    drop_rate: float = 0.0,
    drop_block_rate: float = 0.0,
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    head_hidden: int = 128,
    stem: str = "cifar",
    **backbone_kwargs: Any,
) -> ClassifierNet:
    """Any timm model as a feature extractor (`num_classes=0`) under the reference head.

    `backbone_kwargs` go to timm unchanged (e.g. `cardinality`, `base_width` for ResNeXt).
    """
    if stem not in STEMS:
        raise CifarLabError(f"model.stem={stem!r} is unknown; expected one of {STEMS}")
    if not name:
        raise CifarLabError(
            "model=timm needs a backbone name: add model.name=<timm model>, e.g. convnext_nano"
        )
    if freeze_backbone and stem == "cifar":
        raise CifarLabError(
            "model.freeze_backbone=true with model.stem=cifar would freeze a new, untrained first "
            "conv; use model.stem=imagenet for a linear probe of pretrained features"
        )
    if not timm.is_model(name):
        raise CifarLabError(
            f"model.name={name!r} is not a timm model; see timm.list_models('resnet*') for names"
        )
    kwargs = dict(backbone_kwargs, num_classes=0)
    if act_layer:  # null keeps the backbone's own activation (not every timm model takes one)
        kwargs["act_layer"] = act_layer
    if drop_block_rate > 0:
        kwargs["drop_block_rate"] = drop_block_rate
    weights = pretrained_args(pretrained)
    if weights["pretrained"] and "pretrained_cfg_overlay" not in weights:
        read_hub_cache_only_when_offline()
    try:
        backbone = timm.create_model(name, **weights, **kwargs)
    except TypeError as err:
        raise CifarLabError(f"timm model {name!r} rejected the model config: {err}") from err
    except OSError as err:  # the hub's errors, offline or not, and unreadable weights files
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise CifarLabError(
            f"could not load pretrained weights for {name} ({type(err).__name__}: {first_line}); "
            f"set model.pretrained=false to train from scratch, or model.pretrained=<path of a "
            f"weights file>"
        ) from err
    if stem == "cifar":
        use_cifar_stem(backbone)
    head = ClassifierHead(
        backbone.num_features, num_classes, head_hidden, drop_rate, act_layer or "relu"
    )
    return ClassifierNet(backbone, head, freeze_backbone)
