"""What `predict` scores beyond the test split and the `ood` set: the validation split a
temperature is fitted on, the OOD detection sets and the training images the feature detectors
fit on. Planned (and their files read) before anything is scored, then served by the same
`Trainer.predict` call as everything else; ODIN, which needs input gradients, has its own pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from cifar_lab.data.datamodule import CLEAN_SET, CIFARDataModule
from cifar_lab.data.detection_sets import DetectionSet
from cifar_lab.data.ood import ImageSet
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.detection import Outputs, evaluate_detection
from cifar_lab.evaluation.detectors import DetectorSettings, check_fit_labels
from cifar_lab.evaluation.odin import odin_scores
from cifar_lab.evaluation.scoring import Scores
from cifar_lab.evaluation.temperature import check_temperature
from cifar_lab.evaluation.uncertainty import evaluate_uncertainty

log = logging.getLogger(__name__)

# The training images scored beside the predict sets, named apart from any OOD set's name (a
# set named after a file or folder holds no "/").
FIT_SET, CALIBRATION_SET = "train/fit", "train/calibration"


@dataclass
class Extras:
    """The `calibration.temperature` to apply or the validation split to fit it on, and the OOD
    detectors with their sets and fit images."""

    temperature: float | None = None
    calibration_set: ImageSet | None = None
    detectors: DetectorSettings | None = None
    detection_sets: list[DetectionSet] = field(default_factory=list)
    fit_set: ImageSet | None = None

    @property
    def extra_sets(self) -> list[ImageSet]:
        """The sets scored after the datamodule's own predict sets."""
        return [s for s in (self.calibration_set, self.fit_set) if s is not None]

    def keep(self) -> dict[str, tuple[str, ...]]:
        """The outputs held whole per set (of every other set, the top-k only)."""
        keep: dict[str, tuple[str, ...]] = {CLEAN_SET: ("probs", "log_probs")}
        if self.calibration_set is not None:
            keep[CALIBRATION_SET] = ("log_probs",)
        if self.detectors is not None:
            features = ("features",) if self.detectors.fitted else ()
            keep[CLEAN_SET] += ("logits", *features)
            keep.update({s.name: ("logits", *features) for s in self.detection_sets})
            if self.fit_set is not None:
                keep[FIT_SET] = features
        return keep


def renamed(image_set: ImageSet, name: str) -> ImageSet:
    return dataclasses.replace(image_set, name=name)


def plan_calibration(temperature: Any, datamodule: CIFARDataModule, extras: Extras) -> None:
    """`calibration.temperature`: a number is applied; `fit` fits it on the validation split,
    `auto` too when the run held one out (else the log says why not); `none` skips it."""
    setting = check_temperature(temperature)
    if isinstance(setting, float):
        extras.temperature = setting
    elif setting == "fit" or (setting == "auto" and datamodule.hparams.val_fraction > 0):
        try:
            extras.calibration_set = renamed(datamodule.calibration_set(), CALIBRATION_SET)
        except CifarLabError as err:
            raise CifarLabError(
                f"temperature scaling needs the validation split of training: {err}; or give a "
                f"temperature (calibration.temperature=1.5) or skip it (calibration."
                f"temperature=none)"
            ) from err
    elif setting == "auto":
        log.info(
            "no temperature scaling: the model was trained with data.val_fraction=0, so no "
            "held-out training image is left to fit it on (calibration.temperature=<T> applies one)"
        )


def plan_detection(
    detect_cfg: Mapping[str, Any] | None,
    clean: bool,
    module: Any,
    datamodule: CIFARDataModule,
    extras: Extras,
) -> None:
    """The `detect` config's detectors, checked against the model and the sets."""
    detectors = DetectorSettings.from_config(detect_cfg)
    if detectors is None:
        return
    if not clean:
        raise CifarLabError(
            "OOD detection ranks the OOD sets against the clean test split, which clean=false "
            "skips; drop clean=false (or choose detect=none)"
        )
    if not datamodule.detection_sets:
        raise CifarLabError(
            f"detect.detectors={list(detectors.detectors)} but the detect config names no OOD "
            f"set; choose detect=standard or detect=noise, or add detect.sets=[...]"
        )
    extras.detectors, extras.detection_sets = detectors, list(datamodule.detection_sets)
    if detectors.fitted:
        classifier = module.net.classifier  # one line when the head has no last Linear layer
        if "vim" in detectors.detectors:
            detectors.vim_dimension(classifier.in_features)
        fit_set = datamodule.fit_set(detectors.fit_images, detectors.fit_seed)
        check_fit_labels(fit_set.labels, classifier.out_features, fit_set.num_images, detectors)
        extras.fit_set = renamed(fit_set, FIT_SET)


def plan_extras(
    module: Any,
    datamodule: CIFARDataModule,
    clean: bool,
    temperature: Any,
    detect_cfg: Mapping[str, Any] | None,
) -> Extras:
    """The run's `Extras`, and `module`'s predict step told what to return for them (class
    probabilities alone when the clean split is not scored)."""
    extras = Extras()
    if clean:
        plan_calibration(temperature, datamodule, extras)
    plan_detection(detect_cfg, clean, module, datamodule, extras)
    outputs = {name for kept in extras.keep().values() for name in kept} if clean else set()
    module.predict_outputs = tuple(outputs)
    return extras


def score_uncertainty(
    extras: Extras,
    clean_set: ImageSet,
    clean_scores: Scores,
    aside: Mapping[str, tuple[ImageSet, list[Scores]]],
    out_dir: Path,
    caption: str,
) -> dict[str, Any]:
    """Calibration (with the temperature given or fitted on the scored calibration set) and
    selective prediction of the clean split; nothing when its probabilities were not kept."""
    outputs = clean_scores.outputs
    if "log_probs" not in outputs:
        return {}
    calibration = None
    if CALIBRATION_SET in aside:
        (calibration_scores,) = aside[CALIBRATION_SET][1]
        calibration = (calibration_scores.outputs["log_probs"], extras.calibration_set.labels)
    return evaluate_uncertainty(
        outputs["probs"],
        outputs["log_probs"],
        clean_set.labels,
        extras.temperature,
        calibration,
        out_dir,
        caption,
    )


def scored_outputs(views: int) -> str:
    """What the detectors score, for metrics.json (`detect/outputs`)."""
    if views > 1:
        return (
            f"logits and penultimate features averaged over the {views} TTA views (odin: the "
            f"plain image); calibration and selective metrics: the TTA-averaged softmax"
        )
    return "logits and penultimate features of each image (one view, no TTA)"


def run_detection(
    module: Any,
    datamodule: CIFARDataModule,
    extras: Extras,
    clean: tuple[ImageSet, Scores],
    detection: Mapping[str, tuple[ImageSet, list[Scores]]],
    fit: Scores | None,
    make_odin_trainer: Callable[[list[Callback]], L.Trainer],
    out_dir: Path,
    caption: str,
) -> dict[str, Any]:
    """ODIN's pass when it is chosen, then every detector's metrics and reports."""
    detectors = extras.detectors
    clean_set, clean_scores = clean
    odin: dict[str, Any] = {}
    if detectors.uses_odin:
        sets = [clean_set, *(detection[s.name][0] for s in extras.detection_sets)]
        temperature, eps = detectors.odin_temperature, detectors.odin_eps
        odin = odin_scores(module, datamodule, sets, make_odin_trainer, temperature, eps)

    def outputs_of(name: str, scores: Scores) -> Outputs:
        return Outputs(scores.outputs["logits"], scores.outputs.get("features"), odin.get(name))

    sets = [(s, outputs_of(s.name, detection[s.name][1][0])) for s in extras.detection_sets]
    metrics = evaluate_detection(
        detectors,
        outputs_of(CLEAN_SET, clean_scores),
        clean_scores.correct(clean_set.labels),
        sets,
        None if fit is None else (fit.outputs["features"], extras.fit_set.labels),
        module.net.classifier if detectors.fitted else None,
        out_dir,
        caption,
        module.device,
    )
    views = module.tta.num_views if module.tta is not None else 1
    metrics["detect/detectors"] = list(detectors.detectors)
    metrics["detect/outputs"] = scored_outputs(views)
    return metrics
