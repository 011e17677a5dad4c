"""Post-hoc OOD detectors (no retraining), each pytorch-ood's implementation; scores follow
pytorch-ood: higher = more likely OOD.

- `msp` (Hendrycks & Gimpel, 2017): -max softmax; `maxlogit` (Hendrycks et al., 2022): -max
  logit; `energy` (Liu et al., 2020): -logsumexp of the logits. From the logits.
- `odin` (Liang et al., 2018): -max softmax at temperature T of the input moved eps against the
  gradient of the predicted class's loss; needs input gradients, so it runs as its own pass over
  the images (`cifar_lab.evaluation.odin`).
- `mahalanobis` (Lee et al., 2018): the distance to the closest class mean under one shared
  covariance; `knn` (Sun et al., 2022): the distance of the L2-normalised feature to its k-th
  nearest training feature; `vim` (Wang et al., 2022): the norm of the feature's residual off
  the principal subspace of the training features (scaled into a "virtual logit") minus the
  energy; `react_energy` (Sun et al., 2021): the energy of the logits after clipping the features
  at their p-th percentile over the training images. These four fit on the penultimate features
  (`ClassifierNet.features`: the input of the last Linear layer) of training images, once per run.

Defaults (`conf/detect/standard.yaml`) are the papers' CIFAR settings: ODIN T=1000, eps=0.0014
in pixel units (the gradient sign is divided by the normalisation std, as the paper's code and
OpenOOD do); KNN k=50 (its CIFAR-10 setting); ViM's principal dimension half the feature width
(OpenOOD's 256 of ResNet-18's 512); ReAct's 90th percentile.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pytorch_ood.detector import (
    KNN,
    EnergyBased,
    Mahalanobis,
    MaxLogit,
    MaxSoftmax,
    ReAct,
    ViM,
)
from torch import nn

from cifar_lab.errors import CifarLabError

log = logging.getLogger(__name__)

DETECTORS = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "knn", "vim", "react_energy")
FITTED = ("mahalanobis", "knn", "vim", "react_energy")  # fit on training features
SCORE_CHUNK = 4096  # feature rows scored at once (Mahalanobis holds chunk x classes x D)

LOGIT_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "msp": MaxSoftmax.score,
    "maxlogit": MaxLogit.score,
    "energy": EnergyBased.score,
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_names(names: Any) -> tuple[str, ...]:
    """`detect.detectors` as a tuple of known, distinct names; one line otherwise."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise CifarLabError(
            f"detect.detectors={names!r} is not a list; write e.g. detect.detectors=[msp,energy]"
        )
    for name in names:
        if name not in DETECTORS:
            close = difflib.get_close_matches(str(name), DETECTORS, n=1)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise CifarLabError(
                f"detect.detectors has {name!r}, not a detector{guess}; expected some of "
                f"{', '.join(DETECTORS)}"
            )
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise CifarLabError(
            f"detect.detectors lists {', '.join(repeated)} more than once; name each detector once"
        )
    return tuple(str(name) for name in names)


def _setting(cfg: Mapping[str, Any], group: str, key: str, default: Any) -> Any:
    section = cfg.get(group) or {}
    return section.get(key, default)


@dataclass(frozen=True)
class DetectorSettings:
    """The detector keys of the `detect` config, checked."""

    detectors: tuple[str, ...]
    fit_images: int = 10_000
    fit_seed: int = 0
    odin_temperature: float = 1000.0
    odin_eps: float = 0.0014
    knn_k: int = 50
    vim_dim: int | None = None
    react_percentile: float = 90.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DetectorSettings | None:
        """None when the config names no detector (`detect=none`)."""
        cfg = cfg or {}
        names = check_names(cfg.get("detectors") or [])
        if not names:
            return None
        settings = cls(
            detectors=names,
            fit_images=cfg.get("fit_images", cls.fit_images),
            fit_seed=cfg.get("fit_seed", cls.fit_seed),
            odin_temperature=_setting(cfg, "odin", "temperature", cls.odin_temperature),
            odin_eps=_setting(cfg, "odin", "eps", cls.odin_eps),
            knn_k=_setting(cfg, "knn", "k", cls.knn_k),
            vim_dim=_setting(cfg, "vim", "dim", cls.vim_dim),
            react_percentile=_setting(cfg, "react", "percentile", cls.react_percentile),
        )
        settings.check()
        return settings

    def check(self) -> None:
        checks = [
            ("fit_images", self.fit_images, is_int(self.fit_images) and self.fit_images >= 1,
             "an integer >= 1, e.g. detect.fit_images=10000"),
            ("fit_seed", self.fit_seed, is_int(self.fit_seed), "an integer"),
            ("odin.temperature", self.odin_temperature,
             is_number(self.odin_temperature) and self.odin_temperature > 0,
             "a number > 0 (the paper's 1000)"),
            ("odin.eps", self.odin_eps, is_number(self.odin_eps) and self.odin_eps >= 0,
             "a number >= 0 (the paper's 0.0014)"),
            ("knn.k", self.knn_k, is_int(self.knn_k) and self.knn_k >= 1,
             "an integer >= 1 (the paper's 50 for CIFAR-10)"),
            ("vim.dim", self.vim_dim,
             self.vim_dim is None or (is_int(self.vim_dim) and self.vim_dim >= 1),
             "null (half the feature width) or an integer >= 1"),
            ("react.percentile", self.react_percentile,
             is_number(self.react_percentile) and 0 < self.react_percentile <= 100,
             "a percentile in (0, 100] (the paper's 90)"),
        ]  # fmt: skip
        for key, value, ok, expected in checks:
            if not ok:
                raise CifarLabError(f"detect.{key}={value!r} is invalid; expected {expected}")

    @property
    def fitted(self) -> tuple[str, ...]:
        """The chosen detectors that fit on training features."""
        return tuple(name for name in self.detectors if name in FITTED)

    @property
    def uses_odin(self) -> bool:
        return "odin" in self.detectors

    def vim_dimension(self, width: int) -> int:
        """ViM's principal-subspace dimension for features of `width`; one line if none fits."""
        dim = width // 2 if self.vim_dim is None else self.vim_dim
        if not 1 <= dim < width:
            raise CifarLabError(
                f"detect.vim.dim={dim} does not fit the model's {width} penultimate features; "
                f"expected 1 <= dim < {width} (null = half the width)"
            )
        return dim


def check_fit_labels(
    labels: np.ndarray, num_classes: int, n_fit: int, settings: DetectorSettings
) -> None:
    """Mahalanobis needs every class among the fit images and KNN at least k of them."""
    if "mahalanobis" in settings.detectors:
        missing = sorted(set(range(num_classes)) - set(np.unique(labels).tolist()))
        if missing:
            raise CifarLabError(
                f"the {n_fit} training images the detectors fit on hold no image of class(es) "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; mahalanobis needs a mean per "
                f"class: raise detect.fit_images (now {settings.fit_images})"
            )
    if "knn" in settings.detectors and settings.knn_k > n_fit:
        raise CifarLabError(
            f"detect.knn.k={settings.knn_k} is more than the {n_fit} training images it fits on; "
            f"lower detect.knn.k or raise detect.fit_images"
        )


def fit_detectors(
    settings: DetectorSettings,
    features: np.ndarray,
    labels: np.ndarray,
    classifier: nn.Linear,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Any], dict[str, float]]:
    """The chosen feature detectors fitted on (N, D) training `features` and their `labels`,
    on `device` (KNN: scikit-learn, on the CPU); plus each one's fitting time in seconds."""
    check_fit_labels(labels, classifier.out_features, len(labels), settings)
    z = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    weight, bias = classifier.weight.detach().float(), classifier.bias.detach().float()
    makers: dict[str, Callable[[], Any]] = {
        "mahalanobis": lambda: Mahalanobis(None).to(device).fit_features(z, y),
        "knn": lambda: KNN(None, k=settings.knn_k).fit_features(z.cpu(), y.cpu()),
        "vim": lambda: ViM(
            None, d=settings.vim_dimension(z.shape[1]), w=weight.to(device), b=bias.to(device)
        ).fit_features(z, y),
        "react_energy": lambda: ReAct(
            backbone=None,
            head=classifier,
            percentile=settings.react_percentile / 100,  # pytorch-ood takes a fraction
            detector=EnergyBased.score,
        ).fit_feature_maps(z, y),
    }
    fitted, seconds = {}, {}
    for name in settings.fitted:
        start = time.perf_counter()
        fitted[name] = makers[name]()
        seconds[name] = time.perf_counter() - start
    return fitted, seconds


def _in_chunks(score: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> np.ndarray:
    parts = [score(rows[i : i + SCORE_CHUNK]) for i in range(0, len(rows), SCORE_CHUNK)]
    if not parts:
        return np.zeros(0)
    return torch.cat([part.detach().double().cpu() for part in parts]).numpy()


@torch.no_grad()
def score_outputs(
    settings: DetectorSettings,
    fitted: Mapping[str, Any],
    logits: np.ndarray,
    features: np.ndarray | None,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Each chosen detector's scores (float64, higher = more OOD) of one set's outputs; ODIN's
    come from its own pass."""
    logits_t = torch.as_tensor(logits, dtype=torch.float32, device=device)
    features_t = (
        None if features is None else torch.as_tensor(features, dtype=torch.float32, device=device)
    )
    scores: dict[str, np.ndarray] = {}
    for name in settings.detectors:
        if name in LOGIT_SCORES:
            scores[name] = _in_chunks(LOGIT_SCORES[name], logits_t)
        elif name == "react_energy":
            scores[name] = _in_chunks(fitted[name].predict_feature_maps, features_t)
        elif name in FITTED:
            scores[name] = _in_chunks(fitted[name].predict_features, features_t)
    return scores
