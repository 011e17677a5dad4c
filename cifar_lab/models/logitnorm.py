"""LogitNorm (Wei et al., 2022, "Mitigating Neural Network Overconfidence with Logit
Normalization", ICML): cross-entropy on the logits scaled to a constant norm, logits /
(tau * ||logits||_2). Plain cross-entropy keeps lowering its loss by growing the logits' norm,
which makes the softmax confident on any input; with the norm fixed only the logits' direction
is learned, so OOD inputs score a lower maximum softmax.

pytorch-ood ships this loss (`pytorch_ood.loss.LogitNorm`) for hard labels only; the
normalisation is written here so it composes with label smoothing and with the soft targets of
CutMix/MixUp, each applied to the normalised logits.
"""

from __future__ import annotations

import torch

from cifar_lab.errors import CifarLabError

EPS = 1e-7  # as the paper's code: added to the norm so an all-zero row does not divide by 0


def check_tau(tau: object) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
        raise CifarLabError(
            f"loss.logitnorm_tau={tau!r} is not a temperature; expected a number > 0, e.g. "
            f"loss.logitnorm_tau=0.04 (the paper's value for CIFAR)"
        )
    return float(tau)


def normalized_logits(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """`logits` / (tau * (||logits||_2 + eps)), row by row: what the loss is taken on."""
    norms = torch.linalg.vector_norm(logits, ord=2, dim=-1, keepdim=True) + EPS
    return logits / (norms * tau)
