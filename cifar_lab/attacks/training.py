"""Adversarial training objectives, one per `adv=` option, that the LightningModule's training
step calls instead of its plain loss:

- `fgsm_rs`: FGSM from a uniform random start with step alpha = 1.25 eps ("Fast is better than
  free", Wong et al., 2020; their CIFAR-10 setting is eps 8/255, alpha 10/255);
- `pgd`: PGD-AT, cross-entropy on PGD examples from a random start (Madry et al., 2018);
- `trades`: TRADES, cross-entropy on the clean images + beta x KL(f(x) || f(x')) with x' the
  KL-maximising PGD example from x + 0.001 N(0, 1) (Zhang et al., 2019).

Batches arrive normalised (the input pipeline normalises), so each objective maps them back to
[0, 1] pixels, attacks the network behind the same normalisation (`PixelModel`), and clips to
[0, 1]: the budget is in pixel space whatever the normalisation. Random-erasing boxes (noise in
normalised space) are clipped to [0, 1] with the rest. The examples are made with the training
weights in train mode (BatchNorm batch statistics, as in the papers' code), TRADES' in eval mode
(as in its code); the parameters get gradients only from the returned loss. Under bf16/fp16
autocast the attack steps run in autocast too (`pgd.perturb` scales the fp16 loss). Gradient
clipping, EMA, the optimizers and schedules act on the returned loss as on any other; CutMix/
MixUp and `loss=jsd` are refused (`check_combination`). `train/acc` is the accuracy on the
images the loss trains on: adversarial for fgsm_rs and pgd, clean for trades.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cifar_lab.attacks.pgd import cross_entropy_of, perturb
from cifar_lab.attacks.pixel_model import Normalization
from cifar_lab.attacks.threat import LINF_UNITS, ThreatModel, check_eps
from cifar_lab.errors import CifarLabError

METHODS = ("fgsm_rs", "pgd", "trades")


class AdversarialTraining:
    """The `adv` config: the method's name, budget `eps` and step `alpha` in 1/255 steps
    (L-inf), `steps` attack steps, `beta` (TRADES). `mean`/`std` are the run's normalisation."""

    def __init__(
        self,
        name: str,
        eps: float = 8.0,
        alpha: float = 10.0,
        steps: int = 1,
        beta: float = 6.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        if name not in METHODS:
            raise CifarLabError(f"adv.name={name!r} is unknown; expected one of {METHODS}")
        self.name = name
        self.threat = ThreatModel("linf", check_eps(eps, "linf", "adv.eps"))
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0):
            raise CifarLabError(
                f"adv.alpha={alpha!r} is invalid; expected a step size > 0 in 1/255 steps, "
                f"e.g. adv.alpha=10"
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CifarLabError(f"adv.steps={steps!r} is invalid; expected an integer >= 1")
        if name == "fgsm_rs" and steps != 1:
            raise CifarLabError(
                f"adv.steps={steps} with adv=fgsm_rs: FGSM takes one step; use adv=pgd for more"
            )
        if not (isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta >= 0):
            raise CifarLabError(f"adv.beta={beta!r} is invalid; expected a number >= 0, e.g. 6")
        self.alpha, self.steps, self.beta = alpha / LINF_UNITS, steps, float(beta)
        self.normalization = Normalization(mean, std)

    def __repr__(self) -> str:
        return (
            f"AdversarialTraining({self.name}, eps={self.threat.eps:g}/255, "
            f"alpha={self.alpha * LINF_UNITS:g}/255, steps={self.steps})"
        )

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of a normalised batch `images` for `model` (normalised input ->
        logits, in train mode)."""
        normalization = self.normalization.to(images.device)
        pixels = normalization.pixels(images.detach().float())

        def from_pixels(x: torch.Tensor) -> torch.Tensor:
            return model(normalization(x).to(images.dtype))

        if self.name == "trades":
            return self.trades(model, from_pixels, images, pixels, labels, label_smoothing)
        start = "uniform"
        adversarial = perturb(
            from_pixels, pixels, cross_entropy_of(labels), self.threat, self.alpha, self.steps,
            start,
        )  # fmt: skip
        logits = from_pixels(adversarial)
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits

    def trades(
        self,
        model: nn.Module,
        from_pixels: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TRADES: the clean loss plus beta x the KL divergence of the adversarial prediction
        from the clean one (batch mean), the adversarial example maximising that KL."""
        training = model.training
        model.eval()
        with torch.no_grad():
            clean_probs = from_pixels(pixels).float().softmax(1)

        def kl_from_clean(logits: torch.Tensor) -> torch.Tensor:
            log_probs = logits.float().log_softmax(1)
            return F.kl_div(log_probs, clean_probs, reduction="none").sum(1)

        adversarial = perturb(
            from_pixels, pixels, kl_from_clean, self.threat, self.alpha, self.steps, "normal"
        )
        model.train(training)
        logits = from_pixels(pixels)
        adversarial_log_probs = from_pixels(adversarial).float().log_softmax(1)
        robust = F.kl_div(adversarial_log_probs, logits.float().softmax(1), reduction="batchmean")
        natural = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        return natural + self.beta * robust, logits


def check_combination(
    adversary: AdversarialTraining | None, mixing: bool, views: int, loss: str = "cross_entropy"
) -> None:
    """One line for what adversarial training does not combine with."""
    if adversary is None:
        return
    if loss == "logitnorm":
        raise CifarLabError(
            f"adv={adversary.name} trains with cross-entropy on adversarial examples, so "
            f"loss=logitnorm would be ignored; use loss=default with adv, or adv=none"
        )
    if mixing:
        raise CifarLabError(
            f"adv={adversary.name} attacks each image against its own label, which CutMix/MixUp "
            f"replace with mixed soft targets; set augment.mix=null (or adv=none)"
        )
    if views > 1:
        raise CifarLabError(
            f"adv={adversary.name} trains on one view per image, not loss=jsd's three; use "
            f"loss=default (or adv=none)"
        )
