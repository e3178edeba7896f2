"""Verified training: the IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020) objectives for
`robustlab.train.fit`, and the differentiable margin bounds they train on.

Both minimise a mix of the clean cross-entropy and the cross-entropy of the *worst-case logits*
that bounds allow: with m_j a lower bound on the margin z_y - z_j over the eps-ball,

    CE(z~, y),  z~_y = 0, z~_j = -m_j,   which is >= max_{x' in ball} CE(f(x'), y),

since CE(z, y) = log sum_j exp(z_j - z_y) grows with every z_j - z_y <= -m_j. The bounds
(`interval_bounds`, `crown.back_substitute`) read the model's own weight tensors
(`read_network`), so they are differentiated here directly; `interval` and `crown` themselves
run under no_grad and are left as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_eps, check_in_range, check_labels, check_norm
from ._bounds import Ball, checked
from .crown import back_substitute, maxpool_relaxation, relu_relaxation
from .interval import interval_bounds
from .network import Affine, ReLU, read_network
from .types import margin_spec, other_classes


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
             beta: float) -> torch.Tensor:
    """Lower bounds (N, K-1) on z_y - z_j: beta * CROWN-IBP + (1 - beta) * IBP, differentiable."""
    net = read_network(model, x.shape[1:], like=x)
    ball, C = Ball(x, eps, norm), margin_spec(y, net.out_shape[0]).to(x.dtype)
    pre, box = interval_bounds(net, ball, C)
    if beta == 0:
        return box.lower
    # CROWN-IBP: IBP's bounds on every ReLU / max-pool input, CROWN's back-substitution from C
    relax, k = {}, 0
    for i, layer in enumerate(net.layers):
        if isinstance(layer, ReLU):
            relax[i] = relu_relaxation(pre[k].lower, pre[k].upper)
        elif not isinstance(layer, Affine):
            relax[i] = maxpool_relaxation(layer, pre[k].lower, pre[k].upper)
        k += not isinstance(layer, Affine)
    crown_ibp, _ = back_substitute(net.layers, C, ball, relax)
    return crown_ibp if beta == 1 else beta * crown_ibp + (1 - beta) * box.lower


def verified_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                     norm: str = "linf", beta: float = 0.0) -> torch.Tensor:
    """Lower bounds (N, K-1) on the margins z_y - z_j (j != y, in order) over the eps-ball,
    differentiable with respect to the model's parameters; all > 0 proves example n robust.

    beta = 0: IBP with the specification folded into the last layer (Gowal et al. 2018);
    beta = 1: CROWN-IBP, back-substitution from the margins through linear ReLU relaxations
    built on IBP's intermediate bounds (Zhang et al. 2020); in between: their mix
    beta * CROWN-IBP + (1 - beta) * IBP. The model is read as in eval mode (batch norm's running
    statistics); gradients flow when the caller has them on.

    Arguments:
        model: a chain that `read_network` reads; x: images (N, C, H, W) in [0, 1]; y: labels.
        eps >= 0; norm: "linf", "l2" or "l1"; beta in [0, 1].
    """
    x, eps, norm = checked(model, x, eps, norm)
    y = check_labels(y, x)
    beta = check_in_range(beta, "beta", 0.0, 1.0)
    return _margins(model, x, y, eps, norm, beta)


def worst_logits(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The worst-case logits (N, K) that margin lower bounds (N, K-1) allow: 0 for class y,
    -m_j for every other class j, so that CE(worst_logits, y) bounds the CE over the ball."""
    k = margins.shape[1] + 1
    return margins.new_zeros(len(margins), k).scatter(1, other_classes(y, k), -margins)


def linear_ramp(step: int, *, warmup: int, ramp: int) -> float:
    """The fraction of a schedule done at `step` (counted from 0): 0 for the first `warmup`
    steps, then rising linearly by 1 / ramp a step to 1 at step warmup + ramp (a jump to 1 at
    step `warmup` when ramp = 0): ``clip((step - warmup) / ramp, 0, 1)``."""
    if step < warmup:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, (step - warmup) / ramp)


def _check_schedule(warmup, ramp):
    for name, v in (("warmup", warmup), ("ramp", ramp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0 (optimiser steps), got {v!r}")


def _objective(eps, norm, warmup, ramp, kappa, beta, log_beta):
    """The shared loop of ibp and crown_ibp: kappa and beta are (start, end) pairs."""
    state = {"step": 0}

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        t = linear_ramp(state["step"], warmup=warmup, ramp=ramp)
        state["step"] += 1
        e = eps * t
        k = kappa[0] + (kappa[1] - kappa[0]) * t
        b = beta[0] + (beta[1] - beta[0]) * t
        x = x.detach()
        z = model(x)
        clean = F.cross_entropy(z, y)
        m = _margins(model, x, y, e, norm, b)
        robust = F.cross_entropy(worst_logits(m, y), y)
        loss = k * clean + (1 - k) * robust
        logs = {"eps": e, "kappa": k, "clean_loss": clean.detach(), "robust_loss": robust.detach(),
                "clean_acc": (z.detach().argmax(1) == y).float().mean(),
                "verified_acc": (m.detach().amin(1) > 0).float().mean()}
        if log_beta:
            logs["beta"] = b
        return loss, logs

    objective.state = state
    return objective


def ibp(*, eps: float, kappa_start: float = 1.0, kappa_end: float = 0.5, warmup: int = 0,
        ramp: int = 0, norm: str = "linf"):
    """IBP training, Gowal et al., "On the effectiveness of interval bound propagation for
    training verifiably robust models" (2018): an `Objective` for `fit`,

        kappa * CE(f(x), y) + (1 - kappa) * CE(z~, y),   z~ the worst-case logits of IBP,

    with the specification (the margins) folded into the last layer. Schedules, per optimiser
    step t (one per call; `objective.state["step"]`, settable to resume): eps_t = eps * r_t and
    kappa_t = kappa_start + (kappa_end - kappa_start) * r_t, r_t = linear_ramp(t, warmup, ramp):
    clean training for `warmup` steps, then both ramp linearly over `ramp` steps (the paper:
    kappa 1 -> 0.5, eps from 0 to its target). Logs: eps, kappa, clean_loss, robust_loss,
    clean_acc, verified_acc (the batch's fraction whose bounds prove it at the step's eps).
    """
    eps, norm = check_eps(eps), check_norm(norm, ("linf", "l2", "l1"))
    kappa = tuple(float(check_in_range(v, n, 0.0, 1.0)) for v, n in
                  ((kappa_start, "kappa_start"), (kappa_end, "kappa_end")))
    _check_schedule(warmup, ramp)
    return _objective(eps, norm, warmup, ramp, kappa, (0.0, 0.0), False)


def crown_ibp(*, eps: float, beta_start: float = 1.0, beta_end: float = 0.0,
              kappa_start: float = 1.0, kappa_end: float = 0.0, warmup: int = 0, ramp: int = 0,
              norm: str = "linf"):
    """CROWN-IBP training, Zhang et al., "Towards stable and efficient training of verifiably
    robust neural networks" (ICLR 2020): the IBP objective with the margin bound

        m = beta * m_CROWN-IBP + (1 - beta) * m_IBP,

    m_CROWN-IBP from CROWN's back-substitution over IBP's intermediate bounds (one backward
    pass from the K-1 margins; `verified_margins`). beta ramps from beta_start to beta_end
    (the paper: 1 -> 0, ending in pure IBP) alongside eps and kappa, with the same schedule as
    `ibp` (kappa from kappa_start to kappa_end; the paper compares kappa_end 0 and 0.5).
    Logs: those of `ibp` and beta.
    """
    eps, norm = check_eps(eps), check_norm(norm, ("linf", "l2", "l1"))
    vals = {n: float(check_in_range(v, n, 0.0, 1.0)) for v, n in
            ((kappa_start, "kappa_start"), (kappa_end, "kappa_end"), (beta_start, "beta_start"),
             (beta_end, "beta_end"))}
    _check_schedule(warmup, ramp)
    return _objective(eps, norm, warmup, ramp, (vals["kappa_start"], vals["kappa_end"]),
                      (vals["beta_start"], vals["beta_end"]), True)
