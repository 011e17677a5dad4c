"""A backbone that yields pooled features plus the reference's Linear-Dropout-Linear head."""

from __future__ import annotations

import torch
from timm.layers import get_act_layer
from torch import nn

from cifar_lab.errors import CifarLabError


class ClassifierHead(nn.Sequential):
    """Linear(F, hidden) - act - Dropout - Linear(hidden, C); `hidden=0` gives Dropout-Linear."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int = 128,
        drop_rate: float = 0.0,
        act_layer: str = "relu",
    ):
        if hidden > 0:
            layers = [
                nn.Linear(in_features, hidden),
                get_act_layer(act_layer)(),
                nn.Dropout(drop_rate),
                nn.Linear(hidden, num_classes),
            ]
        else:
            layers = [nn.Dropout(drop_rate), nn.Linear(in_features, num_classes)]
        super().__init__(*layers)


class ClassifierNet(nn.Module):
    """`backbone` maps images to (N, F) features and `head` maps those to (N, C) logits.

    With `freeze_backbone=True` only the head trains (a linear probe) and the backbone's
    BatchNorm layers keep their running statistics, so a frozen backbone really stays fixed.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, freeze_backbone: bool = False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> ClassifierNet:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    # --- the penultimate layer, for OOD detectors (Mahalanobis, KNN, ViM, ReAct) ----------
    @property
    def classifier(self) -> nn.Linear:
        """The last layer: logits = classifier(features(x)). ViM reads its weight and bias."""
        last = self.head[-1] if isinstance(self.head, nn.Sequential) and len(self.head) else None
        if not isinstance(last, nn.Linear):
            raise CifarLabError(
                f"the model's head ({type(self.head).__name__}) does not end in a Linear layer, so "
                f"it has no penultimate features: feature detectors (mahalanobis, knn, vim, "
                f"react_energy) cannot score it; use detect.detectors=[msp,maxlogit,energy,odin]"
            )
        return last

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (N, D): the input of the last Linear layer. With the
        reference head (Linear-act-Dropout-Linear) that is the hidden activation (D =
        `head_hidden`); with `head_hidden=0` it is the backbone's pooled features."""
        self.classifier  # noqa: B018 (a head without a last Linear is one line, before any work)
        features = self.backbone(x)
        for layer in list(self.head)[:-1]:
            features = layer(features)
        return features
