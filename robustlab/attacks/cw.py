"""Carlini-Wagner minimum-distortion attacks under L2, L-inf and L0.

Carlini and Wagner, "Towards evaluating the robustness of neural networks" (IEEE S&P 2017),
eq. 3 of the tutorial: min ||r||_p + c f(x + r), by Adam over w with x' = (tanh(w) + 1) / 2,
which keeps x' inside [0, 1] without clipping.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_in_range, check_nonnegative, check_positive
from .._model import check_attack_inputs, frozen, logits_of
from ..losses import margin_loss
from ..norms import flat_norm, per_example

# Per norm: first c, Adam steps per solve, learning rate, largest c. Adapted to 8x8 digits from
# the paper's (c 1e-3 / 1e-5 / 1e-3, steps 10000 / 1000 / 1000, lr 1e-2 / 5e-3 / 1e-2, largest c
# 20 for L-inf, 2e6 for L0): a coarser lr and fewer steps give the same digits distortions
# (lr 1e-2 with more steps buys precision), and as Adam only sees the ratio of the two terms,
# c beyond ~1e2 changes nothing on digits.
DEFAULTS = {
    "l2": dict(c=1.0, steps=200, lr=5e-2),
    "linf": dict(c=1e-1, steps=200, lr=5e-2, max_c=20.0),
    "l0": dict(c=1e-1, steps=200, lr=5e-2, max_c=1e2),
}


def _to_w(x: torch.Tensor) -> torch.Tensor:  # pixels at 0 or 1 would need w = -+inf: pull in by 1e-6
    return torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))


def _from_w(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1) / 2


def _f(z: torch.Tensor, y: torch.Tensor, targeted: bool, kappa: float) -> torch.Tensor:
    """The paper's f_6: max(Z_y - max_{i!=y} Z_i, -kappa), or max(max_{i!=t} Z_i - Z_t, -kappa)."""
    return (-margin_loss(z, y, targeted)).clamp_min(-kappa)


def _fooled(z: torch.Tensor, y: torch.Tensor, targeted: bool, kappa: float) -> torch.Tensor:
    # strictly past the boundary (by kappa), so that argmax really changes
    return margin_loss(z, y, targeted) > kappa


def cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "l2",
       targeted: bool = False, c: float | None = None, kappa: float = 0.0, steps: int | None = None,
       lr: float | None = None, binary_steps: int = 9, abort_early: bool = True,
       max_c: float | None = None, tau_decrease: float = 0.9) -> torch.Tensor:
    """Carlini-Wagner attack: the smallest L2, L-inf or L0 change that fools the model.

    Carlini and Wagner (S&P 2017), eq. 3 of the tutorial, with the margin loss
    f(x') = max(Z_y(x') - max_{i!=y} Z_i(x'), -kappa) (untargeted) or
    f(x') = max(max_{i!=t} Z_i(x') - Z_t(x'), -kappa) (targeted, y = t), Z the logits, and
    x' = (tanh(w) + 1) / 2 optimised over w with Adam.

    - L2: minimise ||x' - x||_2^2 + c f(x'), `binary_steps` rounds of binary search on c per
      example (c x 10 until the first success); keep the smallest successful x'.
    - L-inf: minimise c f(x') + sum_i max(|x'_i - x_i| - tau, 0), tau = 1 at first. When a
      solve fools the model with every |x'_i - x_i| <= tau, warm start from there with
      tau <- tau_decrease * min(tau, max_i |x'_i - x_i|); a failed solve doubles c. An example
      stops at c > `max_c` or tau < 1/256.
    - L0: the L2 objective (no binary search: c doubled on failure up to `max_c`) over an
      allowed set of pixels, warm started from the last success; then fix the pixels of least
      |x'_i - x_i| * |grad_i| (summed over channels: a pixel is all its channels), at most
      0.3 sqrt(#changed pixels), up to the first above 0.01. Repeat until the solve fails.
    L-inf and L0 stop each solve at its first success, as the paper does; the examples of a
    batch run side by side, each with its own c, tau and pixel set. Whether to stop is read on
    the host every steps // 10 Adam steps only (Carlini's own schedule for abort_early), so a GPU
    is not stalled at every step; the result is the same as stopping at once.

    Arguments:
        norm: "l2", "linf" or "l0". targeted: y holds target classes.
        c: the initial constant. kappa: confidence margin (0: just across the boundary).
        steps, lr: Adam iterations per solve and learning rate.
        binary_steps: L2 rounds of binary search on c.
        abort_early: L2: stop a solve when the loss stopped decreasing (checked every
            steps // 10 steps, as in the paper's code).
        max_c: L-inf and L0: the largest c tried. tau_decrease: L-inf shrink factor of tau.
        None takes the per-norm default of `DEFAULTS`.

    Returns x_adv; an example never fooled is returned unchanged.
    """
    x, y, _, norm = check_attack_inputs(model, x, y, norm=norm, norms=("l2", "linf", "l0"))
    hyper = {**DEFAULTS[norm], **{k: v for k, v in dict(c=c, steps=steps, lr=lr, max_c=max_c).items()
                                  if v is not None}}
    for name in ("c", "lr", "max_c"):
        if name in hyper:
            check_positive(hyper[name], name)
    check_positive(hyper["steps"], "steps", integer=True)
    check_positive(binary_steps, "binary_steps", integer=True)
    check_nonnegative(kappa, "kappa")
    check_in_range(tau_decrease, "tau_decrease", 0, 1, low_open=True, high_open=True)
    with frozen(model):
        # the labels against K once here: the loops below run unchecked forward passes, since
        # the label check reads the range back to the host (a GPU stall at every Adam step)
        logits_of(model, x, y)
        if norm == "l2":
            return _l2(model, x, y, targeted, kappa, binary_steps, abort_early, **hyper).detach()
        return _iterated(model, x, y, norm, targeted, kappa, tau_decrease, **hyper).detach()


def _l2(model, x, y, targeted, kappa, binary_steps, abort_early, *, c, steps, lr, max_c=None):
    const = torch.full((len(x),), float(c), dtype=x.dtype, device=x.device)
    lo, hi = torch.zeros_like(const), torch.full_like(const, math.inf)
    best, best_d = x.clone(), torch.full_like(const, math.inf)
    for _ in range(binary_steps):
        w = _to_w(x).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found, prev = torch.zeros_like(const, dtype=torch.bool), math.inf
        for step in range(steps):
            xa = _from_w(w)
            z = logits_of(model, xa)
            d = flat_norm(xa - x, "l2") ** 2
            loss = (d + const * _f(z, y, targeted, kappa)).sum()
            with torch.no_grad():
                ok = _fooled(z, y, targeted, kappa)
                better = ok & (d < best_d)
                # torch.where, not best[better] = ...: a boolean index syncs with the GPU each step
                best = torch.where(per_example(better, x), xa, best)
                best_d = torch.where(better, d, best_d)
                found |= ok
            # the paper's: no progress, give up; read on the host only every steps // 10 steps
            if abort_early and step % max(1, steps // 10) == 0:
                now = loss.item()
                if now > 0.9999 * prev:
                    break
                prev = now
            opt.zero_grad()
            loss.backward()
            opt.step()
        # bisect between the largest failing and smallest succeeding c; grow c until one succeeds
        hi = torch.where(found, torch.minimum(hi, const), hi)
        lo = torch.where(found, lo, torch.maximum(lo, const))
        const = torch.where(hi < math.inf, (lo + hi) / 2, const * 10)
    return best


def _solve(model, x, y, start, const, mask, tau, targeted, kappa, steps, lr):
    """Adam on P(x') + const * f(x') from `start`, pixels outside `mask` held at x.

    P is sum_i max(|x'_i - x_i| - tau, 0) for L-inf (tau given), ||x' - x||_2^2 for L0. Returns
    per example whether an iterate fooled the model (with every |x'_i - x_i| <= tau for L-inf)
    and the first such iterate: the paper stops each solve at its first success.
    """
    w = _to_w(start).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    found, out = torch.zeros(len(x), dtype=torch.bool, device=x.device), start.clone()
    for step in range(steps):
        xa = torch.where(mask, _from_w(w), x)
        z = logits_of(model, xa)
        delta = xa - x
        with torch.no_grad():
            new = ~found & _fooled(z, y, targeted, kappa)
            if tau is not None:
                new &= flat_norm(delta, "linf") <= tau
            out = torch.where(per_example(new, x), xa, out)
            found |= new
        # Stop once every example has its first success. An example's steps after that change
        # neither `out` nor `found` (the loss is a sum over examples and Adam is per
        # coordinate), so reading `found` on the host only every steps // 10 steps, as Carlini's
        # code reads its loss, returns the same result with a bounded number of stalls.
        if step % max(1, steps // 10) == 0 and found.all():
            break
        if tau is None:
            penalty = flat_norm(delta, "l2") ** 2
        else:
            penalty = (delta.abs() - per_example(tau, x)).clamp_min(0).flatten(1).sum(1)
        opt.zero_grad()
        (penalty + const * _f(z, y, targeted, kappa)).sum().backward()
        opt.step()
    return found, out


def _iterated(model, x, y, norm, targeted, kappa, tau_decrease, *, c, steps, lr, max_c):
    """The L-inf (shrinking tau) and L0 (shrinking pixel set) loops of the paper, batched."""
    const = torch.full((len(x),), float(c), dtype=x.dtype, device=x.device)
    tau, active = torch.ones_like(const), torch.ones_like(const, dtype=torch.bool)
    allowed = torch.ones_like(x[:, :1], dtype=torch.bool)  # L0: per pixel, all channels
    best = x.clone()  # the last success, from which the next solve of the example starts
    while active.any():
        # a solve runs on the active rows only: one read of their indices per solve, while the
        # bookkeeping after it stays on the device (torch.where over the whole batch)
        i = active.nonzero()[:, 0]
        found, out = _solve(model, x[i], y[i], best[i], const[i], allowed[i],
                            tau[i] if norm == "linf" else None, targeted, kappa, steps, lr)
        won = torch.zeros_like(active).index_copy(0, i, found)
        lost = active & ~won
        best = torch.where(per_example(won, x), best.index_copy(0, i, out), best)
        const = torch.where(lost, const * 2, const)
        active = torch.where(lost, const <= max_c, active)
        if norm == "linf":
            tau = torch.where(won, torch.minimum(tau, flat_norm(best - x, "linf")) * tau_decrease, tau)
            active = torch.where(won, tau >= 1 / 256, active)
        else:  # the pixels of every solved row, kept where the solve succeeded
            fixed = _fix_pixels(model, x[i], y[i], best[i], const[i], allowed[i], targeted, kappa)
            allowed = torch.where(per_example(won, x), allowed.index_copy(0, i, fixed), allowed)
            active = torch.where(won, allowed.flatten(1).any(1), active)
    if norm == "l0":  # undo the tanh round trip's 1e-7 changes wherever the result stays adversarial
        snap = torch.where(((best - x).abs() < 1e-4).all(1, keepdim=True), x, best)
        keep = _fooled(logits_of(model, snap), y, targeted, kappa)
        best = torch.where(per_example(keep, x), snap, best)
    return best


def _fix_pixels(model, x, y, xa, const, allowed, targeted, kappa):
    """The paper's L0 step: drop from `allowed` the pixels whose change helps least."""
    xa = xa.detach().requires_grad_(True)
    loss = flat_norm(xa - x, "l2") ** 2 + const * _f(logits_of(model, xa), y, targeted, kappa)
    (g,) = torch.autograd.grad(loss.sum(), xa)
    with torch.no_grad():
        delta = xa - x
        score = (delta.sum(1).abs() * g.abs().sum(1)).flatten(1)
        changed = (delta.abs() >= 1e-4).any(1).flatten(1).sum(1)
        ok = allowed.flatten(1)
        order = score.masked_fill(~ok, math.inf).argsort(dim=1, stable=True)
        ranked = score.gather(1, order)
        big = (ranked > 0.01) & ok.gather(1, order)
        # in increasing score, up to the first big one, at most ceil(0.3 sqrt(changed)) pixels
        first_big = torch.where(big.any(1), big.float().argmax(1) + 1, ranked.shape[1])
        k = (0.3 * changed.to(x.dtype).sqrt()).ceil().long().clamp_min(1)
        k = torch.minimum(torch.minimum(first_big, k), ok.sum(1))
        drop = torch.arange(ranked.shape[1], device=x.device) < k[:, None]
        removed = torch.zeros_like(ok).scatter(1, order, drop)
    return (ok & ~removed).view_as(allowed)
