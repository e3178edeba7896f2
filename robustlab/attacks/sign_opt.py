"""Sign-OPT: a hard-label L2 attack that descends the distance to the boundary along a ray."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_images, check_positive
from .._random import draw_device
from ..norms import flat_norm, per_example
from .oracle import Oracle, QueryLedger, as_oracle, segments
from .rays import along


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / per_example(flat_norm(v, "l2").clamp_min(1e-12), v)


def _randn_unit(shape, generator, like: torch.Tensor) -> torch.Tensor:
    """Directions uniform on the unit sphere, drawn on the generator's device."""
    u = torch.randn(shape, generator=generator, device=draw_device(generator, like.device))
    return _unit(u.to(like).flatten(0, -like.dim()))


def check_x_init(x_init, x: torch.Tensor, targeted: bool, attack: str) -> torch.Tensor | None:
    """`x_init` checked: images in [0, 1] of x's shape; required when `targeted` (a targeted
    decision-based attack must start from a point the model already labels as the target)."""
    if x_init is None:
        if targeted:
            raise ValueError(f"a targeted {attack} needs x_init: images the model labels as y")
        return None
    x_init = check_images(x_init, "x_init")
    if x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")
    return x_init


def bisect_radius(ledger: QueryLedger, x, v, rows, live, high, steps: int, targeted: bool) -> torch.Tensor:
    """Binary search on r in [0, high] for the smallest r with clip(x + r v) adversarial, `high`
    adversarial already for the `live` rows: `steps` halvings, so the answer is within
    high / 2**steps of the boundary. Every row runs the same fixed loop (no host sync to ask who
    is left); a row not live or out of budget rides along unpaid. Returns the adversarial end."""
    low = torch.zeros_like(high)
    for _ in range(steps):
        go = live & (ledger.left()[rows] >= 1)
        mid = (low + high) / 2
        ok = ledger.fooled(along(x, v, mid), rows, targeted, go)
        high, low = torch.where(go & ok, mid, high), torch.where(go & ~ok, mid, low)
    return high


def improve(ledger: QueryLedger, x, v, rows, live, radius, steps: int, targeted: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Does direction v beat the best radius so far, g(v) < radius? One query at
    clip(x + radius v) says; only where it is adversarial, the binary search below it (the
    cheap check of RayS, Chen and Gu 2020, which Sign-OPT's line search needs too: a trial step
    is kept only if it lowers g). Returns the radius (the old one where v is no better) and
    which rows v beat."""
    live = live & (ledger.left()[rows] >= 1)
    better = live & ledger.fooled(along(x, v, radius), rows, targeted, live)
    return bisect_radius(ledger, x, v, rows, better, radius, steps, targeted), better


def sign_grad(ledger: QueryLedger, x, theta, g, rows, live, k: int, beta, targeted: bool, generator
              ) -> torch.Tensor:
    """The Sign-OPT estimate (Cheng et al. 2020, eq. 5 and Algorithm 1) of the direction of
    grad g(theta): mean over k random unit u of sign(g(theta + beta u) - g(theta)) u, each sign
    from ONE query: the point at radius g(theta) along theta + beta u is adversarial iff
    g(theta + beta u) <= g(theta), a sign of -1. The `live` rows pay k queries each."""
    u = _randn_unit((len(x), k, *x.shape[1:]), generator, x)  # (N k, C, H, W)
    probe = _unit(theta.repeat_interleave(k, 0) + per_example(beta.repeat_interleave(k), u) * u)
    down = ledger.fooled(along(x.repeat_interleave(k, 0), probe, g.repeat_interleave(k)), rows,
                         targeted, live)
    sign = torch.where(down, -1.0, 1.0).to(x)
    return (per_example(sign, u) * u).view(len(x), k, *x.shape[1:]).mean(1)


def _start(ledger, x, x_init, init_dirs, steps, targeted, generator):
    """A first direction theta, its g and whether one was found: the way to x_init (a sample of
    another class, or of the target), else the best of `init_dirs` random directions, each asked
    at the best radius so far (first sqrt(D), which reaches every corner of the box)."""
    rows = torch.arange(len(x), device=x.device)
    live = ledger.left() >= 1
    if x_init is not None:
        theta = _unit(x_init - x)
        g, found = improve(ledger, x, theta, rows, live, flat_norm(x_init - x, "l2"), steps, targeted)
        if not (found | ~live).all():
            raise ValueError("x_init must be adversarial: the model must give it the target label "
                             "(targeted) or a wrong label")
        return theta, g, found
    theta = torch.zeros_like(x)
    g = torch.full((len(x),), math.sqrt(x[0].numel()), dtype=x.dtype, device=x.device)
    found = torch.zeros_like(live)
    for _ in range(init_dirs):
        u = _randn_unit(x.shape, generator, x)
        g, better = improve(ledger, x, u, rows, live, g, steps, targeted)
        theta = torch.where(per_example(better, x), u, theta)
        found = found | better
    return theta, g, found


def _line_search(ledger, x, theta, g, grad, rows, live, alpha, trials, steps, targeted):
    """The step-size search of the authors' code: try alpha, 2 alpha, 4 alpha, ... while g
    keeps dropping; where even alpha did not lower g, try alpha / 2, / 8, / 32, ... until one
    does. `trials` tries each way, run as fixed loops (a row that is done rides along unpaid).
    Returns the new theta, g and alpha."""
    best_theta, best_g, trying = theta, g, live
    for _ in range(trials):
        cand = _unit(theta - per_example(alpha, grad) * grad)
        new, better = improve(ledger, x, cand, rows, trying, best_g, steps, targeted)
        best_theta = torch.where(per_example(better, x), cand, best_theta)
        best_g = torch.where(better, new, best_g)
        alpha = torch.where(trying, alpha * 2, alpha)
        trying = trying & better
    trying = live & (best_g >= g)
    for _ in range(trials):
        alpha = torch.where(trying, alpha / 4, alpha)
        cand = _unit(theta - per_example(alpha, grad) * grad)
        new, better = improve(ledger, x, cand, rows, trying, g, steps, targeted)
        best_theta = torch.where(per_example(better, x), cand, best_theta)
        best_g = torch.where(better, new, best_g)
        trying = trying & ~better
    return best_theta, best_g, alpha


@torch.no_grad()
def sign_opt(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, max_queries: int = 10_000,
             k: int = 200, targeted: bool = False, x_init: torch.Tensor | None = None,
             alpha: float = 0.2, beta: float = 1e-3, init_dirs: int = 10, trials: int = 4,
             search_steps: int = 20, iterations: int | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign-OPT: a hard-label L2 attack that descends the distance to the boundary along a ray.

    Cheng, Singh, Chen, Chen, Liu and Hsieh, "Sign-OPT: a query-efficient hard-label adversarial
    attack" (ICLR 2020), Algorithm 1. The L2 distance to the boundary in direction theta,
    g(theta) = min {lambda > 0 : label(clip(x + lambda theta / ||theta||, 0, 1)) != y},
    is minimised over theta: each iteration estimates the sign of grad g from k random
    directions at ONE query each (`sign_grad`), steps theta <- theta - alpha ghat with a line
    search on alpha (`_line_search`), a step kept only where a query at the current g finds it
    adversarial, and then a binary search (`search_steps` halvings) finds its g. When alpha
    falls below 1e-4 it restarts at 1 with beta divided by 10; below beta = 1e-8 an example has
    converged. The first theta is the best of `init_dirs` random directions (the paper tries
    100; 10 leave most of a 1,000-query budget to the descent), or the way to x_init.

    Returns ``(x_adv, queries)``: x_adv the adversarial point at radius g(theta) along the best
    theta, x where none was found; queries (N,) long, what each example cost in this call.

    Arguments:
        max_queries: budget per example; k: random directions per gradient estimate.
        targeted: y holds target labels (needs x_init, images the model labels y).
        x_init: adversarial starting images, optional when untargeted.
        alpha, beta: the first step size and the probes' smoothing radius (paper's values).
        init_dirs: random first directions; trials: step sizes tried each way per iteration.
        search_steps: halvings of each binary search (g within g / 2**search_steps).
        iterations: the most iterations (default: as many as the budget could pay for).
        generator: draws the directions.
    """
    oracle = as_oracle(model, "label", max_queries)
    x, y, _, _ = oracle.check_inputs(x, y, norm="l2")
    for value, name in ((k, "k"), (init_dirs, "init_dirs"), (trials, "trials"),
                        (search_steps, "search_steps")):
        check_positive(value, name, integer=True)
    check_positive(alpha, "alpha")
    check_positive(beta, "beta")
    iterations = max_queries // (k + 1) if iterations is None else check_positive(
        iterations, "iterations", integer=True)
    x_init = check_x_init(x_init, x, targeted, "sign_opt")
    ledger = QueryLedger(oracle, x, y, max_queries)
    theta, g, found = _start(ledger, x, x_init, init_dirs, search_steps, targeted, generator)
    alpha_t = torch.full_like(g, alpha)
    beta_t = torch.full_like(g, beta)
    for part in segments(iterations):
        # the one host sync of a segment: the rows that can pay for a gradient and one trial
        if not len(act := ledger.active(found & (beta_t >= 1e-8), k + 1)):
            break
        for _ in part:
            live = found[act] & (beta_t[act] >= 1e-8) & (ledger.left()[act] >= k + 1)
            grad = sign_grad(ledger, x[act], theta[act], g[act], act, live, k, beta_t[act], targeted,
                             generator)
            th, gg, a = _line_search(ledger, x[act], theta[act], g[act], grad, act, live, alpha_t[act],
                                     trials, search_steps, targeted)
            restart = live & (a < 1e-4)  # the step has collapsed: a larger one, finer probes
            theta[act], g[act] = th, gg
            alpha_t[act] = torch.where(restart, 1.0, torch.where(live, a, alpha_t[act]))
            beta_t[act] = torch.where(restart, beta_t[act] / 10, beta_t[act])
    return ledger.result(torch.where(per_example(found, x), along(x, theta, g), x))
