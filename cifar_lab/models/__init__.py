"""Backbones, the classifier head and the LightningModule."""

from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.models.convnet import create_convnet
from cifar_lab.models.timm_net import create_timm_net

__all__ = ["CIFARClassifier", "create_convnet", "create_timm_net"]
