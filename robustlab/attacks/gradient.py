"""Gradient attacks under an Lp budget: FGSM / FGM and BIM / PGD.

Each function is the formula on the slide: one signed (or normalised) gradient step for FGSM,
repeated and projected back onto the eps-ball for PGD.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive, check_radii
from .._model import check_attack_inputs, frozen, input_grad
from ..norms import clip_box, project, radius, random_in_ball, steepest


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         targeted: bool = False) -> torch.Tensor:
    """Fast Gradient Sign Method (L-inf) and Fast Gradient Method (L2).

    Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial examples" (ICLR
    2015), eq. 2 of the tutorial: x' = x + eps * sign(grad_x J(theta, x, y)). With norm="l2"
    the step is eps * g / ||g||_2 (Miyato et al. 2016). Targeted: a step *down* the loss of
    the target class y. The result is clipped to [0, 1].
    """
    x, y, eps, norm = check_attack_inputs(model, x, y, eps=eps, norm=norm)
    with frozen(model):
        g, _ = input_grad(model, x, y, targeted=targeted)
    return (x + clip_box(x, eps * steepest(g, norm))).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | torch.Tensor,
        alpha: float | torch.Tensor, steps: int, norm: str = "linf", random_start: bool = True,
        targeted: bool = False, loss: str = "ce", l1_top: float = 0.05,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected Gradient Descent (BIM without random start) under L-inf, L2 or L1.

    Madry et al., "Towards deep learning models resistant to adversarial attacks" (ICLR 2018);
    Kurakin, Goodfellow and Bengio (2016) for BIM. Repeats
        x_{t+1} = Proj_{B(x, eps) cap [0,1]^n}(x_t + alpha * s(grad_x L(x_t, y)))
    with s the steepest-ascent direction of the norm (sign for L-inf, normalised gradient for
    L2, the sparse SLIDE direction of Tramer & Boneh 2019 for L1), from a uniform random point
    of the ball when `random_start`. Returns the last iterate, as Madry et al. do.

    Arguments:
        eps: radius of the ball; alpha: step size; steps: number of iterations. eps and alpha
            may each be a tensor (N,), one value per example (evaluate.pgd_distortion bisects
            each example's radius in one batch).
        loss: "ce" (cross-entropy), "margin" (Carlini-Wagner) or "dlr" (Croce & Hein).
        l1_top: for norm="l1", the fraction of coordinates moved per step.
        generator: seeds the random start.
    """
    x, y, _, norm = check_attack_inputs(model, x, y, norm=norm, norms=("linf", "l2", "l1"))
    eps = check_radii(eps, x)
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 1:
        alpha = check_radii(alpha, x, "alpha")
        if not bool((alpha > 0).all()):
            raise ValueError("alpha must hold step sizes > 0")
    else:
        check_positive(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    alpha_x = radius(alpha, x)  # a number, or (N, 1, ..., 1) per example
    delta = torch.zeros_like(x)
    if random_start:
        delta = clip_box(x, random_in_ball(x, eps, norm, generator))
    with frozen(model):
        for step in range(steps):
            x_adv = x + delta
            g, _ = input_grad(model, x_adv, y, loss=loss, targeted=targeted, check=step == 0)
            delta = delta + alpha_x * steepest(g, norm, x_adv, l1_top)
            delta = clip_box(x, project(delta, eps, norm))
    return (x + delta).detach()
