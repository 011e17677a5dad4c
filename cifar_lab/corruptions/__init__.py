"""The 19 common corruptions of CIFAR-10/100-C (Hendrycks & Dietterich, 2019, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR) on batches of uint8 images.

    from cifar_lab.corruptions import CORRUPTIONS, corruption_rng
    foggy = CORRUPTIONS["fog"](images, severity=3, rng=corruption_rng(0, "fog", 3))

Pure numpy/SciPy/OpenCV/Pillow, with the constants of the authors' published CIFAR generator.
"""

from cifar_lab.corruptions.table import (
    BENCHMARK,
    CORRUPTIONS,
    EXTRA,
    SEVERITIES,
    Corruption,
    corruption_rng,
    describe,
    get_corruptions,
)

__all__ = [
    "BENCHMARK",
    "CORRUPTIONS",
    "EXTRA",
    "SEVERITIES",
    "Corruption",
    "corruption_rng",
    "describe",
    "get_corruptions",
]
