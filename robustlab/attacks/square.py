"""Square Attack: score-based random search over square-shaped updates at the ball's corners."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_choice, check_in_range
from .._random import draw_device
from ..losses import LOSSES, is_fooled
from ..norms import flat_norm, per_example
from .oracle import Oracle, QueryLedger, as_oracle, log_scores, segments


def _p_schedule(p_init: float, i: int, n_iters: int) -> float:
    """p halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000, rescaled."""
    i = int(i / n_iters * 10_000)
    return p_init / 2 ** sum(i > k for k in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def _signs(shape, generator, like: torch.Tensor) -> torch.Tensor:
    dev = draw_device(generator, like.device)
    return (torch.randint(0, 2, shape, generator=generator, device=dev) * 2 - 1).to(like)


def _rings(a: int, b: int, like: torch.Tensor) -> torch.Tensor:
    """Concentric rectangles around the centre of an a x b patch, ring k weighted sum_{j>=k} 1/(j+1)^2,
    made where `like` is (a copy from the CPU at every iteration would make a GPU wait)."""
    i, j = torch.arange(a, device=like.device), torch.arange(b, device=like.device)
    k = torch.maximum((i - a // 2).abs()[:, None], (j - b // 2).abs())
    tail = (1 / torch.arange(1, max(a, b) // 2 + 2, device=like.device, dtype=like.dtype) ** 2)
    tail = tail.flip(0).cumsum(0).flip(0)
    d = tail[k]
    return d / d.norm().clamp_min(1e-12)


def _square_pattern(s: int, generator, like: torch.Tensor) -> torch.Tensor:
    """The L2 update's s x s patch: +rings on one half, -rings on the other, unit norm; a coin
    drawn on the generator's device transposes it, without reading the coin on the host."""
    d = torch.cat([_rings(s // 2, s, like), -_rings(s - s // 2, s, like)])
    d = d / d.norm()
    coin = torch.rand(1, generator=generator, device=draw_device(generator, like.device)).to(like.device)
    return torch.where(coin < 0.5, d.T, d)


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
            patch = _square_pattern(s, generator, x)
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


def _window(h: int, w: int, s: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random s x s window of an h x w image, shared by the batch: its mask (h, w) and, at
    each pixel, the offsets (row, col) inside the window (clamped outside it), drawn on the
    generator's device and never read on the host."""
    dev = draw_device(generator, device)
    r, q = (torch.randint(0, k - s + 1, (1,), generator=generator, device=dev).to(device) for k in (h, w))
    i, j = torch.arange(h, device=device)[:, None] - r, torch.arange(w, device=device) - q
    mask = (i >= 0) & (i < s) & (j >= 0) & (j < s)
    return mask, (i.clamp(0, s - 1), j.clamp(0, s - 1))


def _l2_square(x: torch.Tensor, x_cur: torch.Tensor, eps: float, p: float,
               generator) -> torch.Tensor:
    """Algorithm 3: move the mass of windows W1 and W2 into W1, plus a new pattern, at norm eps.

    As in the authors' code, the two windows are shared by the batch at each iteration. They
    are masks rather than slices, so that their random corners stay on the device.
    """
    n, c, h, w = x.shape
    delta = x_cur - x
    s = max(round(math.sqrt(p * h * w)), 3)
    s = min(s + (s % 2 == 0), min(h, w) - 1)
    w1, (i1, j1) = _window(h, w, s, generator, x.device)
    w2, _ = _window(h, w, s, generator, x.device)
    room = ((eps ** 2 - flat_norm(delta, "l2") ** 2).clamp_min(0) / c).view(n, 1, 1, 1)
    room = room + (delta * (w1 | w2)).pow(2).sum((2, 3), keepdim=True)
    in1 = delta * w1
    old = in1 / (in1.pow(2).sum((2, 3), keepdim=True).sqrt() + 1e-10)
    pattern = _square_pattern(s, generator, x)[i1, j1] * w1  # the s x s pattern placed on W1
    new = pattern * _signs((n, c, 1, 1), generator, x) + old
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room.sqrt()
    out = torch.where(w1, new, torch.where(w2, 0, delta))
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

    def judge(images, rows, live):  # (loss to minimise, fooled); only `live` rows pay
        logp = log_scores(ledger.ask(images, rows, live))
        return -LOSSES[loss](logp, y[rows], targeted), is_fooled(logp.argmax(1), y[rows], targeted)

    start = (_linf_init if norm == "linf" else _l2_init)(x, eps, generator)
    rows = torch.arange(len(x), device=x.device)
    live = ledger.left() >= 1  # a spent Oracle may leave some nothing
    x_best = torch.where(per_example(live, x), (x + start).clamp(0, 1), x)
    cur, done = judge(x_best, rows, live)
    cur, done = torch.where(live, cur, torch.inf), done & live
    update = _linf_square if norm == "linf" else _l2_square
    for part in segments(max_queries - 1):
        # the one host sync of a segment: the rows still working, fixed until the next one
        if not len(act := ledger.active(~done)):
            break
        for i in part:
            live = ~done[act] & (ledger.left()[act] >= 1)
            x_cur, cur_act = x_best[act], cur[act]
            cand = update(x[act], x_cur, eps, _p_schedule(p_init, i, max_queries), generator)
            val, won = judge(cand, act, live)
            keep = live & ((val < cur_act) | won)
            x_best[act] = torch.where(per_example(keep, cand), cand, x_cur)
            cur[act], done[act] = torch.where(keep, val, cur_act), done[act] | (live & won)
    return ledger.result(x_best)
