"""cifar-lab: train and stress-test image classifiers on CIFAR-100 with Lightning + Hydra.

Architecture (each layer imports only the layers below it; `tests/test_architecture.py` checks):

    entry points   train predict bench report show_augment corrupt study (import no entry point)
    composition    build (objects from a config)   benchmarks/   sweeps/
    training | evaluation   training/ (loggers, DDP)  |  evaluation/ (scores, tables, plots)
    models         models/ (backbones, LightningModule, TTA part)       (never evaluation/)
    attacks        attacks/ (FGSM/PGD, AutoAttack, adversarial training objectives, the
                   robustness evaluation of `predict attack=`)
    data           data/ (CIFAR, OOD sets, pipelines, datamodule)
    base           runs/ (the run on disk: checkpoints, their callbacks, config rebuilt from
                   one, metrics.json); errors files memory speed cli
"""

import os

# albumentations checks PyPI for a newer release at import; keep runs offline and quiet.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that spin while they wait take the cores from DataLoader workers and other
# processes; torch reads this when it loads, so it is set here (see cifar_lab.speed).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
