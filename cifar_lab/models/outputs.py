"""What the predict step returns beyond class probabilities: what calibration and OOD detection
need, each averaged over the test-time views (one view without TTA).

- `probs`: the softmax, averaged over the views: the prediction every other metric scores;
- `log_probs`: the log of that average, computed in log space (logsumexp over the views' log
  softmax), so the NLL of an over-confident model is not capped where a float32 probability
  underflows to 0; temperature scaling rescales these;
- `logits`: the views' mean logits (MSP, MaxLogit, Energy score them);
- `features`: the views' mean penultimate features (`ClassifierNet.features`, the input of the
  last Linear layer). That layer is linear, so the mean logits are exactly the last layer applied
  to the mean features: logit and feature detectors score one and the same averaged image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable

import torch
from torch import nn

from cifar_lab.errors import CifarLabError

PREDICT_OUTPUTS = ("probs", "log_probs", "logits", "features")
PROBS_ONLY = ("probs",)


def check_outputs(outputs: Collection[str]) -> tuple[str, ...]:
    """`outputs` in `PREDICT_OUTPUTS` order; `probs` always among them (top-k needs it)."""
    unknown = sorted(set(outputs) - set(PREDICT_OUTPUTS))
    if unknown:
        raise ValueError(f"unknown predict outputs {unknown}; expected some of {PREDICT_OUTPUTS}")
    return tuple(name for name in PREDICT_OUTPUTS if name in outputs or name == "probs")


def view_outputs(net: nn.Module, view: torch.Tensor, wanted: Collection[str]) -> dict:
    """The `wanted` outputs of one view (float32); the features only when asked for."""
    if "features" in wanted:
        features = net.features(view)
        logits = net.classifier(features).float()
    else:
        features, logits = None, net(view).float()
    found = {"logits": logits, "features": None if features is None else features.float()}
    if "probs" in wanted:
        found["probs"] = logits.softmax(dim=1)
    if "log_probs" in wanted:
        found["log_probs"] = logits.log_softmax(dim=1)
    return {name: found[name] for name in wanted}


def mean_over_views(
    net: nn.Module,
    views: Iterable[torch.Tensor],
    wanted: Collection[str],
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda view: view,
) -> dict[str, torch.Tensor]:
    """Each `wanted` output averaged over `views` (each view one forward pass of the batch);
    `log_probs` is the log of the mean probability (logsumexp - log(views))."""
    wanted = check_outputs(wanted)
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for view in views:
        for name, value in view_outputs(net, prepare(view), wanted).items():
            if name not in totals:
                totals[name] = value
            elif name == "log_probs":
                totals[name] = torch.logaddexp(totals[name], value)
            else:
                totals[name] = totals[name] + value
        count += 1
    if count == 0:
        raise CifarLabError("no test-time view to score; the TTA settings produce none")
    return {
        name: total - math.log(count) if name == "log_probs" else total / count
        for name, total in totals.items()
    }
