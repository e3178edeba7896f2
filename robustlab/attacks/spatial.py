"""Spatially transformed adversarial examples (stAdv): move pixels instead of changing their values.

A flow field ``f`` of shape (N, 2, H, W) gives every output pixel a displacement in pixels:
``f[:, 0]`` is the horizontal one (du, along the width, to the right) and ``f[:, 1]`` the
vertical one (dv, along the height, downwards) - the (x, y) order of ``grid_sample``, so
``matplotlib.pyplot.quiver(f[0, 0], -f[0, 1])`` draws it. Output pixel i at (u_i, v_i) reads
the input at (u_i + du_i, v_i + dv_i) by bilinear interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_nonnegative, check_positive
from .._model import check_attack_inputs, frozen, logits_of
from ..losses import is_fooled, margin_loss
from ..norms import per_example

TINY = 1e-10  # keeps the gradient of sqrt finite where neighbouring flows agree


def _check_flow(x: torch.Tensor, flow: torch.Tensor) -> None:
    n, _, h, w = x.shape
    if flow.dim() != 4 or flow.shape[1:] != (2, h, w) or flow.shape[0] not in (1, n):
        raise ValueError(f"flow must have shape (N, 2, H, W) = ({n} or 1, 2, {h}, {w}), "
                         f"got {tuple(flow.shape)}")
    if h < 2 or w < 2:
        raise ValueError(f"x must be at least 2x2 pixels to warp, got {h}x{w}")


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of `x` (N, C, H, W) along the flow field `flow` (N or 1, 2, H, W).

    The tutorial's formula (Xiao et al. 2018, eq. 1):
        x_adv^(i) = sum_{q in N(u_i, v_i)} x^(q) (1 - |u_i - u_q|) (1 - |v_i - v_q|),
    with (u_i, v_i) = (u_adv^(i) + du_i, v_adv^(i) + dv_i) the sampled point and q its four
    neighbouring pixel centres. With ``align_corners=True`` grid_sample's -1 and +1 are the
    centres of the first and last pixel, so pixel coordinate c in [0, W-1] maps to
    2 c / (W - 1) - 1. A sampled point outside the image is clamped to its edge
    (``padding_mode="border"``), as in the authors' code, so no black border comes in.
    Differentiable in both `x` and `flow`.
    """
    _check_flow(x, flow)
    n, _, h, w = x.shape
    flow = flow.expand(n, 2, h, w)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                                torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    u = (cols + flow[:, 0]) * (2 / (w - 1)) - 1
    v = (rows + flow[:, 1]) * (2 / (h - 1)) - 1
    return F.grid_sample(x, torch.stack((u, v), -1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def flow_loss(flow: torch.Tensor) -> torch.Tensor:
    """The flow smoothness loss L_flow of each flow field in `flow` (N, 2, H, W) -> (N,).

    Xiao et al. 2018, eq. 4:  L_flow(f) = sum_p sum_{q in N(p)} sqrt(||du_p - du_q||^2 +
    ||dv_p - dv_q||^2), N(p) the (up to) four neighbours of p inside the image. Each pair of
    neighbours appears twice in the double sum. The small constant under the root keeps its
    gradient finite and is subtracted again, so a constant flow (a translation) costs exactly 0.
    """
    def edge(d: torch.Tensor) -> torch.Tensor:
        return ((d.square().sum(1) + TINY).sqrt() - TINY ** 0.5).flatten(1).sum(1)

    return 2 * (edge(flow[:, :, 1:, :] - flow[:, :, :-1, :]) + edge(flow[:, :, :, 1:] - flow[:, :, :, :-1]))


def stadv(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, tau: float = 0.05, kappa: float = 0.0,
          steps: int = 200, lr: float = 0.01, targeted: bool = False,
          return_flow: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """stAdv: the smoothest flow field whose bilinear warp of `x` is misclassified.

    Xiao, Zhu, Li, He, Liu and Song, "Spatially transformed adversarial examples" (ICLR 2018),
    eq. 2-4 of the paper and the tutorial's stAdv slide:
        f* = argmin_f L_adv(x, f) + tau L_flow(f),
        L_adv = max(Z_y - max_{j != y} Z_j, -kappa)        (untargeted, Z the logits of warp(x, f))
        L_adv = max(max_{j != t} Z_j - Z_t, -kappa)        (targeted at t = y)
    minimised over one flow per image from f = 0. The paper uses L-BFGS; here it is Adam, which
    treats the images of a batch independently and has no line search to tune. Each image keeps
    the flow of smallest L_flow among the iterates that fooled the model (the last iterate if
    none did), as in Carlini-Wagner's bookkeeping. The result lies in [0, 1] because bilinear
    weights are convex; it is not in any Lp ball, so there is no eps.

    Arguments:
        tau: weight of the flow loss; kappa: confidence margin (>= 0) of the C&W loss.
        steps, lr: Adam iterations and learning rate (in pixels of displacement).
        return_flow: also return the flow field (N, 2, H, W) to visualise it.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    tau, kappa = check_nonnegative(tau, "tau"), check_nonnegative(kappa, "kappa")
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    n = len(x)
    flow = torch.zeros(n, 2, *x.shape[2:], dtype=x.dtype, device=x.device, requires_grad=True)
    best = torch.zeros_like(flow, requires_grad=False)
    best_cost = torch.full((n,), torch.inf, dtype=x.dtype, device=x.device)
    opt = torch.optim.Adam([flow], lr=lr)
    x = x.detach()
    with frozen(model):
        for i in range(steps + 1):
            # labels checked against K on the first step only: the check reads back to the host
            z = logits_of(model, flow_warp(x, flow), y if i == 0 else None)
            # margin_loss is what an attacker ascends; stAdv minimises its negation, floored at -kappa
            adv = (-margin_loss(z, y, targeted)).clamp_min(-kappa)
            smooth = flow_loss(flow)
            with torch.no_grad():  # record before stepping, so the final iterate is scored too
                fooled = is_fooled(z.argmax(1), y, targeted)
                better = fooled & (smooth < best_cost)
                # torch.where, not best[better] = ...: a boolean index syncs with the GPU each step
                best = torch.where(per_example(better, flow), flow, best)
                best_cost = torch.where(better, smooth, best_cost)
            if i == steps:
                break
            opt.zero_grad(set_to_none=True)
            (adv + tau * smooth).sum().backward()
            opt.step()
    with torch.no_grad():
        flow = torch.where(best_cost.isfinite().view(-1, 1, 1, 1), best, flow.detach())
        x_adv = flow_warp(x, flow).clamp(0, 1)
    return (x_adv, flow) if return_flow else x_adv
