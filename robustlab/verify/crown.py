"""CROWN / DeepPoly: linear bounds by back-substitution through linear relaxations of ReLU and
max pooling, on the logits or on a specification C @ logits."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive
from ._bounds import Ball, all_rows, max_width, prepare
from .network import Affine, MaxPool, Network, ReLU
from .types import Bounds


def relu_relaxation(lower: torch.Tensor, upper: torch.Tensor):
    """(a_l, a_u, b_u), each (N, 1, *shape): a_l x <= relu(x) <= a_u x + b_u on [lower, upper].

    Stable neurons are exact (slope 1 or 0). For l < 0 < u the upper line passes through
    (l, 0) and (u, u): a_u = u / (u - l), b_u = -l a_u; the lower slope is adaptive, 1 if
    u > -l else 0 (the smaller area of the two triangles)."""
    l, u = lower.unsqueeze(1), upper.unsqueeze(1)
    unstable, active = (l < 0) & (u > 0), (l >= 0).to(l.dtype)
    a_u = torch.where(unstable, u / torch.where(unstable, u - l, torch.ones_like(u)), active)
    b_u = torch.where(unstable, -l * a_u, torch.zeros_like(u))
    a_l = torch.where(unstable, (u > -l).to(l.dtype), active)
    return a_l, a_u, b_u


def maxpool_relaxation(pool: MaxPool, lower: torch.Tensor, upper: torch.Tensor):
    """(sel, exact, top), each (N, 1, O): y >= x[sel] (sel: the input of largest lower bound in
    the window, as a flat input index); y <= x[sel] where that input dominates (exact: its lower
    bound is at least every other upper bound), else y <= top = max of the window's upper bounds."""
    n, c, h, w = lower.shape
    lw, uw = pool.windows(lower, float("-inf")), pool.windows(upper, float("-inf"))
    j = lw.argmax(2, keepdim=True)
    others = uw.scatter(2, j, float("-inf")).amax(2)
    exact = (lw.gather(2, j).squeeze(2) >= others).to(lower.dtype)
    index = torch.arange(h * w, device=lower.device, dtype=lower.dtype).view(1, 1, h, w)
    where = pool.windows(index.expand(n, c, h, w), -1.0).gather(2, j).squeeze(2).long()
    sel = where + torch.arange(c, device=lower.device).view(1, c, 1) * (h * w)
    return sel.flatten(1)[:, None], exact.flatten(1)[:, None], uw.amax(2).flatten(1)[:, None]


def _relu_back(lam, bias, m, relax):
    a_l, a_u, b_u = relax
    # one lower slope for every row, or (alpha-CROWN) one per row: [:m] lower, [m:] upper bounds
    a_lo, a_up = (a_l, a_l) if a_l.shape[1] == 1 else (a_l[:, :m], a_l[:, m:])
    lo, up = lam[:, :m], lam[:, m:]
    lo_neg, up_pos = lo.clamp(max=0), up.clamp(min=0)
    lam = torch.cat([lo.clamp(min=0) * a_lo + lo_neg * a_u, up_pos * a_u + up.clamp(max=0) * a_up], 1)
    shift = torch.cat([(lo_neg * b_u).flatten(2).sum(-1), (up_pos * b_u).flatten(2).sum(-1)], 1)
    return lam, bias + shift


def _maxpool_back(pool, lam, bias, m, relax):
    sel, exact, top = relax
    n, rows = lam.shape[:2]
    lo, up = lam[:, :m].flatten(2), lam[:, m:].flatten(2)
    lo_neg, up_pos = lo.clamp(max=0), up.clamp(min=0)
    coef = torch.cat([lo.clamp(min=0) + lo_neg * exact, up.clamp(max=0) + up_pos * exact], 1)
    loose = (1 - exact) * top
    shift = torch.cat([(lo_neg * loose).sum(-1), (up_pos * loose).sum(-1)], 1)
    size = torch.Size(pool.in_shape).numel()
    out = coef.new_zeros(n, rows, size).scatter_add_(2, sel.expand(n, rows, -1), coef)
    return out.view(n, rows, *pool.in_shape), bias + shift


def back_substitute(layers: list, lam: torch.Tensor, ball: Ball, relax: dict):
    """Lower and upper bounds (N, M) of lam . (layers)(x') over the ball, lam (N, M, *shape).

    Goes backwards: affine layers exactly (lam W, bias + lam b), ReLU and max pool through
    their relaxations (`relax[i]` for layer i), the lower bound taking the lower line where
    the coefficient is positive and the upper one where negative, the upper bound the reverse;
    then concretises over the ball (dual norm) intersected with [0, 1]."""
    m = lam.shape[1]
    lam = torch.cat([lam, lam], 1)  # rows [:m] make the lower bound, [m:] the upper
    bias = lam.new_zeros(lam.shape[:2])
    for i in reversed(range(len(layers))):
        layer = layers[i]
        if isinstance(layer, Affine):
            bias = bias + (lam * layer.bias).flatten(2).sum(-1)
            lam = layer.back(lam)
        elif isinstance(layer, ReLU):
            lam, bias = _relu_back(lam, bias, m, relax[i])
        else:
            lam, bias = _maxpool_back(layer, lam, bias, m, relax[i])
    return ball.value(lam[:, :m], bias[:, :m], -1), ball.value(lam[:, m:], bias[:, m:], 1)


def optimised_rows(layers: list, lam: torch.Tensor, ball: Ball, relax: dict, steps: int, lr: float):
    """alpha-CROWN: the bounds of `back_substitute` with the lower slope of every unstable ReLU
    a free parameter in [0, 1], one per output row and per bound (lower / upper), optimised by
    Adam with projection onto [0, 1] from CROWN's own slopes; each row keeps its best bound
    seen, so the result is never looser than CROWN."""
    m = lam.shape[1]
    # (a_l, a_u, b_u) of each ReLU: b_u > 0 exactly where l < 0 < u
    slopes = {i: (r[0].expand(-1, 2 * m, *r[0].shape[2:]).clone(), r[2] > 0)
              for i, r in relax.items() if isinstance(layers[i], ReLU)}
    best_lo = best_up = None
    with torch.enable_grad():
        params = [p.requires_grad_(True) for p, _ in slopes.values()]
        opt = torch.optim.Adam(params, lr=lr)
        for step in range(steps + 1):
            trial = dict(relax)
            for i, (p, unstable) in slopes.items():
                trial[i] = (torch.where(unstable, p, relax[i][0]), *relax[i][1:])
            lo, up = back_substitute(layers, lam, ball, trial)
            best_lo = lo.detach() if best_lo is None else torch.maximum(best_lo, lo.detach())
            best_up = up.detach() if best_up is None else torch.minimum(best_up, up.detach())
            if step == steps or not params:
                break
            # the rows are independent, so one scalar's gradient moves every row's slopes
            grads = torch.autograd.grad(up.sum() - lo.sum(), params)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            with torch.no_grad():
                for p in params:
                    p.clamp_(0, 1)
    return best_lo, best_up


def crown_bounds(net: Network, ball: Ball, C: torch.Tensor | None = None, *, splits: dict | None = None,
                 alpha_steps: int = 0, alpha_lr: float = 0.1):
    """CROWN through `net`: (bounds on the input of each ReLU / MaxPool layer, (lower, upper)).

    Every nonlinear layer's input is bounded by back-substitution to the input, in order, so
    each relaxation uses the bounds of the layers before it. The input of a layer that follows
    a ReLU takes that ReLU's bounds, clamped at 0 (back-substitution gives nothing tighter).
    `splits` maps a ReLU's position in the chain to its phases (N, *shape): +1 active (z >= 0),
    -1 inactive (z <= 0), 0 free; the bounds of a split neuron are clamped to its phase, so the
    result bounds the subdomain of the ball where the phases hold (a lower bound above an upper
    one says that subdomain is empty). With alpha_steps > 0 the final bounds are alpha-CROWN's
    (`optimised_rows`); the intermediate ones stay CROWN's."""
    n, width = len(ball.x), max_width(net)
    relax, pre, shape = {}, [], net.in_shape
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Affine):
            if i and isinstance(net.layers[i - 1], ReLU):
                bounds = (pre[-1][0].clamp_min(0), pre[-1][1].clamp_min(0))
            else:
                head = net.layers[:i]
                bounds = all_rows(n, shape, lambda lam, head=head: back_substitute(head, lam, ball, relax),
                                  ball.x, width)
            if splits is not None and i in splits:
                phase = splits[i]
                bounds = (torch.where(phase > 0, bounds[0].clamp_min(0), bounds[0]),
                          torch.where(phase < 0, bounds[1].clamp_max(0), bounds[1]))
            pre.append(bounds)
            relax[i] = (relu_relaxation(*bounds) if isinstance(layer, ReLU)
                        else maxpool_relaxation(layer, *bounds))
        shape = layer.shape if isinstance(layer, ReLU) else layer.out_shape
    if alpha_steps:
        def rows(lam):
            return optimised_rows(net.layers, lam, ball, relax, alpha_steps, alpha_lr)
    else:
        def rows(lam):
            return back_substitute(net.layers, lam, ball, relax)
    return pre, rows(C) if C is not None else all_rows(n, shape, rows, ball.x, width)


def crown(model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
          C: torch.Tensor | None = None, alpha: bool = False, alpha_steps: int = 20,
          alpha_lr: float = 0.1) -> Bounds:
    """CROWN / DeepPoly bounds on the logits of `model` over the eps-ball around each x.

    Zhang et al., "Efficient neural network robustness certification with general activation
    functions" (NeurIPS 2018), Theorem 3.2; Singh et al., "An abstract domain for certifying
    neural networks" (POPL 2019). Each ReLU is bounded by two lines,
    a_l z <= relu(z) <= u (z - l) / (u - l), with the adaptive lower slope a_l = 1 if u > -l
    else 0 (stable neurons exact); max pooling by DeepPoly's rule. The bound on row c of the
    output is back-substituted to a linear function Lambda x + d of the input and concretised:
    Lambda x + d -+ eps ||Lambda||_q (q the dual norm; for L-inf, over the box
    [max(x - eps, 0), min(x + eps, 1)]). Every intermediate layer is bounded the same way.

    alpha=True gives alpha-CROWN (Xu et al., "Fast and complete: enabling complete neural
    network verification with rapid and massively parallel incomplete verifiers", ICLR 2021,
    section 3.1): any lower slope in [0, 1] is a sound lower line of an unstable ReLU, so the
    slopes become parameters, one per output row and bound, optimised by projected Adam from
    CROWN's adaptive ones to tighten the final bounds; each row keeps its best bound, so they
    are never looser than CROWN's (the intermediate layers keep CROWN's bounds).

    Arguments:
        model: a chain that `read_network` reads (bounded as in eval mode; left as found).
        x: images (N, C, H, W) in [0, 1]; eps >= 0; norm: "linf", "l2" or "l1".
        C: optional specification (S, K) or (N, S, K): bounds on C @ logits, shape (N, S),
            back-substituted from C itself (tighter than bounding the logits first).
        alpha: optimise the lower slopes (alpha-CROWN); alpha_steps > 0 Adam steps of
            learning rate alpha_lr > 0 (both unused without alpha).
    Returns Bounds with lower and upper of shape (N, K), or (N, S) with C.
    """
    if not isinstance(alpha, bool):
        raise TypeError(f"alpha must be True or False, got {type(alpha).__name__}")
    steps = check_positive(alpha_steps, "alpha_steps", integer=True) if alpha else 0
    lr = float(check_positive(alpha_lr, "alpha_lr"))
    if alpha and torch.is_inference_mode_enabled():
        raise RuntimeError("crown(alpha=True) optimises the slopes by gradient and cannot run inside "
                           "torch.inference_mode(); call it outside (inside torch.no_grad() is fine)")
    net, x, ball, C = prepare(model, x, eps, norm, C)
    with torch.no_grad():
        _, (lower, upper) = crown_bounds(net, ball, C, alpha_steps=steps, alpha_lr=lr)
    return Bounds(lower, upper)
