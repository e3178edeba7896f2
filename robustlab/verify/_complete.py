"""What the complete verifiers share (milp, min_distortion, reluplex, branch_and_bound): argument
checks, the float64 copy of the network they solve, per-neuron bounds, and the re-check that a
solver's point really is misclassified by the model."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_choice, check_images, check_labels, check_norm, check_positive
from .._model import check_model, check_model_input, frozen, plain, predict
from ._bounds import Ball
from .crown import crown_bounds
from .interval import interval_bounds
from .network import MaxPool, Network, read_network
from .types import Verdict

TOL = 1e-6  # a margin within TOL of 0 is not decided (HiGHS' feasibility tolerance is 1e-7)


def each_example(x: torch.Tensor, wrong: torch.Tensor, start: float,
                 solve: Callable[[int, float], Verdict]) -> list[Verdict]:
    """One Verdict per example: ``solve(i, t0)`` where the model classifies x[i] right, and
    falsified by x[i] itself where it does not. Each verdict's seconds include an even share of
    the set-up since `start` (the bounds are computed for the whole batch at once)."""
    shared = (time.perf_counter() - start) / max(len(x), 1)
    verdicts = []
    for i in range(len(x)):
        t0 = time.perf_counter() - shared
        if wrong[i]:
            verdicts.append(Verdict("falsified", x[i].clone(), reason="the model misclassifies x itself",
                                    seconds=time.perf_counter() - t0))
        else:
            verdicts.append(solve(i, t0))
    return verdicts


def setup(model: nn.Module, x, y, norm, time_limit, bounds, who: str):
    """Checked arguments of a complete verifier: (x, y, norm, time_limit, float64 network on
    the CPU, number of classes, which examples the model misclassifies already (N,) bool)."""
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
    net64 = read_network(copy.deepcopy(model).to("cpu", torch.float64).eval(), x.shape[1:],
                         like=torch.zeros((), dtype=torch.float64))
    k = net64.out_shape[0]
    if y.numel() and int(y.max()) >= k:
        raise ValueError(f"y holds labels outside [0, {k}): range [{int(y.min())}, {int(y.max())}]")
    wrong = (predict(model, x).argmax(1) != y).cpu()
    return x, y.cpu(), norm, time_limit, net64, k, wrong


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
    shrinking towards x, which keeps the box)."""
    def project(p):
        d = p - x
        if norm == "linf":
            d = d.clamp(-eps, eps)
        elif d.abs().sum() > eps:
            d = d * (eps / d.abs().sum())
        return (x + d).clamp(0, 1)
    return project


def recheck(model: nn.Module, x: torch.Tensor, y: int, j: int, cand: torch.Tensor,
            project: Callable[[torch.Tensor], torch.Tensor], scale: float) -> torch.Tensor | None:
    """A point near `cand` (in x's dtype, through `project`) that the model misclassifies, or None.

    A solver's point sits on the decision boundary z_j = z_y up to its tolerances, so the model
    may still say y there in its own precision: the point is tried, then pushed a little further
    along the ray from x (x + (1 + s)(cand - x)), then along the sign of the gradient of
    z_j - z_y in steps of `scale` times 1e-6 ... 1e-3."""
    cand = cand.to(x)
    for s in (0.0, 1e-6, 1e-5, 1e-4, 1e-3):
        p = project(x + (1 + s) * (cand - x))
        if predict(model, p[None]).argmax(1).item() != y:
            return p
    p = project(cand)
    for step in (1e-6, 1e-5, 1e-4, 1e-3):
        with frozen(model):
            q = p.clone().requires_grad_(True)
            z = model(q[None])[0]
            (g,) = torch.autograd.grad(z[j] - z[y], q)
        p = project(p + step * scale * g.sign())
        if predict(model, p[None]).argmax(1).item() != y:
            return p
    return None


def confirm(model: nn.Module, net: Network, x: torch.Tensor, y: int, j: int, point: torch.Tensor,
            eps: float, norm: str) -> torch.Tensor | None:
    """An LP's point (of the relaxation, not always a real one) as a counterexample in the ball:
    `recheck`ed on the model only where the float64 network puts it at or past the boundary of
    class j or of any class (most relaxed points are not, and the model's forward costs more)."""
    with torch.no_grad():
        z = net(point[None].double())[0]
    if (z[j] - z[y]).item() < -TOL and z.argmax().item() == y:
        return None
    return recheck(model, x, y, j, point, into_ball(x, eps, norm), max(eps, 1e-3))
