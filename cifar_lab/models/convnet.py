"""The course project's 5-block ConvNet (part 1 of the reference, 57% on the leaderboard).

Each block is two 3x3 convolutions (conv -> act -> BatchNorm, the reference's order), a 2x2
max-pool and dropout, optionally DropBlock (Ghiasi et al., 2018) from timm.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.layers import DropBlock2d, get_act_layer
from torch import nn

from cifar_lab.models.net import ClassifierHead, ClassifierNet


def conv_block(
    in_chans: int, out_chans: int, act_layer: str, block_drop_rate: float, drop_block_rate: float
) -> nn.Sequential:
    act = get_act_layer(act_layer)
    layers: list[nn.Module] = []
    for chans in (in_chans, out_chans):
        layers += [nn.Conv2d(chans, out_chans, 3, padding=1), act(), nn.BatchNorm2d(out_chans)]
    layers.append(nn.MaxPool2d(2))
    if drop_block_rate > 0:
        layers.append(DropBlock2d(drop_prob=drop_block_rate, block_size=3))
    layers.append(nn.Dropout(block_drop_rate))
    return nn.Sequential(*layers)


def create_convnet(
    num_classes: int = 100,
    widths: Sequence[int] = (64, 128, 128, 256, 512),
    act_layer: str = "relu",
    block_drop_rate: float = 0.1,
    drop_block_rate: float = 0.0,
    drop_rate: float = 0.5,
    head_hidden: int = 128,
    freeze_backbone: bool = False,
    in_chans: int = 3,
) -> ClassifierNet:
    """The ConvNet; `widths` sets the number of blocks (5 in the reference) and their widths."""
    blocks, chans = [], in_chans
    for width in widths:
        blocks.append(conv_block(chans, width, act_layer, block_drop_rate, drop_block_rate))
        chans = width
    backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = ClassifierHead(chans, num_classes, head_hidden, drop_rate, act_layer)
    return ClassifierNet(backbone, head, freeze_backbone)
