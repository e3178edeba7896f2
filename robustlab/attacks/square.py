"""Square Attack: score-based random search over square-shaped updates at the ball's corners."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice, check_in_range
from .._random import draw_device
from ..losses import LOSSES, is_fooled
from ..norms import flat_norm, per_example
from .oracle import Oracle, QueryLedger, as_oracle, log_scores


def _p_schedule(p_init: float, i: int, n_iters: int) -> float:
    """p halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000, rescaled."""
    i = int(i / n_iters * 10_000)
    return p_init / 2 ** sum(i > k for k in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def _signs(shape, generator, like: torch.Tensor) -> torch.Tensor:
    dev = draw_device(generator, like.device)
    return (torch.randint(0, 2, shape, generator=generator, device=dev) * 2 - 1).to(like)


def _rings(a: int, b: int) -> torch.Tensor:
    """Concentric rectangles around the centre of an a x b patch, ring k weighted sum_{j>=k} 1/(j+1)^2."""
    k = torch.maximum((torch.arange(a) - a // 2).abs()[:, None], (torch.arange(b) - b // 2).abs())
    tail = (1 / torch.arange(1, max(a, b) // 2 + 2) ** 2).flip(0).cumsum(0).flip(0)
    d = tail[k]
    return d / d.norm().clamp_min(1e-12)


def _square_pattern(s: int, generator) -> torch.Tensor:
    """The L2 update's s x s patch: +rings on one half, -rings on the other, unit norm."""
    d = torch.cat([_rings(s // 2, s), -_rings(s - s // 2, s)])
    d = d / d.norm()
    return d.T if torch.rand(1, generator=generator, device=draw_device(generator)).item() < 0.5 else d


def _linf_init(x: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """Vertical stripes: one random +-eps per column and channel."""
    return eps * _signs((len(x), x.shape[1], 1, x.shape[3]), generator, x).expand_as(x)


def _l2_init(x: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """A grid of s x s patches of the L2 pattern with random signs, scaled to norm eps."""
    n, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    delta = torch.zeros_like(x)
    for r in range(max(h - 5 * s, 0) // 2, h - s + 1, s):
        for q in range(max(w - 5 * s, 0) // 2, w - s + 1, s):
            patch = _square_pattern(s, generator).to(x)
            delta[:, :, r:r + s, q:q + s] += patch * _signs((n, c, 1, 1), generator, x)
    return delta / flat_norm(delta, "l2").clamp_min(1e-12).view(-1, 1, 1, 1) * eps


def _linf_square(x: torch.Tensor, x_cur: torch.Tensor, eps: float, p: float,
                 generator) -> torch.Tensor:
    """Algorithm 2: the candidate with one random s x s window per image set to x +- eps per channel."""
    n, c, h, w = x.shape
    s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1)
    dev = draw_device(generator, x.device)
    r = torch.randint(0, h - s + 1, (n, 1, 1, 1), generator=generator, device=dev).to(x.device)
    q = torch.randint(0, w - s + 1, (n, 1, 1, 1), generator=generator, device=dev).to(x.device)
    rows, cols = torch.arange(h, device=x.device)[:, None], torch.arange(w, device=x.device)
    win = ((rows >= r) & (rows < r + s)) & ((cols >= q) & (cols < q + s))
    # A window the box leaves unchanged would waste a query; the authors redraw its signs until
    # it moves. Flipping every sign always moves it (x - eps and x + eps cannot clip to the same
    # value inside [0, 1]), so one flip replaces the redraw loop.
    signs = eps * _signs((n, c, 1, 1), generator, x)
    moved = ((x + signs).clamp(0, 1).ne(x_cur) & win).flatten(1).any(1)
    signs = torch.where(moved.view(n, 1, 1, 1), signs, -signs)
    return torch.where(win, (x + signs).clamp(0, 1), x_cur)


def _l2_square(x: torch.Tensor, x_cur: torch.Tensor, eps: float, p: float,
               generator) -> torch.Tensor:
    """Algorithm 3: move the mass of windows W1 and W2 into W1, plus a new pattern, at norm eps.

    As in the authors' code, the two windows are shared by the batch at each iteration.
    """
    n, c, h, w = x.shape
    delta = x_cur - x
    s = max(round(math.sqrt(p * h * w)), 3)
    s = min(s + (s % 2 == 0), min(h, w) - 1)
    dev = draw_device(generator)  # four scalars: drawn where the generator is, read on the host
    (r1, q1, r2, q2) = (torch.randint(0, k - s + 1, (1,), generator=generator, device=dev).item()
                        for k in (h, w, h, w))
    w1, w2 = (..., slice(r1, r1 + s), slice(q1, q1 + s)), (..., slice(r2, r2 + s), slice(q2, q2 + s))
    both = torch.zeros(h, w, dtype=x.dtype, device=x.device)
    both[w1], both[w2] = 1, 1
    room = ((eps ** 2 - flat_norm(delta, "l2") ** 2).clamp_min(0) / c).view(n, 1, 1, 1)
    room = room + (delta * both).pow(2).sum((2, 3), keepdim=True)
    old = delta[w1] / (delta[w1].pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-10)
    new = _square_pattern(s, generator).to(x) * _signs((n, c, 1, 1), generator, x) + old
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room.sqrt()
    out = delta.clone()
    out[w2], out[w1] = 0, new
    return (x + out / flat_norm(out, "l2").clamp_min(1e-12).view(-1, 1, 1, 1) * eps).clamp(0, 1)


@torch.no_grad()
def square(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", max_queries: int = 5000, p_init: float = 0.8, targeted: bool = False,
           loss: str = "margin",
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack: random search over square-shaped updates at the corners of the eps-ball.

    Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search" (ECCV 2020), Algorithm 1. From a vertical-stripe
    (L-inf) or patch-grid (L2) start, each iteration proposes a new square of side
    s = round(sqrt(p h w)) (L-inf: values +-eps per channel, Algorithm 2; L2: Algorithm 3) and
    keeps it when the loss L(f(x'), y) drops. L is the margin log F_y - max_{k!=y} log F_k
    (= the logit margin) or log F_y ("ce"); targeted: max_{k!=t} log F_k - log F_t or -log F_t.
    p starts at `p_init` and halves on the paper's schedule; an example stops when fooled.

    Returns ``(x_adv, queries)``: the point of least loss found for each example (one that
    fools the model wherever the attack succeeded) and the queries (N,) long each example cost
    in this call.

    Arguments:
        eps: radius of the ball; norm: "linf" or "l2"; max_queries: budget per example.
        p_init: initial fraction of pixels changed; loss: "margin" or "ce".
        generator: drives the random search.
    """
    oracle = as_oracle(model, "scores", max_queries)
    x, y, eps, norm = oracle.check_inputs(x, y, eps=eps, norm=norm)
    check_in_range(p_init, "p_init", 0, 1, low_open=True)
    check_choice(loss, ("margin", "ce"), "loss")
    ledger = QueryLedger(oracle, x, y, max_queries)

    def judge(images, idx):  # (loss to minimise, fooled)
        logp = log_scores(ledger.ask(images, idx))
        return -LOSSES[loss](logp, y[idx], targeted), is_fooled(logp.argmax(1), y[idx], targeted)

    start = (_linf_init if norm == "linf" else _l2_init)(x, eps, generator)
    x_best, done = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    cur = torch.full((len(x),), torch.inf, dtype=torch.float64, device=x.device)
    if len(idx := (ledger.left() >= 1).nonzero()[:, 0]):  # a spent Oracle may leave some nothing
        x_best[idx] = (x[idx] + start[idx]).clamp(0, 1)
        cur[idx], done[idx] = judge(x_best[idx], idx)
    update = _linf_square if norm == "linf" else _l2_square
    for i in range(max_queries - 1):
        act = (~done & (ledger.left() >= 1)).nonzero()[:, 0]
        if not len(act):
            break
        x_cur, cur_act = x_best[act], cur[act]
        cand = update(x[act], x_cur, eps, _p_schedule(p_init, i, max_queries), generator)
        val, won = judge(cand, act)
        keep = (val < cur_act) | won
        # torch.where on the active rows: a boolean index would sync with the GPU each query.
        # done[act] is False on every active row, so it becomes `won`.
        x_best[act] = torch.where(per_example(keep, cand), cand, x_cur)
        cur[act], done[act] = torch.where(keep, val, cur_act), won
    return ledger.result(x_best)
