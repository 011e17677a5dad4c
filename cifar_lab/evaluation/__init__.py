"""Scoring checkpoints: test-time augmentation, corrupted-image sets, reports."""

from cifar_lab.evaluation.scoring import Scorer, Scores, score_arrays
from cifar_lab.evaluation.tta import TestTimeAugmentation

__all__ = ["Scorer", "Scores", "TestTimeAugmentation", "score_arrays"]
