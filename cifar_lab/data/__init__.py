"""Datasets, transforms and the LightningDataModule."""

from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.datasets import ImageArrays, load_cifar

__all__ = ["CIFARDataModule", "ImageArrays", "load_cifar"]
