"""FGSM (Goodfellow et al., 2015) and PGD (Madry et al., 2018) on [0, 1] pixels, L-inf or L2.

`perturb` is the one loop that every attack of cifar-lab's own and every adversarial training
objective runs: a start inside the budget, then `steps` steps of size `alpha` along the sign
(L-inf) or the normalised direction (L2) of the objective's gradient, each projected back onto
the budget ball and then onto the [0, 1] image box. Clipping to the box after the projection can
only shrink the perturbation coordinate-wise, so every result keeps both its norm bound and
valid pixels.

Hand-written rather than taken from a library: torchattacks is not used (issue 17), and
pyautoattack has no PGD with another objective, which TRADES needs for its inner maximisation;
the loop is short, and runs unchanged inside Lightning's training step (on the live weights,
under autocast) and in `predict` (fp32, eval mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cifar_lab.attacks.threat import ThreatModel

Model = Callable[[torch.Tensor], torch.Tensor]  # [0, 1] pixels -> logits
Objective = Callable[[torch.Tensor], torch.Tensor]  # logits -> per-image loss to maximise
STARTS = ("zero", "uniform", "normal")
TRADES_START_STD = 0.001  # TRADES' start: x + 0.001 N(0, 1) (Zhang et al. 2019, their code)
# Under fp16 autocast an input gradient can underflow to zero, so the attack's loss is scaled
# (sign and direction do not change), as Wong et al. 2020 scaled it with apex amp.
FP16_LOSS_SCALE = 2.0**10


def per_image_norm(delta: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of `delta`, shaped to broadcast against it."""
    return delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.ndim - 1)))


def project(delta: torch.Tensor, norm: str, radius: float) -> torch.Tensor:
    """`delta` moved onto the ball of `radius` (L-inf: clipped; L2: shrunk)."""
    if norm == "linf":
        return delta.clamp(-radius, radius)
    return delta * (radius / per_image_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def into_box(pixels: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`delta` such that `pixels + delta` stays in [0, 1]."""
    return (pixels + delta).clamp(0, 1) - pixels


def start_delta(
    pixels: torch.Tensor,
    norm: str,
    radius: float,
    start: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The starting perturbation: zero, uniform in the ball (L2: uniform in its volume), or
    TRADES' small normal noise; inside the budget and the box."""
    shape, device = pixels.shape, generator.device if generator is not None else pixels.device
    if start == "zero" or radius == 0:
        return torch.zeros_like(pixels)
    if start == "normal":
        noise = TRADES_START_STD * torch.randn(shape, generator=generator, device=device)
    elif norm == "linf":
        noise = (2 * torch.rand(shape, generator=generator, device=device) - 1) * radius
    else:
        direction = torch.randn(shape, generator=generator, device=device)
        direction /= per_image_norm(direction).clamp_min(1e-12)
        fraction = torch.rand((len(pixels),), generator=generator, device=device)
        dims = pixels[0].numel()
        noise = direction * (radius * fraction ** (1 / dims)).view(-1, *([1] * (pixels.ndim - 1)))
    delta = project(noise.to(pixels.device, pixels.dtype), norm, radius)
    return into_box(pixels, delta)


def loss_scale(device_type: str) -> float:
    fp16 = torch.is_autocast_enabled(device_type) and (
        torch.get_autocast_dtype(device_type) == torch.float16
    )
    return FP16_LOSS_SCALE if fp16 else 1.0


def perturb(
    model: Model,
    pixels: torch.Tensor,
    objective: Objective,
    threat: ThreatModel,
    alpha: float,
    steps: int,
    start: str = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`pixels` moved to raise `objective(model(.))` within `threat`; `alpha` on the [0, 1]
    scale. The model's parameters get no gradient (only the perturbation does)."""
    pixels = pixels.detach()
    radius = threat.radius
    delta = start_delta(pixels, threat.norm, radius, start, generator)
    scale = loss_scale(pixels.device.type)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = objective(model(pixels + delta)).float().sum() * scale
            (gradient,) = torch.autograd.grad(loss, delta)
        if threat.norm == "linf":
            direction = gradient.sign()
        else:
            direction = gradient / per_image_norm(gradient).clamp_min(1e-12)
        delta = project(delta.detach() + alpha * direction, threat.norm, radius)
        delta = into_box(pixels, delta)
    return (pixels + delta).detach()


def cross_entropy_of(labels: torch.Tensor) -> Objective:
    """The per-image cross-entropy with `labels`: the untargeted attacks' objective."""
    return lambda logits: F.cross_entropy(logits.float(), labels, reduction="none")


def fgsm(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    alpha: float | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One gradient-sign step of `alpha` (default: the whole budget) from the image, or (with
    `random_start`) from a uniform point of the ball, as in Wong et al. 2020."""
    step = threat.radius if alpha is None else alpha
    start = "uniform" if random_start else "zero"
    return perturb(model, pixels, cross_entropy_of(labels), threat, step, 1, start, generator)


@torch.no_grad()
def misclassified(model: Model, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return model(pixels).argmax(1) != labels


def pgd(
    model: Model,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    steps: int,
    alpha: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD on the cross-entropy from uniform random starts; each restart attacks the images
    no earlier one misclassified. `alpha` defaults to 2.5 x budget / steps (Madry et al.)."""
    step = 2.5 * threat.radius / steps if alpha is None else alpha
    adversarial = pixels.detach().clone()
    left = torch.arange(len(pixels), device=pixels.device)
    for _ in range(restarts):
        found = perturb(
            model, pixels[left], cross_entropy_of(labels[left]), threat, step, steps, "uniform",
            generator,
        )  # fmt: skip
        adversarial[left] = found
        left = left[~misclassified(model, found, labels[left])]
        if not len(left):
            break
    return adversarial
