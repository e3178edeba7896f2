"""Perceptually bounded PGD: an attack whose budget is an SSIM floor or a feature-distance
ceiling (`robustlab.perceptual`) instead of an L-p ball."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._checks import check_choice, check_in_range, check_nonnegative, check_positive
from .._model import check_attack_inputs, frozen, input_grad
from ..norms import per_example, steepest
from ..perceptual import FeatureDistance, ssim

__all__ = ["perceptual_pgd"]

Feasible = Callable[[torch.Tensor], torch.Tensor]  # candidate (N, ...) -> within bound (N,)


def _pull_back(x: torch.Tensor, cand: torch.Tensor, feasible: Feasible,
               bisections: int) -> torch.Tensor:
    """The point of the segment from x to `cand` farthest from x that `feasible` accepts.

    `cand` itself where it is feasible, else `bisections` halvings of t in x + t (cand - x),
    keeping the last accepted point (x itself, t = 0, when none is): every returned row was
    tested, so the constraint holds exactly, with no host read (a fixed number of halvings).
    """
    ok = feasible(cand)
    best = torch.where(per_example(ok, x), cand, x)
    lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(bisections):
        mid = (lo + hi) / 2
        trial = x + per_example(mid, x) * (cand - x)
        inside = feasible(trial) & ~ok
        best = torch.where(per_example(inside, x), trial, best)
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return best


def perceptual_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bound: str = "ssim",
                   min_ssim: float | None = None, max_distance: float | None = None,
                   network: nn.Module | None = None, layers: Sequence[str] | None = None,
                   weights: Sequence | None = None, steps: int = 20, alpha: float = 0.02,
                   norm: str = "linf", bisections: int = 10, window: int = 3, sigma: float = 1.0,
                   targeted: bool = False, loss: str = "ce") -> torch.Tensor:
    """PGD in [0, 1] whose every iterate keeps ssim(x, x') >= min_ssim or d(x, x') <= max_distance.

    In the spirit of Laidlaw, Singla and Feizi, "Perceptual adversarial robustness: defense
    against unseen threat models" (ICLR 2021), PPGD (Algorithm 1): ascend the loss inside a
    perceptual ball. Each step here is
        x' = clip_[0,1](x_t + alpha s(grad_x L(x_t, y))),   x_{t+1} = x + t* (x' - x),
    s the steepest-ascent direction of `norm` (sign for L-inf), t* in [0, 1] the largest the
    bound accepts, found by bisection (1 when x' is inside already). What differs: PPGD steps in
    the LPIPS geometry (through the Jacobian of the feature map) and projects onto the LPIPS
    ball with a few Newton steps; here the step is an ordinary pixel-space step and the
    projection is only back along the segment to x, so the output is feasible but not the
    metric projection, and SSIM (Wang et al. 2004) may serve as the bound too.

    Args:
        bound: "ssim" (with `min_ssim` in [-1, 1], `window` and `sigma` as `perceptual.ssim`)
            or "feature" (with `max_distance` >= 0, `network`, `layers` and `weights` as
            `perceptual.feature_distance`).
        steps, alpha, norm: PGD's iterations, step size and step norm ("linf" or "l2").
        bisections: halvings of the pull-back; more find a t* closer to the boundary.
        targeted, loss: as `attacks.pgd` (loss "ce", "margin" or "dlr").
    Returns x_adv (detached), each row inside the bound (tested at every step, no host sync
    per step); the model is left as found.
    """
    x, y, _, norm = check_attack_inputs(model, x, y, norm=norm)
    check_choice(bound, ("ssim", "feature"), "bound")
    check_positive(steps, "steps", integer=True)
    check_positive(alpha, "alpha")
    check_in_range(bisections, "bisections", 0, 64, integer=True)
    feasible = _feasible(x, bound, min_ssim, max_distance, network, layers, weights, window,
                         sigma)
    x_adv = x
    with frozen(model):
        for step in range(steps):
            g, _ = input_grad(model, x_adv, y, loss=loss, targeted=targeted, check=step == 0)
            cand = (x_adv + alpha * steepest(g, norm, x_adv)).clamp(0.0, 1.0)
            x_adv = _pull_back(x, cand, feasible, bisections)
    return x_adv.detach()


def _feasible(x, bound, min_ssim, max_distance, network, layers, weights, window,
              sigma) -> Feasible:
    """The bound as a per-row test of a candidate; its arguments checked here, once."""
    if bound == "ssim":
        if min_ssim is None or max_distance is not None:
            raise ValueError("bound='ssim' takes min_ssim (and not max_distance)")
        floor = check_in_range(min_ssim, "min_ssim", -1.0, 1.0)
        ssim(x[:1], x[:1], window=window, sigma=sigma)  # window and sigma checked now

        def inside(cand):
            with torch.no_grad():
                return ssim(x, cand, window=window, sigma=sigma) >= floor
        return inside
    if max_distance is None or min_ssim is not None:
        raise ValueError("bound='feature' takes max_distance (and not min_ssim)")
    ceiling = check_nonnegative(max_distance, "max_distance")
    if network is None or layers is None:
        raise ValueError("bound='feature' needs network and layers (see "
                         "robustlab.perceptual.feature_distance)")
    with torch.no_grad():  # x's features once; layers and weights checked against them now
        distance = FeatureDistance(network=network, layers=layers,
                                   weights=weights).from_reference(x)
        distance(x)

    def inside(cand):
        with torch.no_grad():
            return distance(cand) <= ceiling
    return inside
