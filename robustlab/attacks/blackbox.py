"""Black-box attacks: the model is reached only through a counting query interface, the Oracle.

ZOO (scores, coordinate-wise finite differences), Square (scores, random search) and
HopSkipJump (top label only). Each takes a model or an Oracle, spends at most `max_queries`
model evaluations per example and, with ``return_queries=True``, says how many it used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_eps, check_images, check_positive
from ._base import LOSSES, check_attack_inputs, clip_box, flat_norm, logits_of, margin_loss, per_example

OUTPUTS = ("scores", "label")


class QueryBudgetError(RuntimeError):
    """An example asked the Oracle for more queries than its budget allows."""


class Oracle:
    """Query access to a classifier that returns softmax scores or only the top-1 label.

    A query is one image evaluated. ``oracle(images, idx)`` evaluates ``images`` (B, C, H, W) in
    [0, 1] on behalf of examples ``idx`` (B,) (default 0..B-1), charges one query to each, and
    returns probabilities (B, K) or labels (B,). Counts accumulate per example index in
    ``queries`` until ``reset()``; a call that would take an example past ``budget`` raises
    QueryBudgetError and evaluates nothing. The model runs in eval mode under torch.no_grad(),
    and its mode, parameters and gradients are as they were afterwards.

    Arguments:
        model: the classifier, returning logits (N, K).
        output: "scores" (softmax probabilities) or "label" (the top-1 class only).
        budget: the most queries per example, or None for no limit.
        batch_size: images per forward pass.
    """

    def __init__(self, model: nn.Module, *, output: str = "scores", budget: int | None = None,
                 batch_size: int = 1024):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        self.budget = None if budget is None else check_positive(budget, "budget", integer=True)
        self.batch_size = check_positive(batch_size, "batch_size", integer=True)
        self.model, self.output, self.num_classes = model, output, None
        self._submodules = list(model.modules())  # walked on every query to restore train/eval modes
        self.reset()

    def reset(self) -> None:
        """Forget every query made so far."""
        self.queries = torch.zeros(0, dtype=torch.long)

    def remaining(self, n: int) -> torch.Tensor:
        """Queries examples 0..n-1 may still make (2**62 without a budget)."""
        self._grow(n)
        return (2 ** 62 if self.budget is None else self.budget) - self.queries[:n]

    def _grow(self, n: int) -> None:
        if n > len(self.queries):
            self.queries = torch.cat([self.queries, self.queries.new_zeros(n - len(self.queries))])

    def __call__(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        images = check_images(images, "images")
        idx = torch.arange(len(images)) if idx is None else idx.cpu().long()
        if idx.shape != (len(images),):
            raise ValueError(f"idx must have shape ({len(images)},), got {tuple(idx.shape)}")
        self._grow(int(idx.max()) + 1)
        charge = torch.bincount(idx, minlength=len(self.queries))
        over = self.queries + charge > (math.inf if self.budget is None else self.budget)
        if over.any():
            raise QueryBudgetError(f"query budget of {self.budget} per example exceeded for "
                                   f"example(s) {over.nonzero()[:10, 0].tolist()}")
        self.queries += charge
        modes = [m.training for m in self._submodules]
        if any(modes):  # most callers hand over a model already in eval mode: skip the walk
            self.model.eval()
        try:
            with torch.no_grad():
                z = torch.cat([logits_of(self.model, b) for b in images.split(self.batch_size)])
        finally:
            if any(modes):
                for m, mode in zip(self._submodules, modes):
                    m.training = mode
        self.num_classes = z.shape[1]
        return z.softmax(1) if self.output == "scores" else z.argmax(1)


def as_oracle(model: nn.Module | Oracle, output: str, max_queries: int) -> Oracle:
    """The caller's Oracle, or a fresh one over `model` with budget `max_queries`."""
    check_positive(max_queries, "max_queries", integer=True)
    if not isinstance(model, Oracle):
        return Oracle(model, output=output, budget=max_queries)
    if output == "scores" and model.output != "scores":
        raise ValueError("this attack needs confidence scores: pass an Oracle with output='scores'")
    return model


class QueryLedger:
    """What one attack call has spent, and may still spend, per example of its batch `x`."""

    def __init__(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, max_queries: int):
        n = len(x)
        self.oracle, self.y, self.device, self.shape = oracle, y, x.device, x.shape[1:]
        self.checked = False
        self.allowed = oracle.remaining(n).clamp(max=max_queries)
        self.start = oracle.queries[:n].clone()

    def used(self) -> torch.Tensor:
        return (self.oracle.queries[:len(self.start)] - self.start).to(self.device)

    def left(self) -> torch.Tensor:
        return self.allowed.to(self.device) - self.used()

    def ask(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The Oracle's answer on `images`, charged to examples `idx`."""
        out = self.oracle(images, idx)
        if not self.checked:  # once: the number of classes is known from the first answer
            if self.y.max() >= self.oracle.num_classes:
                raise ValueError(f"y holds label {self.y.max().item()} but the model has only "
                                 f"{self.oracle.num_classes} classes")
            self.checked = True
        return out

    def fooled(self, images: torch.Tensor, idx: torch.Tensor, targeted: bool) -> torch.Tensor:
        """phi(x') of HopSkipJump: is the label of each image wrong (or the target)?"""
        out = self.ask(images, idx)
        return is_fooled(out if out.dim() == 1 else out.argmax(1), self.y[idx], targeted)

    def result(self, x_adv: torch.Tensor, return_queries: bool):
        return (x_adv, self.used()) if return_queries else x_adv


def is_fooled(pred: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    return pred == y if targeted else pred != y


def _log(p: torch.Tensor) -> torch.Tensor:
    return p.double().clamp_min(1e-300).log()


# ----------------------------------------------------------------------------------------- ZOO

def _zoo_probe(ledger, x0, xk, idx, i, h, c, kappa, targeted):
    """g(x) = ||x - x0||^2 + c f(x, t) at xk and at xk +- h e_i for coordinates i (A, b), the
    probes up and down along each, and whether xk is adversarial: 2b + 1 queries an example.

    At the box's faces the quotient is one-sided, over the part of [x - h, x + h] inside it.
    """
    a, b = i.shape
    rows, j = torch.arange(a, device=i.device)[:, None], torch.arange(b, device=i.device)
    up, down = (xk[rows, i] + h).clamp(max=1), (xk[rows, i] - h).clamp(min=0)
    probes = xk[:, None].repeat(1, 2 * b + 1, 1)  # xk, then xk + h e_i, then xk - h e_i
    probes[rows, 1 + j, i], probes[rows, 1 + b + j, i] = up, down
    y = ledger.y[idx].repeat_interleave(2 * b + 1)
    logp = _log(ledger.ask(probes.view(-1, *ledger.shape), idx.repeat_interleave(2 * b + 1)))
    f = (-margin_loss(logp, y, targeted)).clamp_min(-kappa).view(a, -1)
    won = is_fooled(logp.view(a, 2 * b + 1, -1)[:, 0].argmax(1), ledger.y[idx], targeted)
    return ((probes.double() - x0[:, None]) ** 2).sum(2) + c * f, up, down, won


@torch.no_grad()
def zoo(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False,
        c: float = 1.0, kappa: float = 0.0, h: float = 1e-4, lr: float = 0.01,
        coords_per_step: int = 128, max_queries: int = 10_000, solver: str = "adam",
        beta1: float = 0.9, beta2: float = 0.999, generator: torch.Generator | None = None,
        return_queries: bool = False):
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
    Returns the least-distorted adversarial iterate of each example, or x where none was found.

    Arguments:
        c: weight of the attack loss (the paper tunes it by bisection; here it is fixed).
        kappa: confidence margin; h: finite-difference step; lr: the step size eta.
        solver: "adam" or "newton"; beta1, beta2: ADAM's moment decays.
        max_queries: budget per example; generator: draws the coordinates.
    """
    oracle = as_oracle(model, "scores", max_queries)
    x, y, _, _ = check_attack_inputs(oracle.model, x, y)
    c, kappa = check_eps(c, "c"), check_eps(kappa, "kappa")
    for value, name in ((h, "h"), (lr, "lr")):
        check_positive(value, name)
    check_positive(coords_per_step, "coords_per_step", integer=True)
    if solver not in ("adam", "newton"):
        raise ValueError(f"solver must be 'adam' or 'newton', got {solver!r}")
    n, d = len(x), x[0].numel()
    b = min(coords_per_step, d)
    if max_queries < 2 * b + 1:  # not one step could run: the call would silently do nothing
        raise ValueError(f"max_queries must be at least 2 * coords_per_step + 1 = {2 * b + 1} "
                         f"(one ZOO step), got {max_queries}")
    ledger = QueryLedger(oracle, x, y, max_queries)
    x0 = x.flatten(1)
    xk, m, v, t = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), torch.zeros_like(x0)
    best, best_dist = x0.clone(), torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    while len(act := ((ledger.left() >= 2 * b + 1) & (best_dist > 0)).nonzero()[:, 0]):
        ai, i = act[:, None], torch.rand(len(act), d, generator=generator).argsort(1)[:, :b].to(x.device)
        g, up, down, won = _zoo_probe(ledger, x0[act], xk[act], act, i, h, c, kappa, targeted)
        dist = (xk[act] - x0[act]).pow(2).sum(1)
        better = won & (dist < best_dist[act])
        best[act[better]], best_dist[act[better]] = xk[act[better]], dist[better]
        grad = ((g[:, 1:b + 1] - g[:, b + 1:]) / (up - down)).to(x.dtype)
        if solver == "adam":
            t[ai, i] += 1
            m[ai, i] = beta1 * m[ai, i] + (1 - beta1) * grad
            v[ai, i] = beta2 * v[ai, i] + (1 - beta2) * grad ** 2
            m_hat, v_hat = m[ai, i] / (1 - beta1 ** t[ai, i]), v[ai, i] / (1 - beta2 ** t[ai, i])
            step = -lr * m_hat / (v_hat.sqrt() + 1e-8)
        else:  # the curvature formula needs both probes h away, so inside the box; else eta g
            curv = ((g[:, 1:b + 1] - 2 * g[:, :1] + g[:, b + 1:]) / h ** 2).to(x.dtype)
            newton = (curv > 0) & (down > 0) & (up < 1)
            step = torch.where(newton, -lr * grad / curv, -lr * grad)
        xk[ai, i] = (xk[ai, i] + step).clamp(0, 1)
    return ledger.result(best.view_as(x), return_queries)


# -------------------------------------------------------------------------------------- Square

def _p_schedule(p_init: float, i: int, n_iters: int) -> float:
    """p halves at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10000, rescaled."""
    i = int(i / n_iters * 10_000)
    return p_init / 2 ** sum(i > k for k in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def _signs(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(like)


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
    return d.T if torch.rand(1, generator=generator).item() < 0.5 else d


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


def _linf_square(x: torch.Tensor, delta: torch.Tensor, eps: float, p: float, generator) -> torch.Tensor:
    """Algorithm 2: one random s x s window per image set to +-eps per channel."""
    n, c, h, w = x.shape
    s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1)
    r = torch.randint(0, h - s + 1, (n, 1, 1, 1), generator=generator).to(x.device)
    q = torch.randint(0, w - s + 1, (n, 1, 1, 1), generator=generator).to(x.device)
    rows, cols = torch.arange(h, device=x.device)[:, None], torch.arange(w, device=x.device)
    win = (rows >= r) & (rows < r + s) & (cols >= q) & (cols < q + s)
    # A window the box leaves unchanged would waste a query; the authors redraw its signs until
    # it moves. Flipping every sign always moves it (x - eps and x + eps cannot clip to the same
    # value inside [0, 1]), so one flip replaces the redraw loop.
    signs = eps * _signs((n, c, 1, 1), generator, x)
    new = torch.where(win, signs, delta)
    still = (((x + new).clamp(0, 1) - (x + delta)) * win).abs().flatten(1).sum(1) < 1e-7
    return torch.where(win & still.view(n, 1, 1, 1), -signs, new)


def _l2_square(x: torch.Tensor, delta: torch.Tensor, eps: float, p: float, generator) -> torch.Tensor:
    """Algorithm 3: move the mass of windows W1 and W2 into W1, plus a new pattern, at norm eps.

    As in the authors' code, the two windows are shared by the batch at each iteration.
    """
    n, c, h, w = x.shape
    s = max(round(math.sqrt(p * h * w)), 3)
    s = min(s + (s % 2 == 0), min(h, w) - 1)
    (r1, q1, r2, q2) = (torch.randint(0, k - s + 1, (1,), generator=generator).item()
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
    return out / flat_norm(out, "l2").clamp_min(1e-12).view(-1, 1, 1, 1) * eps


@torch.no_grad()
def square(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           norm: str = "linf", max_queries: int = 5000, p_init: float = 0.8, targeted: bool = False,
           loss: str = "margin", generator: torch.Generator | None = None, return_queries: bool = False):
    """Square Attack: random search over square-shaped updates at the corners of the eps-ball.

    Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search" (ECCV 2020), Algorithm 1. From a vertical-stripe
    (L-inf) or patch-grid (L2) start, each iteration proposes a new square of side
    s = round(sqrt(p h w)) (L-inf: values +-eps per channel, Algorithm 2; L2: Algorithm 3) and
    keeps it when the loss L(f(x'), y) drops. L is the margin log F_y - max_{k!=y} log F_k
    (= the logit margin) or log F_y ("ce"); targeted: max_{k!=t} log F_k - log F_t or -log F_t.
    p starts at `p_init` and halves on the paper's schedule; an example stops when fooled.

    Arguments:
        eps: radius of the ball; norm: "linf" or "l2"; max_queries: budget per example.
        p_init: initial fraction of pixels changed; loss: "margin" or "ce".
        generator: drives the random search.
    """
    oracle = as_oracle(model, "scores", max_queries)
    x, y, eps, norm = check_attack_inputs(oracle.model, x, y, eps=eps, norm=norm)
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
    ledger = QueryLedger(oracle, x, y, max_queries)

    def judge(images, idx):  # (loss to minimise, fooled)
        logp = _log(ledger.ask(images, idx))
        return -LOSSES[loss](logp, y[idx], targeted), is_fooled(logp.argmax(1), y[idx], targeted)

    start = (_linf_init if norm == "linf" else _l2_init)(x, eps, generator)
    x_best, done = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    cur = torch.full((len(x),), torch.inf, dtype=torch.float64, device=x.device)
    if len(idx := (ledger.left() >= 1).nonzero()[:, 0]):  # a spent Oracle may leave some nothing
        x_best[idx] = x[idx] + clip_box(x[idx], start[idx])
        cur[idx], done[idx] = judge(x_best[idx], idx)
    for i in range(max_queries - 1):
        act = (~done & (ledger.left() >= 1)).nonzero()[:, 0]
        if not len(act):
            break
        update = _linf_square if norm == "linf" else _l2_square
        xa = x[act]
        new = update(xa, x_best[act] - xa, eps, _p_schedule(p_init, i, max_queries), generator)
        cand = xa + clip_box(xa, new)
        val, won = judge(cand, act)
        keep = (val < cur[act]) | won
        x_best[act[keep]], cur[act[keep]], done[act[keep]] = cand[keep], val[keep], won[keep]
    return ledger.result(x_best, return_queries)


# -------------------------------------------------------------------------------- HopSkipJump

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
        cand = torch.rand(x[todo].shape, generator=generator).to(x)
        ok = ledger.fooled(cand, todo, targeted)
        noise[todo[ok]], found[todo[ok]] = cand[ok], True
    k = (from_noise & found).nonzero()[:, 0]
    adv[k] = _bisect(ledger, x[k], noise[k], k, 1e-3, "l2", targeted)
    return adv, found


def _boundary_normal(ledger, b, idx, delta, evals, norm, targeted, generator) -> torch.Tensor:
    """Monte-Carlo estimate of the unit normal of the boundary at b (paper eq. 9 with the
    baseline of eq. 16): mean of (phi(b + delta u) - mean phi) u over random unit u."""
    shape = (len(b), evals, *b.shape[1:])
    if norm == "l2":
        u = torch.randn(shape, generator=generator)
    else:
        u = torch.rand(shape, generator=generator) * 2 - 1
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
                  generator: torch.Generator | None = None, return_queries: bool = False):
    """HopSkipJumpAttack: a minimum-distortion attack that sees only the top-1 label.

    Chen, Jordan and Wainwright, "HopSkipJumpAttack: a query-efficient decision-based attack"
    (IEEE S&P 2020), Algorithm 2. From an adversarial start (uniform noise, or `x_init` when
    targeted) bisected toward x, each iteration t: estimates the boundary normal at the current
    boundary point x_t by eq. 9 from B_t = init_evals sqrt(t) probes at radius delta_t =
    sqrt(d) theta ||x_t - x||_2 (L2) or d theta ||x_t - x||_inf (L-inf), 0.1 at t = 1, with
    theta = gamma / d^{3/2} (L2) or gamma / d^2 (L-inf); steps along it (its sign for L-inf) by
    xi_t = ||x_t - x|| / sqrt(t), halved until adversarial; and bisects back to the boundary.
    Returns the least-distorted adversarial point of each example, or x where none was found.

    Arguments:
        norm: "l2" or "linf"; max_queries: budget per example; steps: iterations at most.
        x_init: adversarial starting images (required when targeted).
        gamma, init_evals, max_evals: the paper's constants; generator: draws noise and probes.
    """
    oracle = as_oracle(model, "label", max_queries)
    x, y, _, norm = check_attack_inputs(oracle.model, x, y, norm=norm)
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
        best[better], best_dist[better] = adv[better], dist[better]
    return ledger.result(best, return_queries)
