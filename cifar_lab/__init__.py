"""cifar-lab: train and stress-test image classifiers on CIFAR-100 with Lightning + Hydra."""

import os

# albumentations checks PyPI for a newer release at import; keep runs offline and quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that spin while they wait take the cores from DataLoader workers and other
# processes; torch reads this when it loads, so it is set here (see cifar_lab.speed).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
