"""HopSkipJumpAttack: a minimum-distortion attack that sees only the top-1 label."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_images, check_positive
from .._random import draw_device
from ..norms import flat_norm, per_example
from .oracle import Oracle, QueryLedger, as_oracle


def _toward(x: torch.Tensor, a: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """The point at `alpha` from x toward a: the blend (1-alpha) x + alpha a (L2), or a clipped
    to the L-inf box of radius alpha around x."""
    alpha = per_example(alpha, x)
    if norm == "l2":
        return x + alpha * (a - x)
    return torch.minimum(torch.maximum(a, x - alpha), x + alpha)


def _bisect(ledger, x, a, idx, theta, norm, targeted) -> torch.Tensor:
    """Binary search (paper Algorithm 1) between x and the adversarial a, per example, on the
    blend factor in [0, 1] (L2) down to theta, or on the radius in [0, ||a - x||_inf] (L-inf)
    down to theta min(1, ||a - x||_inf); returns the adversarial end."""
    high = flat_norm(a - x, "linf") if norm == "linf" else torch.ones(len(x), dtype=x.dtype, device=x.device)
    tol, low = theta * high.clamp(max=1), torch.zeros_like(high)
    while (go := ((high - low > tol) & (ledger.left()[idx] >= 1))).any():
        mid = (high + low) / 2
        ok = ledger.fooled(_toward(x[go], a[go], mid[go], norm), idx[go], targeted)
        high[go], low[go] = torch.where(ok, mid[go], high[go]), torch.where(ok, low[go], mid[go])
    return _toward(x, a, high, norm)


def _hsj_start(ledger, x, targeted, x_init, generator):
    """An adversarial point per example, and whether one was found: x itself when already
    adversarial, else x_init (targeted) or uniform noise, pulled toward x by bisection."""
    adv, found = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if len(idx := (ledger.left() >= 1).nonzero()[:, 0]):  # a spent Oracle may leave some nothing
        found[idx] = ledger.fooled(x[idx], idx, targeted)
    if x_init is not None:
        todo = (~found & (ledger.left() >= 1)).nonzero()[:, 0]
        if len(todo) and not ledger.fooled(x_init[todo], todo, targeted).all():
            raise ValueError("x_init must be adversarial: the model must give it the target label "
                             "(targeted) or a wrong label")
        adv[todo], found[todo] = x_init[todo], True
        return adv, found
    noise, from_noise = x.clone(), ~found
    for _ in range(10_000):
        todo = (~found & (ledger.left() >= 1)).nonzero()[:, 0]
        if not len(todo):
            break
        cand = torch.rand(x[todo].shape, generator=generator, device=draw_device(generator, x.device)).to(x)
        ok = ledger.fooled(cand, todo, targeted)
        noise[todo[ok]], found[todo[ok]] = cand[ok], True
    k = (from_noise & found).nonzero()[:, 0]
    adv[k] = _bisect(ledger, x[k], noise[k], k, 1e-3, "l2", targeted)
    return adv, found


def _boundary_normal(ledger, b, idx, delta, evals, norm, targeted, generator) -> torch.Tensor:
    """Monte-Carlo estimate of the unit normal of the boundary at b (paper eq. 9 with the
    baseline of eq. 16): mean of (phi(b + delta u) - mean phi) u over random unit u."""
    shape = (len(b), evals, *b.shape[1:])
    dev = draw_device(generator, b.device)  # n x evals x d: too big to draw on the CPU and copy
    if norm == "l2":
        u = torch.randn(shape, generator=generator, device=dev)
    else:
        u = torch.rand(shape, generator=generator, device=dev) * 2 - 1
    u = u.to(b) / flat_norm(u.flatten(0, 1).to(b), "l2").view(len(b), evals, *[1] * (b.dim() - 1))
    delta = delta.view(-1, 1, *[1] * (b.dim() - 1))
    probes = (b[:, None] + delta * u).clamp(0, 1)
    u = (probes - b[:, None]) / delta  # the direction actually taken, inside the box
    phi = ledger.fooled(probes.flatten(0, 1), idx.repeat_interleave(evals), targeted)
    phi = phi.view(len(b), evals).to(b.dtype) * 2 - 1
    mean = phi.mean(1, keepdim=True)
    phi = torch.where(mean.abs() == 1, phi, phi - mean)  # no baseline when all agree
    g = (phi.view(*phi.shape, *[1] * (b.dim() - 1)) * u).mean(1)
    return g / per_example(flat_norm(g, "l2").clamp_min(1e-12), g)


def _jump(ledger, b, v, idx, eps, targeted):
    """Geometric step-size search (section 4.2): halve eps until b + eps v is adversarial.
    Returns the new points and which examples found one within their budget."""
    out, todo = b.clone(), torch.ones(len(b), dtype=torch.bool, device=b.device)
    while (go := (todo & (ledger.left()[idx] >= 1))).any():
        k = go.nonzero()[:, 0]
        cand = (b[k] + per_example(eps[k], b) * v[k]).clamp(0, 1)
        ok = ledger.fooled(cand, idx[k], targeted)
        out[k[ok]], todo[k[ok]] = cand[ok], False
        eps[k[~ok]] /= 2
    return out, ~todo


@torch.no_grad()
def hop_skip_jump(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, norm: str = "l2",
                  max_queries: int = 10_000, targeted: bool = False, x_init: torch.Tensor | None = None,
                  steps: int = 64, gamma: float = 1.0, init_evals: int = 100, max_evals: int = 10_000,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """HopSkipJumpAttack: a minimum-distortion attack that sees only the top-1 label.

    Chen, Jordan and Wainwright, "HopSkipJumpAttack: a query-efficient decision-based attack"
    (IEEE S&P 2020), Algorithm 2. From an adversarial start (uniform noise, or `x_init` when
    targeted) bisected toward x, each iteration t: estimates the boundary normal at the current
    boundary point x_t by eq. 9 from B_t = init_evals sqrt(t) probes at radius delta_t =
    sqrt(d) theta ||x_t - x||_2 (L2) or d theta ||x_t - x||_inf (L-inf), 0.1 at t = 1, with
    theta = gamma / d^{3/2} (L2) or gamma / d^2 (L-inf); steps along it (its sign for L-inf) by
    xi_t = ||x_t - x|| / sqrt(t), halved until adversarial; and bisects back to the boundary.
    Returns ``(x_adv, queries)``: the least-distorted adversarial point of each example, or x
    where none was found, and the queries (N,) long each example cost in this call.

    Arguments:
        norm: "l2" or "linf"; max_queries: budget per example; steps: iterations at most.
        x_init: adversarial starting images (required when targeted).
        gamma, init_evals, max_evals: the paper's constants; generator: draws noise and probes.
    """
    oracle = as_oracle(model, "label", max_queries)
    x, y, _, norm = oracle.check_inputs(x, y, norm=norm)
    check_positive(gamma, "gamma")
    for value, name in ((steps, "steps"), (init_evals, "init_evals"), (max_evals, "max_evals")):
        check_positive(value, name, integer=True)
    if x_init is not None:
        x_init = check_images(x_init, "x_init")
        if x_init.shape != x.shape:
            raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    elif targeted:
        raise ValueError("a targeted hop_skip_jump needs x_init: images the model labels as y")
    ledger = QueryLedger(oracle, x, y, max_queries)
    d = x[0].numel()
    theta = gamma / (d ** 1.5 if norm == "l2" else d ** 2)
    adv, found = _hsj_start(ledger, x, targeted, x_init, generator)
    k = (found & (adv != x).flatten(1).any(1)).nonzero()[:, 0]
    adv[k] = _bisect(ledger, x[k], adv[k], k, theta, norm, targeted)
    dist = flat_norm(adv - x, norm)
    best, best_dist = adv.clone(), dist.clone()
    for t in range(1, steps + 1):
        evals = min(int(init_evals * math.sqrt(t)), max_evals)
        k = (found & (dist > 0) & (ledger.left() >= evals + 1)).nonzero()[:, 0]
        if not len(k):
            break
        delta = torch.full_like(dist[k], 0.1) if t == 1 else (
            (math.sqrt(d) if norm == "l2" else d) * theta * dist[k])
        v = _boundary_normal(ledger, adv[k], k, delta, evals, norm, targeted, generator)
        v = v.sign() if norm == "linf" else v
        new, moved = _jump(ledger, adv[k], v, k, dist[k] / math.sqrt(t), targeted)
        k, new = k[moved], new[moved]
        adv[k] = _bisect(ledger, x[k], new, k, theta, norm, targeted)
        dist = flat_norm(adv - x, norm)
        better = found & (dist < best_dist)
        best = torch.where(per_example(better, adv), adv, best)  # no boolean-index sync
        best_dist = torch.where(better, dist, best_dist)
    return ledger.result(best)
