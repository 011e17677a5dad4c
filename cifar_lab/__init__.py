"""cifar-lab: train and stress-test image classifiers on CIFAR-100 with Lightning + Hydra."""

import os

# albumentations checks PyPI for a newer release at import; keep runs offline and quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
