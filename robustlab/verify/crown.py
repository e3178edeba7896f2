"""CROWN / DeepPoly: linear bounds by back-substitution through linear relaxations of ReLU and
max pooling, on the logits or on a specification C @ logits."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive
from ._bounds import ROW_BUDGET, Ball, Box, all_rows, max_width, prepare
from .interval import forward_box
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


def _rows_of(lam: torch.Tensor, shape: tuple) -> int:
    """How many leading dimensions of lam (..., *shape) index rows: 1 if shared (M, *shape),
    2 if per example (N, M, *shape)."""
    return lam.dim() - len(shape)


def _affine_back(layer: Affine, lam: torch.Tensor, bias):
    """lam . (W y + b) = (lam W) . y + lam . b: (lam W, bias + lam . b), shared or per example."""
    lead = lam.shape[:_rows_of(lam, layer.out_shape)]
    bias = bias + (lam * layer.bias).flatten(len(lead)).sum(-1)
    return layer.transpose(lam.reshape(-1, *layer.out_shape)).reshape(*lead, *layer.in_shape), bias


def _relu_back(lam, bias, relax, a_l, sign: int):
    """lam . relu(z) bounded below (sign=-1) or above (+1) by a linear function of z.

    With a_l z <= relu(z) <= a_u z + b_u: a lower bound takes the lower line where lam >= 0 and
    the upper one where lam < 0, lam+ a_l + lam- a_u, bias + lam- . b_u; an upper bound the
    reverse, lam+ a_u + lam- a_l, bias + lam+ . b_u. A shared lam (M, *shape) becomes per
    example here, since the slopes (N, 1, *shape) are."""
    _, a_u, b_u = relax
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    if sign < 0:
        return pos * a_l + neg * a_u, bias + (neg * b_u).flatten(2).sum(-1)
    return pos * a_u + neg * a_l, bias + (pos * b_u).flatten(2).sum(-1)


def _maxpool_back(pool: MaxPool, lam, bias, relax, sign: int):
    """lam . maxpool(x) bounded below (sign=-1) or above (+1) by a linear function of x.

    With x[sel] <= y <= exact x[sel] + (1 - exact) top: the lower bound takes y >= x[sel] where
    lam >= 0 and the upper line where lam < 0; the upper bound the reverse. The coefficients
    of each window go to its selected input (scatter-add: windows may overlap)."""
    sel, exact, top = relax
    lam = lam.flatten(_rows_of(lam, pool.out_shape))
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    near, far = (pos, neg) if sign < 0 else (neg, pos)  # far: the coefficients on the upper line
    coef, loose = near + far * exact, (1 - exact) * top
    bias = bias + (far * loose).sum(-1)
    n, rows = coef.shape[:2]
    out = coef.new_zeros(n, rows, torch.Size(pool.in_shape).numel())
    return out.scatter_add_(2, sel.expand(n, rows, -1), coef).view(n, rows, *pool.in_shape), bias


def back_substitute(layers: list, lam: torch.Tensor, ball: Ball, relax: dict):
    """Lower and upper bounds (N, M) of lam . (layers)(x') over the ball.

    lam is (N, M, *shape), or (M, *shape) when the rows are the same for every example (the
    identity rows of an intermediate layer). Going backwards from Lambda = lam, d = 0, each
    layer rewrites Lambda . y + d as a function of its input: an affine layer y = W x + b
    exactly, Lambda W . x + (d + Lambda . b); a ReLU or max pool through its relaxation
    (`relax[i]` for layer i, `_relu_back`, `_maxpool_back`), the lower bound taking the lower
    line where a coefficient is positive and the upper line where negative, the upper bound the
    reverse. At the input, Lambda x' + d is concretised over the ball (dual norm) intersected
    with [0, 1]. The two bounds share their coefficients until the first relaxation, and shared
    rows stay unbatched until then (the affine layers act on M rows, not N M)."""
    lo = up = lam
    b_lo = b_up = lam.new_zeros(())
    for i in reversed(range(len(layers))):
        layer = layers[i]
        if isinstance(layer, Affine):
            if lo is up:  # no relaxation yet: the two bounds have the same Lambda and d
                lo, b_lo = _affine_back(layer, lo, b_lo)
                up, b_up = lo, b_lo
            else:
                lo, b_lo = _affine_back(layer, lo, b_lo)
                up, b_up = _affine_back(layer, up, b_up)
        elif isinstance(layer, ReLU):
            a_l = relax[i][0]
            # alpha-CROWN: one lower slope per row (N, 2M, ...), [:M] for the lower bound
            half = a_l.shape[1] // 2
            a_lo, a_up = (a_l, a_l) if a_l.shape[1] == 1 else (a_l[:, :half], a_l[:, half:])
            lo, b_lo = _relu_back(lo, b_lo, relax[i], a_lo, -1)
            up, b_up = _relu_back(up, b_up, relax[i], a_up, 1)
        else:
            lo, b_lo = _maxpool_back(layer, lo, b_lo, relax[i], -1)
            up, b_up = _maxpool_back(layer, up, b_up, relax[i], 1)
    return ball.value(lo, b_lo, -1), ball.value(up, b_up, 1)


def _forward(net: Network, ball: Ball, splits: dict | None, bound_layer):
    """One CROWN pass: (bounds on each nonlinear layer's input, relaxations, output shape), the
    bounds of layer i from ``bound_layer(i, shape, relax, pre)`` (back-substitution through the
    layers before it), or from the ReLU just before it, clamped at 0; split neurons clamped."""
    relax, pre, shape = {}, [], net.in_shape
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, Affine):
            if i and isinstance(net.layers[i - 1], ReLU):
                bounds = (pre[-1][0].clamp_min(0), pre[-1][1].clamp_min(0))
            else:
                bounds = bound_layer(i, shape, relax, pre)
            if splits is not None and i in splits:
                phase = splits[i]
                bounds = (torch.where(phase > 0, bounds[0].clamp_min(0), bounds[0]),
                          torch.where(phase < 0, bounds[1].clamp_max(0), bounds[1]))
            pre.append(bounds)
            relax[i] = (relu_relaxation(*bounds) if isinstance(layer, ReLU)
                        else maxpool_relaxation(layer, *bounds))
        shape = layer.shape if isinstance(layer, ReLU) else layer.out_shape
    return pre, relax, shape


def _eye(shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """The identity rows of a layer of shape `shape`, shared by every example: (M, *shape)."""
    size = torch.Size(shape).numel()
    return torch.eye(size, dtype=like.dtype, device=like.device).view(size, *shape)


def _alpha(net: Network, ball: Ball, C, splits, steps: int, lr: float):
    """alpha-CROWN: CROWN with the lower slope of every unstable ReLU a parameter in [0, 1], one
    per (bound computed, row, lower / upper) - every intermediate layer's bounds and the final
    ones - optimised jointly by Adam, with projection onto [0, 1], on the width of the final
    bounds, from CROWN's own slopes. Any slope in [0, 1] is sound, so every pass's bounds are:
    each neuron and row keeps the best seen (the intermediate ones feed the next pass), and the
    result is never looser than CROWN."""
    n = len(ball.x)

    def plain(i, shape, relax, pre):
        return all_rows(n, shape, lambda lam: back_substitute(net.layers[:i], lam, ball, relax), ball.x,
                        max_width(net), shared=True)
    pre, relax, out_shape = _forward(net, ball, splits, plain)
    where = {i: k for k, i in enumerate(relax)}  # layer -> its place in pre
    relus = [i for i in relax if isinstance(net.layers[i], ReLU)]
    rows = {i: torch.Size(pre[where[i]][0].shape[1:]).numel() for i in relax}
    rows[len(net.layers)] = C.shape[1] if C is not None else out_shape[0]  # the output

    def start(c):  # CROWN's slopes of the ReLUs before bound c, for its 2 x rows rows
        return {i: relax[i][0].expand(-1, 2 * rows[c], *relax[i][0].shape[2:]).clone().requires_grad_(True)
                for i in relus if i < c}
    own = [c for c in rows if c == len(net.layers) or not (c and isinstance(net.layers[c - 1], ReLU))]
    slopes = {c: start(c) for c in own}  # a layer right after a ReLU takes that ReLU's bounds
    params = [p for group in slopes.values() for p in group.values()]

    def with_slopes(relax, c):  # b_u > 0 exactly where l < 0 < u: only unstable slopes are free
        out = dict(relax)
        for i, p in slopes[c].items():
            out[i] = (torch.where(relax[i][2] > 0, p, relax[i][0]), *relax[i][1:])
        return out

    best = [(lo.detach(), up.detach()) for lo, up in pre]
    best_lo = best_up = None
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    with torch.enable_grad():
        for step in range(steps + 1):
            def bound_layer(i, shape, relax, pre, best=best):
                lo, up = back_substitute(net.layers[:i], _eye(shape, ball.x), ball, with_slopes(relax, i))
                b = best[where[i]]
                return torch.maximum(lo.view_as(b[0]), b[0]), torch.minimum(up.view_as(b[1]), b[1])
            pre_t, relax_t, _ = _forward(net, ball, splits, bound_layer)
            final = C if C is not None else _eye(out_shape, ball.x)
            lo, up = back_substitute(net.layers, final, ball, with_slopes(relax_t, len(net.layers)))
            best = [(torch.maximum(a, p.detach()), torch.minimum(b, q.detach()))
                    for (a, b), (p, q) in zip(best, pre_t)]
            best_lo = lo.detach() if best_lo is None else torch.maximum(best_lo, lo.detach())
            best_up = up.detach() if best_up is None else torch.minimum(best_up, up.detach())
            if step == steps or not params:
                break
            # the rows are independent, so one scalar's gradient moves every row's slopes
            grads = torch.autograd.grad(up.sum() - lo.sum(), params, allow_unused=True)
            with torch.no_grad():
                for p, g, (m1, m2) in zip(params, grads, moments):
                    if g is None:
                        continue
                    # Adam (Kingma and Ba, 2015), written out: torch.optim's first step costs seconds
                    m1.mul_(0.9).add_(g, alpha=0.1)
                    m2.mul_(0.999).addcmul_(g, g, value=0.001)
                    hat1, hat2 = m1 / (1 - 0.9 ** (step + 1)), m2 / (1 - 0.999 ** (step + 1))
                    p.sub_(lr * hat1 / (hat2.sqrt() + 1e-8)).clamp_(0, 1)
    return best, (best_lo, best_up)


def _reference(net: Network, ball: Ball, i: int, pre: list) -> Box:
    """Interval bounds on layer i's input: the output box of the nonlinear layer before it
    (relu or max pool of its input bounds, monotone maps) or the ball's box, through the
    affine layers in between by centre and radius."""
    j = max((k for k in range(i) if not isinstance(net.layers[k], Affine)), default=-1)
    box = ball.box if j < 0 else Box(net.layers[j](pre[-1][0]), net.layers[j](pre[-1][1]))
    return forward_box(net.layers[j + 1:i], box)


def _unstable_rows(bound_rows, shape: tuple, ref: Box, width: int):
    """Bounds (N, *shape) of a ReLU's input: back-substitution (``bound_rows``) for the neurons
    that the interval bounds `ref` leave unstable in some example of the batch, `ref` itself
    for the others: they are stable, and a stable ReLU's relaxation is exact whatever its
    bounds (slope 1 or 0), so the bounds after it are those of every neuron bounded."""
    n = len(ref.lower)
    lower, upper = ref.lower.flatten(1).clone(), ref.upper.flatten(1).clone()
    unstable = ((lower < 0) & (upper > 0)).any(0).nonzero().flatten()
    eye = torch.eye(lower.shape[1], dtype=lower.dtype, device=lower.device)
    for part in unstable.split(max(1, ROW_BUDGET // max(1, n * width))):
        lower[:, part], upper[:, part] = bound_rows(eye[part].view(len(part), *shape))
    return lower.view(n, *shape), upper.view(n, *shape)


def crown_bounds(net: Network, ball: Ball, C: torch.Tensor | None = None, *, splits: dict | None = None,
                 alpha_steps: int = 0, alpha_lr: float = 0.1, every_neuron: bool = True):
    """CROWN through `net`: (bounds on the input of each ReLU / MaxPool layer, (lower, upper)).

    Every nonlinear layer's input is bounded by back-substitution to the input, in order, so
    each relaxation uses the bounds of the layers before it; every neuron is, stable ones too
    (a stable ReLU is exact whatever its bounds, but a max pool's relaxation reads them:
    keeping interval bounds for stable neurons, as auto_LiRPA does, loosens it). The input of
    a layer that follows a ReLU takes that ReLU's bounds, clamped at 0 (back-substitution gives
    nothing tighter).
    `splits` maps a ReLU's position in the chain to its phases (N, *shape): +1 active (z >= 0),
    -1 inactive (z <= 0), 0 free; the bounds of a split neuron are clamped to its phase, so the
    result bounds the subdomain of the ball where the phases hold (a lower bound above an upper
    one says that subdomain is empty). With alpha_steps > 0 the bounds are alpha-CROWN's
    (`_alpha`), which holds every row of every layer at once (no chunking: small networks).
    every_neuron=False back-substitutes, for a ReLU whose output no max pool reads, only the
    neurons its interval bounds (`_reference`) leave unstable (`_unstable_rows`): the final
    bounds are the same or tighter (where CROWN is looser than the interval), the returned
    ones of the stable neurons the interval ones."""
    if alpha_steps:
        return _alpha(net, ball, C, splits, alpha_steps, alpha_lr)
    n, width = len(ball.x), max_width(net)

    def bound_layer(i, shape, relax, pre):
        def rows(lam):
            return back_substitute(net.layers[:i], lam, ball, relax)
        pooled = i + 1 < len(net.layers) and isinstance(net.layers[i + 1], MaxPool)
        if every_neuron or pooled or not isinstance(net.layers[i], ReLU):
            return all_rows(n, shape, rows, ball.x, width, shared=True)
        return _unstable_rows(rows, shape, _reference(net, ball, i, pre), width)
    pre, relax, shape = _forward(net, ball, splits, bound_layer)

    def rows(lam):
        return back_substitute(net.layers, lam, ball, relax)
    return pre, rows(C) if C is not None else all_rows(n, shape, rows, ball.x, width, shared=True)


def crown(model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
          C: torch.Tensor | None = None, alpha: bool = False, alpha_steps: int = 20,
          alpha_lr: float = 0.1, rounding: bool = True) -> Bounds:
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
    slopes become parameters, one per neuron for every row of every bound computed (each
    intermediate layer's and the final one, lower and upper), optimised jointly by projected
    Adam from CROWN's adaptive ones to narrow the final bounds; each bound keeps the best value
    seen, so they are never looser than CROWN's. Every row is held at once: for small networks
    (on one CPU core, 20 steps: about 10 ms per digit of the zoo's digits-mlp, 8-10 s per digit of
    digits-cnn).

    Arguments:
        model: a chain that `read_network` reads (bounded as in eval mode; left as found).
        x: images (N, C, H, W) in [0, 1]; eps >= 0; norm: "linf", "l2" or "l1".
        C: optional specification (S, K) or (N, S, K): bounds on C @ logits, shape (N, S),
            back-substituted from C itself (tighter than bounding the logits first).
        alpha: optimise the lower slopes (alpha-CROWN); alpha_steps > 0 Adam steps of
            learning rate alpha_lr > 0 (both unused without alpha).
        rounding: as in `interval` (False: exact-arithmetic bounds, for comparisons only).
    Returns Bounds with lower and upper of shape (N, K), or (N, S) with C.
    """
    if not isinstance(alpha, bool):
        raise TypeError(f"alpha must be True or False, got {type(alpha).__name__}")
    steps = check_positive(alpha_steps, "alpha_steps", integer=True) if alpha else 0
    lr = float(check_positive(alpha_lr, "alpha_lr"))
    if alpha and torch.is_inference_mode_enabled():
        raise RuntimeError("crown(alpha=True) optimises the slopes by gradient and cannot run inside "
                           "torch.inference_mode(); call it outside (inside torch.no_grad() is fine)")
    sound, x, ball, C = prepare(model, x, eps, norm, C, rounding)
    with torch.no_grad():
        _, (lower, upper) = crown_bounds(sound.net, ball, C, alpha_steps=steps, alpha_lr=lr,
                                         every_neuron=False)
        return sound.widen(lower, upper, C) if rounding else Bounds(lower, upper)
