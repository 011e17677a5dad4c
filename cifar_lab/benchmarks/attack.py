"""Attack throughput and the cost of adversarial training steps (`bench=attack`).

- `pgd_img_per_s`: PGD-`pgd_steps` (cifar-lab's, L-inf `eps`) on test images, `batch_size` at
  a time, fp32, eval mode, as `predict attack=pgd` runs it;
- `autoattack_img_per_s`: AutoAttack standard (pyautoattack) on `autoattack_images` images
  (0: not timed). The network has fresh weights and each image is labelled with the network's
  own prediction, so every image is attacked. AutoAttack runs each later attack only on the
  images the earlier ones could not flip, so its speed depends on the network: a fresh one,
  whose nearly constant output few images can be pushed off, runs all four attacks on most
  images (close to the cost of a robust image); a checkpoint that is easy to fool is faster
  (`predict attack=autoattack` records the seconds of each budget);
- `train.<adv>_img_per_s` and `<adv>_step_cost`: the plain training loop of the train section
  (`benchmarks.train.PlainLoop`: forward, loss, backward, optimizer) with each `adv` option of
  `bench.attack.adv`, against the same loop without; cost = standard img/s / adversarial img/s,
  per interleaved pair of repeats (so both see the same load), the median.
"""

from __future__ import annotations

import statistics
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from cifar_lab.attacks.pgd import pgd
from cifar_lab.attacks.pixel_model import PixelModel
from cifar_lab.attacks.settings import AttackSettings
from cifar_lab.attacks.threat import ThreatModel
from cifar_lab.benchmarks.data import load_split
from cifar_lab.benchmarks.timing import figures, measure_rates
from cifar_lab.benchmarks.train import PlainLoop, memory_batches
from cifar_lab.build import build_module
from cifar_lab.data.transforms import augment_normalization


def attacked_model(cfg: DictConfig, device: torch.device) -> PixelModel:
    L.seed_everything(cfg.seed, verbose=False)
    mean, std = augment_normalization(cfg.augment, cfg.data.name)
    return PixelModel(build_module(cfg), mean, std).to(device).eval()


def attack_rates(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """img/s of PGD and AutoAttack standard on test images labelled by the model itself."""
    settings = cfg.bench.attack
    model = attacked_model(cfg, device)
    test = load_split(cfg.data, train=False, limit=settings.images)
    pixels = torch.from_numpy(test.images).permute(0, 3, 1, 2).float().div(255).contiguous()
    pixels = pixels.to(device)
    with torch.no_grad():
        labels = model(pixels).argmax(1)
    threat = ThreatModel("linf", float(settings.eps))
    batch = settings.batch_size

    def pgd_step() -> int:
        for start in range(0, len(pixels), batch):
            x, y = pixels[start : start + batch], labels[start : start + batch]
            pgd(model, x, y, threat, steps=settings.pgd_steps)
        return len(pixels)

    few = slice(0, settings.autoattack_images)
    autoattack = AttackSettings(name="autoattack", eps=threat.eps, batch_size=batch)

    def autoattack_step() -> int:
        autoattack.perturb(model, pixels[few], labels[few], threat)
        return len(pixels[few])

    timing = cfg.bench
    result = {
        "images": len(pixels),
        "eps": threat.eps,
        "pgd_steps": settings.pgd_steps,
        **figures(
            measure_rates(pgd_step, timing.warmup, timing.repeats, 1, device), "pgd_img_per_s"
        ),
        "autoattack_images": len(pixels[few]),
    }
    if len(pixels[few]):  # 0 images: AutoAttack not timed
        # no warm-up run: one costs as much as a repeat, and PGD has warmed the model up
        rates = measure_rates(autoattack_step, 0, timing.repeats, 1, device)
        result.update(figures(rates, "autoattack_img_per_s"))
    return result


def training_costs(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """img/s of the plain training loop without and with each `bench.attack.adv` option."""
    batches = memory_batches(cfg, device)
    loops = {"standard": PlainLoop(cfg, device, batches)}
    for name, adv_cfg in cfg.bench.attack.adv.items():
        variant = cfg.copy()
        with open_dict(variant):
            variant.adv = adv_cfg
        loops[name] = PlainLoop(variant, device, batches)
    for _ in range(cfg.bench.repeats):
        for loop in loops.values():
            loop.run_repeat()
    standard = loops["standard"].rates
    result: dict[str, Any] = {}
    for name, loop in loops.items():
        result.update(figures(loop.rates, f"{name}_img_per_s"))
        if name != "standard":
            ratios = [a / b for a, b in zip(standard, loop.rates, strict=True)]
            result[f"{name}_step_cost"] = statistics.median(ratios)
    return result


def bench_attack(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """`attack` section: attack throughput, then the training-step costs."""
    return {**attack_rates(cfg, device), "train": training_costs(cfg, device)}
