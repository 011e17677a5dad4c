"""`predict ... attack=<name>`: robust accuracy of a checkpoint on a class-balanced subset of its
test split, at every budget of `attack.eps`, with sanity flags and the files of `report`.

The attacked model is the whole network from [0, 1] pixels (`pixel_model`: normalisation, and
the resize of an upscaled run, inside), in eval mode and fp32, one view per image: test-time
augmentation is not attacked, so with `tta` set the robust accuracy is that of the single-view
model (said in a warning and in `adv/<attack>/tta`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar_lab.attacks import report
from cifar_lab.attacks.autoattack import library_warnings
from cifar_lab.attacks.flags import CurvePoint, largest_perturbation, sanity_flags
from cifar_lab.attacks.pgd import Model
from cifar_lab.attacks.pixel_model import check_gradients, pixel_model
from cifar_lab.attacks.settings import AttackSettings
from cifar_lab.data.datamodule import CLEAN_SET, CIFARDataModule
from cifar_lab.data.subsets import balanced_subset
from cifar_lab.errors import CifarLabError

log = logging.getLogger(__name__)


def attack_device(accelerator: str | None) -> torch.device:
    """The GPU when there is one and the predict trainer may use it, else the CPU."""
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass
class AttackPlan:
    """What one `attack=` run attacks: the model from pixels, the chosen test images (as [0, 1]
    NCHW tensors, with their indices in the split and labels) and the class names."""

    settings: AttackSettings
    model: nn.Module
    indices: np.ndarray
    pixels: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    device: torch.device
    tta: str | None = None

    @property
    def prefix(self) -> str:
        return f"adv/{self.settings.name}"


def plan_attack(
    settings: AttackSettings,
    module: nn.Module,
    datamodule: CIFARDataModule,
    accelerator: str | None = "auto",
    tta: str | None = None,
) -> AttackPlan:
    """The images and model of the run, checked before anything is scored: the subset fits the
    test split, the preprocessing is differentiable and the model has input gradients."""
    sets = {s.name: s for s in datamodule.load_predict_sets()}
    if CLEAN_SET not in sets:
        raise CifarLabError(
            f"attack={settings.name} attacks images of the clean test split, which clean=false "
            f"leaves out; drop clean=false"
        )
    test = sets[CLEAN_SET]
    labels = np.asarray(test.labels)
    indices = balanced_subset(labels, settings.n, settings.seed, key="attack.n")
    images = test.read(0, test.num_images)[indices]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
    model = pixel_model(module, datamodule.transforms).eval().float()
    check_gradients(model, pixels[:2])
    return AttackPlan(
        settings=settings,
        model=model,
        indices=indices,
        pixels=pixels,
        labels=torch.from_numpy(labels[indices].astype(np.int64)),
        classes=list(datamodule.classes),
        device=attack_device(accelerator),
        tta=None if tta in (None, "none") else tta,
    )


@torch.no_grad()
def predictions(model: Model, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [model(pixels[i : i + batch_size]).argmax(1) for i in range(0, len(pixels), batch_size)]
    )


def accuracy(correct: torch.Tensor) -> float:
    """The fraction right, as an exact count ratio (eps 0 must give the clean value exactly)."""
    return int(correct.sum()) / max(len(correct), 1)


def success_rate(clean_correct: torch.Tensor, adversarial_correct: torch.Tensor) -> float | None:
    """The fraction of the images classified right when clean that the attack made wrong."""
    right = int(clean_correct.sum())
    if not right:
        return None
    return int((clean_correct & ~adversarial_correct).sum()) / right


def run_attack(plan: AttackPlan, out_dir: Path) -> dict[str, Any]:
    """Attack the plan's images at every budget; metrics `adv/<attack>/...`, the flags, the
    files of `report`."""
    settings, prefix = plan.settings, plan.prefix
    # After Trainer.predict the module may be in train mode, on another device or dtype.
    model = plan.model.to(plan.device).float().eval()
    pixels, labels = plan.pixels.to(plan.device), plan.labels.to(plan.device)
    if plan.tta:
        log.warning(
            "%s attacks the single-view model: tta=%s is not part of the attacked model, so "
            "its robust accuracy is that of one view per image",
            prefix,
            plan.tta,
        )
    clean_pred = predictions(model, pixels, settings.batch_size)
    clean_correct = clean_pred == labels
    clean_acc = accuracy(clean_correct)
    comparison = settings.comparison_pgd()
    points, seconds, adversarial_preds = [], [], {}
    last_adversarial = pixels
    for threat in settings.threats:
        start = time.perf_counter()
        with library_warnings() as warned:
            adversarial = settings.perturb(model, pixels, labels, threat)
        seconds.append(time.perf_counter() - start)
        pred = predictions(model, adversarial, settings.batch_size)
        correct = pred == labels
        pgd_acc = None
        if comparison is not None:
            found = comparison.perturb(model, pixels, labels, threat)
            pgd_acc = accuracy(predictions(model, found, settings.batch_size) == labels)
        points.append(
            CurvePoint(
                threat=threat,
                acc=accuracy(correct),
                success_rate=success_rate(clean_correct, correct),
                max_perturbation=largest_perturbation(adversarial, pixels, threat),
                pgd_acc=pgd_acc,
                library_warnings=tuple(warned),
            )
        )
        adversarial_preds[threat.label] = pred.cpu().numpy()
        last_adversarial = adversarial
        log.info(
            "%s eps %s (%s): acc %.4f (clean %.4f), success rate %s%s, %.1f s",
            prefix,
            threat.label,
            threat.norm,
            points[-1].acc,
            clean_acc,
            "-" if points[-1].success_rate is None else f"{points[-1].success_rate:.4f}",
            "" if pgd_acc is None else f", {comparison.title} acc {pgd_acc:.4f}",
            seconds[-1],
        )
    pgd_title = comparison.title if comparison else "PGD"
    flags = sanity_flags(points, clean_acc, pgd_title)
    for flag in flags:
        log.warning("%s flag: %s", prefix, flag)
    write_files(plan, out_dir, points, seconds, clean_pred, adversarial_preds, last_adversarial)
    metrics: dict[str, Any] = {
        f"{prefix}/n": len(plan.indices),
        f"{prefix}/norm": settings.norm,
        f"{prefix}/clean_acc": clean_acc,
    }
    for point, spent in zip(points, seconds, strict=True):
        at = f"{prefix}/eps{point.threat.label}"
        metrics[f"{at}/acc"] = point.acc
        metrics[f"{at}/success_rate"] = point.success_rate
        metrics[f"{at}/max_perturbation"] = point.max_perturbation
        metrics[f"{at}/seconds"] = spent
        if point.pgd_acc is not None:
            metrics[f"{at}/pgd_acc"] = point.pgd_acc
    metrics[f"{prefix}/flags"] = flags
    if plan.tta:
        metrics[f"{prefix}/tta"] = f"not attacked (single view; tta={plan.tta})"
    return metrics


def write_files(
    plan: AttackPlan,
    out_dir: Path,
    points: list[CurvePoint],
    seconds: list[float],
    clean_pred: torch.Tensor,
    adversarial_preds: dict[str, np.ndarray],
    last_adversarial: torch.Tensor,
) -> None:
    """The attacked images' predictions, the curve, and the example grid at the last budget."""
    name, settings = plan.settings.name, plan.settings
    labels = plan.labels.numpy()
    report.write_images(
        report.images_file(out_dir, name),
        plan.indices,
        labels,
        clean_pred.cpu().numpy(),
        adversarial_preds,
    )
    report.write_curve(report.curve_file(out_dir, name), points, seconds)
    comparison = settings.comparison_pgd()
    report.plot_curve(
        report.curve_file(out_dir, name, "png"),
        points,
        accuracy(clean_pred.cpu() == plan.labels),
        settings.title,
        comparison.title if comparison else "PGD",
    )
    count = min(settings.examples, len(plan.pixels))
    if count:
        threat = points[-1].threat
        names = dict(enumerate(plan.classes))
        titles = [
            f"{names.get(int(y), y)}\n-> {names.get(int(p), p)}"
            for y, p in zip(labels[:count], adversarial_preds[threat.label][:count], strict=True)
        ]
        report.plot_examples(
            report.examples_file(out_dir, name),
            plan.pixels[:count],
            last_adversarial[:count].cpu(),
            titles,
            f"{settings.title}, {threat.norm} eps {threat.label}: label -> adversarial prediction",
        )
