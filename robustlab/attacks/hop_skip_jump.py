"""HopSkipJumpAttack: a minimum-distortion attack that sees only the top-1 label."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_images, check_positive
from .._random import draw_device
from ..losses import is_fooled
from ..norms import flat_norm, per_example
from .oracle import Oracle, QueryLedger, as_oracle, segments


def _toward(x: torch.Tensor, a: torch.Tensor, alpha: torch.Tensor, norm: str) -> torch.Tensor:
    """The point at `alpha` from x toward a: the blend (1-alpha) x + alpha a (L2), or a clipped
    to the L-inf box of radius alpha around x."""
    alpha = per_example(alpha, x)
    if norm == "l2":
        return x + alpha * (a - x)
    return torch.minimum(torch.maximum(a, x - alpha), x + alpha)


def _bisect(ledger, x, a, rows, live, theta, norm, targeted) -> torch.Tensor:
    """Binary search (paper Algorithm 1) between x and the adversarial a, for the `live` rows,
    on the blend factor in [0, 1] (L2) down to theta, or on the radius in [0, ||a - x||_inf]
    (L-inf) down to theta min(1, ||a - x||_inf); returns the adversarial end.

    Either way an interval of length at most 1 shrinks to theta times it: every row needs the
    same ceil(log2(1 / theta)) halvings, so they run as a fixed loop (two more for rounding),
    a row done or out of budget riding along unpaid, with no host sync to ask who is left.
    """
    high = flat_norm(a - x, "linf") if norm == "linf" else torch.ones(len(x), dtype=x.dtype, device=x.device)
    tol, low = theta * high.clamp(max=1), torch.zeros_like(high)
    for _ in range(math.ceil(math.log2(1 / theta)) + 2):
        go = live & (high - low > tol) & (ledger.left()[rows] >= 1)
        mid = (high + low) / 2
        ok = ledger.fooled(_toward(x, a, mid, norm), rows, targeted, go)
        high, low = torch.where(go & ok, mid, high), torch.where(go & ~ok, mid, low)
    return _toward(x, a, high, norm)


def _from_noise(ledger, x, found, targeted, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise until it is adversarial, for the rows not `found` (at most 10,000 tries
    each, as in the authors' code); returns the noise and which rows found one."""
    noise, found = x.clone(), found.clone()
    for part in segments(10_000):
        # the one host sync of a segment: the rows still searching, fixed until the next one
        if not len(act := ledger.active(~found)):
            break
        for _ in part:
            live = ~found[act] & (ledger.left()[act] >= 1)
            cand = torch.rand(x[act].shape, generator=generator,
                              device=draw_device(generator, x.device)).to(x)
            ok = live & ledger.fooled(cand, act, targeted, live)
            noise[act] = torch.where(per_example(ok, cand), cand, noise[act])
            found[act] = found[act] | ok
    return noise, found


def _hsj_start(ledger, x, targeted, x_init, generator):
    """An adversarial point per example, and whether one was found: x itself when already
    adversarial, else x_init (targeted) or uniform noise, pulled toward x by bisection."""
    rows = torch.arange(len(x), device=x.device)
    live = ledger.left() >= 1  # a spent Oracle may leave some nothing
    found = live & ledger.fooled(x, rows, targeted, live)
    if x_init is not None:
        todo = ~found & (ledger.left() >= 1)
        if not (ledger.fooled(x_init, rows, targeted, todo) | ~todo).all():
            raise ValueError("x_init must be adversarial: the model must give it the target label "
                             "(targeted) or a wrong label")
        return torch.where(per_example(todo, x), x_init, x), found | todo
    noise, now = _from_noise(ledger, x, found, targeted, generator)
    k = now & ~found
    return torch.where(per_example(k, x), _bisect(ledger, x, noise, rows, k, 1e-3, "l2", targeted), x), now


def _boundary_normal(ledger, b, idx, live, delta, evals, norm, targeted, generator) -> torch.Tensor:
    """Monte-Carlo estimate of the unit normal of the boundary at b (paper eq. 9 with the
    baseline of eq. 16): mean of (phi(b + delta u) - mean phi) u over random unit u; the `live`
    rows pay for their probes."""
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
    phi = ledger.fooled(probes.flatten(0, 1), idx, targeted, live)
    phi = phi.view(len(b), evals).to(b.dtype) * 2 - 1
    mean = phi.mean(1, keepdim=True)
    phi = torch.where(mean.abs() == 1, phi, phi - mean)  # no baseline when all agree
    g = (phi.view(*phi.shape, *[1] * (b.dim() - 1)) * u).mean(1)
    return g / per_example(flat_norm(g, "l2").clamp_min(1e-12), g)


LADDER = 32  # halvings of the jump tried at most: eps / 2**31 is below any pixel's resolution


def _jump(ledger, b, v, idx, live, eps, targeted):
    """Geometric step-size search (section 4.2): halve eps until b + eps v is adversarial.
    Returns the new points and which examples found one within their budget.

    The halvings eps, eps/2, ..., eps/2**31 are asked in one batch and charged as the search
    would ask them one by one: up to the first adversarial one, or until the budget runs out.
    """
    scale = 2.0 ** -torch.arange(LADDER, device=b.device, dtype=b.dtype)
    steps = (eps[:, None] * scale).view(len(b), LADDER, *[1] * (b.dim() - 1))
    cand = (b[:, None] + steps * v[:, None]).clamp(0, 1)
    out = ledger.oracle.answer(cand.flatten(0, 1))
    y = ledger.y[idx].repeat_interleave(LADDER)
    ok = is_fooled(out if out.dim() == 1 else out.argmax(1), y, targeted).view(len(b), LADDER)
    first = ok.int().argmax(1)  # the first adversarial halving (0 when none is)
    left = ledger.left()[idx]
    moved = live & ok.any(1) & (first < left)
    ledger.pay(idx, torch.where(live, torch.minimum(torch.where(ok.any(1), first + 1, LADDER), left), 0),
               len(cand.flatten(0, 1)))
    pick = cand[torch.arange(len(b), device=b.device), first]
    return torch.where(per_example(moved, b), pick, b), moved


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
    xi_t = ||x_t - x|| / sqrt(t), halved until adversarial (at most 31 times); and bisects back to
    the boundary.
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
    rows = torch.arange(len(x), device=x.device)
    k = found & (adv != x).flatten(1).any(1)
    adv = torch.where(per_example(k, x), _bisect(ledger, x, adv, rows, k, theta, norm, targeted), adv)
    dist = flat_norm(adv - x, norm)
    best, best_dist = adv.clone(), dist.clone()
    for part in segments(steps):
        # the one host sync of a segment: the rows that can pay for its first step
        cost = min(int(init_evals * math.sqrt(part.start + 1)), max_evals) + 1
        if not len(act := ledger.active(found & (dist > 0), cost)):
            break
        for t in (i + 1 for i in part):
            evals = min(int(init_evals * math.sqrt(t)), max_evals)
            live = found[act] & (dist[act] > 0) & (ledger.left()[act] >= evals + 1)
            delta = torch.full_like(dist[act], 0.1) if t == 1 else (
                (math.sqrt(d) if norm == "l2" else d) * theta * dist[act])
            v = _boundary_normal(ledger, adv[act], act, live, delta, evals, norm, targeted, generator)
            v = v.sign() if norm == "linf" else v
            new, moved = _jump(ledger, adv[act], v, act, live, dist[act] / math.sqrt(t), targeted)
            edge = _bisect(ledger, x[act], new, act, moved, theta, norm, targeted)
            adv[act] = torch.where(per_example(moved, edge), edge, adv[act])
            dist = flat_norm(adv - x, norm)
            better = found & (dist < best_dist)
            best = torch.where(per_example(better, adv), adv, best)  # no boolean-index sync
            best_dist = torch.where(better, dist, best_dist)
    return ledger.result(best)
