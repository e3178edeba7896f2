"""The first adversarial-example attack: box-constrained L-BFGS (Szegedy et al. 2013).

Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow and Fergus, "Intriguing properties of
neural networks" (ICLR 2014), Section 4.1; eq. 1 of the tutorial. The hard problem
min ||r||_2 s.t. argmax f(x + r) = t, x + r in [0, 1]^n is relaxed to a penalty and solved with
L-BFGS-B, the bounds of the box handled by the solver itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from threadpoolctl import threadpool_limits
from torch import nn

from .._checks import check_positive
from .._model import check_attack_inputs, frozen, logits_of
from ..losses import is_fooled
from ..norms import flat_norm, per_example


def lbfgs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = True,
          c: float = 1.0, search_steps: int = 10, max_iter: int = 100) -> torch.Tensor:
    """Szegedy et al.'s box-constrained L-BFGS attack: the smallest L2 change that reaches y.

    Szegedy et al. (2013), eq. 1 of the tutorial, relaxed as in their Section 4.1:
        minimise  c ||r||_2^2 + loss_f(x + r, t)   subject to  x + r in [0, 1]^n,
    loss_f the cross-entropy of the target t = y, solved with scipy's L-BFGS-B from r = 0 (the
    whole batch as one problem: it is a sum of independent terms), torch giving value and
    gradient. The paper writes c|r|; the squared norm used here is smooth at r = 0, where the
    solver starts, and its minimisers lie on the same distortion / loss trade-off as c varies.
    The paper's line search asks for the "minimum c" whose minimiser reaches t; with c on the
    distortion term the smallest distortion comes with the largest such c, which is what is
    searched for here, per example, by bisection on log c (c x 10 or / 10 until bracketed).

    Untargeted (targeted=False): loss_f = -log(1 - p_y(x + r)), the cross-entropy of "any class
    but y" (-CE(x + r, y) is unbounded below and drags r far), success once the label is not y.

    Arguments:
        c: the first constant tried. search_steps: L-BFGS-B solves of the line search.
        max_iter: L-BFGS-B iterations per solve.

    Returns x_adv; an example for which no c succeeded is returned unchanged.
    """
    x, y, _, _ = check_attack_inputs(model, x, y, norm="l2", norms=("l2",))
    check_positive(c, "c")
    check_positive(search_steps, "search_steps", integer=True)
    check_positive(max_iter, "max_iter", integer=True)
    const = torch.full((len(x),), float(c), dtype=x.dtype, device=x.device)
    lo, hi = torch.zeros_like(const), torch.full_like(const, math.inf)  # largest success, smallest failure
    best, best_d = x.clone(), torch.full_like(const, math.inf)
    with frozen(model):
        logits_of(model, x, y)  # checks y against the number of classes before any solve
        for _ in range(search_steps):
            xa = _solve(model, x, y, const, targeted, max_iter)
            with torch.no_grad():
                pred = logits_of(model, xa).argmax(1)
                ok = is_fooled(pred, y, targeted)
                d = flat_norm(xa - x, "l2")
                better = ok & (d < best_d)
                best = torch.where(per_example(better, x), xa, best)
                best_d = torch.where(better, d, best_d)
                lo = torch.where(ok, torch.maximum(lo, const), lo)
                hi = torch.where(ok, hi, torch.minimum(hi, const))
                const = torch.where((lo > 0) & (hi < math.inf), (lo * hi).sqrt(),
                                    torch.where(lo > 0, lo * 10, hi / 10))
    return best.detach()


def _solve(model, x, y, const, targeted, max_iter):
    """One L-BFGS-B solve of the penalised problem for every example at once."""
    c = per_example(const, x)

    def value_and_grad(v: np.ndarray):
        xa = torch.from_numpy(v).view(x.shape).to(x).requires_grad_(True)
        z = logits_of(model, xa)
        if targeted:
            loss_f = F.cross_entropy(z, y, reduction="none")
        else:  # -log(1 - p_y): the cross-entropy of "any class but y", bounded below unlike -CE
            loss_f = z.logsumexp(1) - z.scatter(1, y[:, None], -math.inf).logsumexp(1)
        loss = (c * (xa - x) ** 2).sum() + loss_f.sum()
        (g,) = torch.autograd.grad(loss, xa)
        return loss.item(), g.detach().cpu().double().numpy().ravel()

    v0 = x.detach().cpu().double().numpy().ravel()
    # L-BFGS-B makes many BLAS calls on short vectors: extra BLAS threads only spin (6x slower
    # on a busy 2-core machine), so the solver runs on one.
    with threadpool_limits(1, user_api="blas"):
        res = minimize(value_and_grad, v0, jac=True, method="L-BFGS-B",
                       bounds=Bounds(np.zeros_like(v0), np.ones_like(v0)),
                       options=dict(maxiter=max_iter))
    # the solver works in float64; clamp away its rounding past the bounds
    return torch.from_numpy(res.x).view(x.shape).to(x).clamp(0, 1)
