"""The measurements behind `python -m cifar_lab.bench`: input pipelines, training steps, scoring."""
