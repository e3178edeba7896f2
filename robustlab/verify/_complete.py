"""What the complete verifiers share (milp, min_distortion, reluplex, branch_and_bound): argument
checks, the float64 copy of the network they solve, per-neuron bounds, and the `Referee` that
holds their verdicts to the model as it runs, rounding included.

They solve the network in real arithmetic; the model runs in its own dtype. So "verified" needs
every margin z_y - z_j proved above `Referee.need`, the model's rounding bound over the ball
plus TOL, and a counterexample is kept only when its real margin z_j - z_y beats the rounding
bound at that point: then every float evaluation of it, alone or in any batch, in any summation
order, misclassifies it (ties never count). Between the two the answer is "unknown".

The float64 copy lives on the CPU on purpose, whatever the input's device: the LPs and MILPs
are solved by HiGHS (scipy) on the CPU, and the Referee checks one point at a time. Only
branch_and_bound's CROWN bounding, a batched tensor computation, runs on the input's device."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_norm, check_positive
from .._model import check_model, check_model_input, frozen, plain, predict
from ._bounds import Ball
from .crown import crown_bounds
from .interval import interval_bounds
from .network import MaxPool, Network
from .rounding import as_float64, read_exact, rounding_bound
from .types import Verdict

TOL = 1e-6  # a margin within TOL of 0 is not decided (HiGHS' feasibility tolerance is 1e-7)


@dataclass
class Referee:
    """The model, its network read in float64 (`net`) and its unit roundoff `u`: what a verdict
    is held to."""

    model: nn.Module
    net: Network
    u: float

    def rounding(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """(N, K) bound on the model's rounding error of each logit over the box."""
        return rounding_bound(self.net, lower, upper, self.u)

    def need(self, x64: torch.Tensor, eps: float, y: torch.Tensor, tol: float = TOL) -> torch.Tensor:
        """(N, K-1): the margin z_y - z_j (j != y, in order) that proves class j never wins over
        the ball in the model's arithmetic: E_y + E_j + tol, E the rounding bound over the ball
        and tol the solver's own tolerance."""
        e = self.rounding((x64 - eps).clamp(0, 1), (x64 + eps).clamp(0, 1))
        k = e.shape[1]
        others = torch.arange(k)[None, :] != y[:, None]
        return (e.gather(1, y[:, None]) + e)[others].view(len(y), k - 1) + tol

    def margin(self, p: torch.Tensor, y: int) -> tuple[float, int]:
        """(max over j != y of z_j - z_y - E_y - E_j at the point p (C, H, W), that j): > 0 when
        every float evaluation of the model puts some class above y."""
        p64 = p.detach().cpu().double()[None]
        with torch.no_grad():
            z = self.net(p64)[0].cpu()
        e = self.rounding(p64, p64)[0].cpu()
        m = z - z[y] - e - e[y]
        m[y] = -torch.inf
        return m.max().item(), int(m.argmax())

    def fooled(self, p: torch.Tensor, y: int) -> bool:
        """Whether the model misclassifies p beyond rounding: by margin, and as seen alone and in
        a batch beside other inputs."""
        if self.margin(p, y)[0] <= 0:
            return False
        batch = torch.stack([p, p.flip(-1), p.roll(1, -1), p])
        return bool((predict(self.model, p[None]).argmax(1) != y).all()
                    and (predict(self.model, batch)[[0, 3]].argmax(1) != y).all())

    def verdict(self, p: torch.Tensor, y: int, why: str, start: float) -> Verdict:
        """A falsified Verdict for the point p (already `fooled`), its margin stated."""
        m, j = self.margin(p, y)
        return Verdict("falsified", p, reason=f"{why}; the model gives class {j}, z_{j} - z_y exceeds "
                       f"the rounding bound by {m:.3g}", seconds=time.perf_counter() - start)


def each_example(x: torch.Tensor, y: torch.Tensor, wrong: torch.Tensor, start: float, referee: Referee,
                 solve: Callable[[int, float], Verdict]) -> list[Verdict]:
    """One Verdict per example: ``solve(i, t0)`` where the model classifies x[i] right, and
    falsified by x[i] itself where it misclassifies it beyond rounding. Each verdict's seconds
    include an even share of the set-up since `start` (the bounds are computed for the whole
    batch at once)."""
    shared = (time.perf_counter() - start) / max(len(x), 1)
    verdicts = []
    for i in range(len(x)):
        t0 = time.perf_counter() - shared
        if wrong[i] and referee.fooled(x[i], int(y[i])):
            verdicts.append(referee.verdict(x[i].clone(), int(y[i]), "the model misclassifies x itself", t0))
        else:
            verdicts.append(solve(i, t0))
    return verdicts


def setup(model: nn.Module, x, y, norm, time_limit, bounds, who: str, eps: float | None):
    """Checked arguments of a complete verifier: (x, y, norm, time_limit, Referee (its float64
    network on the CPU, checked against the model over the eps-ball's box, or all of [0, 1] when
    eps is None), number of classes, which examples the model misclassifies (N,) bool)."""
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    y = check_labels(y, x)
    norm = check_norm(norm, ("linf", "l1", "l2"))
    if norm == "l2":
        raise ValueError(f"norm='l2' is not supported by {who}: the L2 ball is not a linear "
                         "constraint; use norm='linf' or norm='l1'")
    check_choice(bounds, ("interval", "crown"), "bounds")
    time_limit = float(check_positive(time_limit, "time_limit"))
    lower, upper = (x * 0, x * 0 + 1) if eps is None else ((x - eps).clamp(0, 1), (x + eps).clamp(0, 1))
    net, u = read_exact(model, lower.detach(), upper.detach())
    net64 = as_float64(net, "cpu")
    k = net64.out_shape[0]
    if k < 2:
        raise ValueError(f"model returns {k} logit per input; {who} checks that class y beats every "
                         "other class and needs at least 2 (give a binary classifier the logits (-z, z))")
    if y.numel() and int(y.max()) >= k:
        raise ValueError(f"y holds labels outside [0, {k}): range [{int(y.min())}, {int(y.max())}]")
    wrong = (predict(model, x).argmax(1) != y).cpu()
    return x, y.cpu(), norm, time_limit, Referee(model, net64, u), k, wrong



def relu_only(net: Network, who: str) -> None:
    """Refuse max pooling, naming it: `who` splits ReLU phases only."""
    for i, layer in enumerate(net.layers):
        if isinstance(layer, MaxPool):
            raise ValueError(f"model: {who} splits ReLU phases and cannot split the MaxPool2d at "
                             f"position {i} of the chain; use milp, which encodes max pooling")


def neuron_bounds(net: Network, ball: Ball, C: torch.Tensor, which: str):
    """Per-neuron bounds on the input of every nonlinear layer and lower bounds (N, S) on
    C @ logits: intervals, then (which="crown") intersected with CROWN's."""
    pre, spec = interval_bounds(net, ball, C)
    pre, spec_lo = [(b.lower, b.upper) for b in pre], spec.lower
    if which == "crown":
        pre_c, (lo_c, _) = crown_bounds(net, ball, C)
        pre = [(torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])) for a, b in zip(pre, pre_c)]
        spec_lo = torch.maximum(spec_lo, lo_c)
    return pre, spec_lo


def into_ball(x: torch.Tensor, eps: float, norm: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Moves a point into the `norm` ball of radius eps around x and into [0, 1] (L1 by
    shrinking towards x, which keeps the box). The distance is measured exactly (float64) after
    the point is rounded to x's dtype, and the step shrunk until it is within eps: rounding
    x + d may otherwise land just outside."""
    def project(p):
        d = p - x
        if norm == "linf":
            d = d.clamp(-eps, eps)
        elif d.abs().sum() > eps:
            d = d * (eps / d.abs().sum())
        for k in range(8):
            q = (x + d * (1 - 1e-6 * (4 ** k - 1))).clamp(0, 1)
            gap = (q.double() - x.double()).abs()
            if (gap.max() if norm == "linf" else gap.sum()) <= eps:
                return q
        return x.clone()
    return project


def recheck(referee: Referee, x: torch.Tensor, y: int, j: int, cand: torch.Tensor,
            project: Callable[[torch.Tensor], torch.Tensor], scale: float) -> torch.Tensor | None:
    """A point near `cand` (in x's dtype, through `project`) that the model misclassifies beyond
    its rounding (`Referee.fooled`), or None.

    A solver's point sits on the decision boundary z_j = z_y up to its tolerances, so the model
    may still say y there in its own precision: the point is tried, then pushed a little further
    along the ray from x (x + (1 + s)(cand - x)), then along the sign of the gradient of
    z_j - z_y in steps of `scale` times 1e-6 ... 1e-3."""
    model, cand = referee.model, cand.to(x)
    for s in (0.0, 1e-6, 1e-5, 1e-4, 1e-3):
        p = project(x + (1 + s) * (cand - x))
        if referee.fooled(p, y):
            return p
    p = project(cand)
    for step in (1e-6, 1e-5, 1e-4, 1e-3):
        with frozen(model):
            q = p.clone().requires_grad_(True)
            z = model(q[None])[0]
            (g,) = torch.autograd.grad(z[j] - z[y], q)
        p = project(p + step * scale * g.sign())
        if referee.fooled(p, y):
            return p
    return None


def confirm(referee: Referee, x: torch.Tensor, y: int, j: int, point: torch.Tensor,
            eps: float, norm: str) -> torch.Tensor | None:
    """An LP's point (of the relaxation, not always a real one) as a counterexample in the ball:
    `recheck`ed on the model only where the float64 network puts it at or past the boundary of
    class j or of any class (most relaxed points are not, and the model's forward costs more)."""
    with torch.no_grad():
        z = referee.net(point[None].double())[0]
    if (z[j] - z[y]).item() < -TOL and z.argmax().item() == y:
        return None
    return recheck(referee, x, y, j, point, into_ball(x, eps, norm), max(eps, 1e-3))
