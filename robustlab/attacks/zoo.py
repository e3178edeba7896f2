"""ZOO: the Carlini-Wagner L2 attack with gradients estimated from confidence scores alone."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice, check_nonnegative, check_positive
from .._random import draw_device
from ..losses import is_fooled, margin_loss
from .oracle import Oracle, QueryLedger, as_oracle, log_scores, segments


def _zoo_probe(ledger, x0, xk, idx, live, i, h, c, kappa, targeted):
    """g(x) = ||x - x0||^2 + c f(x, t) at xk and at xk +- h e_i for coordinates i (A, b), the
    probes up and down along each, and whether xk is adversarial: 2b + 1 queries an example.

    At the box's faces the quotient is one-sided, over the part of [x - h, x + h] inside it.
    Only the `live` examples pay (the others ride along in the batch; ledger.ask).
    """
    a, b = i.shape
    rows, j = torch.arange(a, device=i.device)[:, None], torch.arange(b, device=i.device)
    up, down = (xk[rows, i] + h).clamp(max=1), (xk[rows, i] - h).clamp(min=0)
    probes = xk[:, None].repeat(1, 2 * b + 1, 1)  # xk, then xk + h e_i, then xk - h e_i
    probes[rows, 1 + j, i], probes[rows, 1 + b + j, i] = up, down
    y = ledger.y[idx].repeat_interleave(2 * b + 1)
    logp = log_scores(ledger.ask(probes.view(-1, *ledger.shape), idx, live))
    f = (-margin_loss(logp, y, targeted)).clamp_min(-kappa).view(a, -1)
    won = is_fooled(logp.view(a, 2 * b + 1, -1)[:, 0].argmax(1), ledger.y[idx], targeted)
    return ((probes.double() - x0[:, None]) ** 2).sum(2) + c * f, up, down, won


def _zoo_step(ledger, act, live, x0, xk, state, best, best_dist, solver, hyper, targeted,
              generator) -> None:
    """One coordinate step of the rows `act` (in place), kept only where `live`: probe b random
    coordinates, keep xk as the best if it is adversarial and closer, update the Adam moments
    (ZOO-ADAM) or take the Newton step (ZOO-Newton) on those coordinates, projected on the box."""
    (m, v, t), (b, h, c, kappa, lr, beta1, beta2) = state, hyper
    d = xk.shape[1]
    i = torch.rand(len(act), d, generator=generator,
                   device=draw_device(generator, xk.device)).argsort(1)[:, :b].to(xk.device)
    ai, keep = act[:, None], live[:, None]
    g, up, down, won = _zoo_probe(ledger, x0[act], xk[act], act, live, i, h, c, kappa, targeted)
    dist = (xk[act] - x0[act]).pow(2).sum(1)
    better = live & won & (dist < best_dist[act])
    best[act] = torch.where(better[:, None], xk[act], best[act])  # no boolean-index sync
    best_dist[act] = torch.where(better, dist, best_dist[act])
    grad = ((g[:, 1:b + 1] - g[:, b + 1:]) / (up - down)).to(xk.dtype)
    if solver == "adam":
        t_i = t[ai, i] + 1
        m_i = beta1 * m[ai, i] + (1 - beta1) * grad
        v_i = beta2 * v[ai, i] + (1 - beta2) * grad ** 2
        step = -lr * (m_i / (1 - beta1 ** t_i)) / ((v_i / (1 - beta2 ** t_i)).sqrt() + 1e-8)
        t[ai, i] = torch.where(keep, t_i, t[ai, i])
        m[ai, i] = torch.where(keep, m_i, m[ai, i])
        v[ai, i] = torch.where(keep, v_i, v[ai, i])
    else:  # the curvature formula needs both probes h away, so inside the box; else eta g
        curv = ((g[:, 1:b + 1] - 2 * g[:, :1] + g[:, b + 1:]) / h ** 2).to(xk.dtype)
        newton = (curv > 0) & (down > 0) & (up < 1)
        step = torch.where(newton, -lr * grad / curv, -lr * grad)
    xk[ai, i] = torch.where(keep, (xk[ai, i] + step).clamp(0, 1), xk[ai, i])


@torch.no_grad()
def zoo(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False,
        c: float = 1.0, kappa: float = 0.0, h: float = 1e-4, lr: float = 0.01,
        coords_per_step: int = 128, max_queries: int = 10_000, solver: str = "adam",
        beta1: float = 0.9, beta2: float = 0.999,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOO: the Carlini-Wagner L2 attack with gradients estimated from confidence scores.

    Chen, Zhang, Sharma, Yi and Hsieh, "ZOO: Zeroth order optimization based black-box attacks
    to deep neural networks without training substitute models" (AISec 2017). Minimises
        g(x) = ||x - x0||_2^2 + c f(x, t),  f(x, t) = max(max_{i!=t} log F(x)_i - log F(x)_t, -kappa)
    (untargeted: max(log F(x)_y - max_{i!=y} log F(x)_i, -kappa)) over x in [0, 1]^p by random
    coordinate descent, `coords_per_step` coordinates at a time, with eq. 6-7
        dg/dx_i ~ (g(x + h e_i) - g(x - h e_i)) / 2h,
        d2g/dx_i^2 ~ (g(x + h e_i) - 2 g(x) + g(x - h e_i)) / h^2,
    and the ZOO-ADAM (Algorithm 2) or ZOO-Newton (Algorithm 3) update, projected onto the box.
    Each step costs 2 * coords_per_step + 1 queries (x itself tells whether x is adversarial).
    Returns ``(x_adv, queries)``: the least-distorted adversarial iterate of each example, or x
    where none was found, and the queries (N,) long each example cost in this call.

    Arguments:
        c: weight of the attack loss (the paper tunes it by bisection; here it is fixed).
        kappa: confidence margin; h: finite-difference step; lr: the step size eta.
        solver: "adam" or "newton"; beta1, beta2: ADAM's moment decays.
        max_queries: budget per example; generator: draws the coordinates.
    """
    oracle = as_oracle(model, "scores", max_queries)
    x, y, _, _ = oracle.check_inputs(x, y)
    c, kappa = check_nonnegative(c, "c"), check_nonnegative(kappa, "kappa")
    for value, name in ((h, "h"), (lr, "lr")):
        check_positive(value, name)
    check_positive(coords_per_step, "coords_per_step", integer=True)
    check_choice(solver, ("adam", "newton"), "solver")
    n, d = len(x), x[0].numel()
    b = min(coords_per_step, d)
    if max_queries < 2 * b + 1:  # not one step could run: the call would silently do nothing
        raise ValueError(f"max_queries must be at least 2 * coords_per_step + 1 = {2 * b + 1} "
                         f"(one ZOO step), got {max_queries}")
    ledger = QueryLedger(oracle, x, y, max_queries)
    x0 = x.flatten(1)
    xk, m, v, t = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), torch.zeros_like(x0)
    best, best_dist = x0.clone(), torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    for part in segments(max_queries // (2 * b + 1)):  # the most steps an example can pay for
        # the one host sync of a segment: the rows still working, fixed until the next one
        if not len(act := ledger.active(best_dist > 0, 2 * b + 1)):
            break
        for _ in part:
            live = (best_dist[act] > 0) & (ledger.left()[act] >= 2 * b + 1)
            _zoo_step(ledger, act, live, x0, xk, (m, v, t), best, best_dist, solver,
                      (b, h, c, kappa, lr, beta1, beta2), targeted, generator)
    return ledger.result(best.view_as(x))
