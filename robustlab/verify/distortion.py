"""The exact minimal adversarial distortion (eq. (6) of the tutorial) under L-inf and L1, by a
mixed-integer linear program whose objective is the radius of the ball."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_positive
from .._model import predict
from ..tables import Tabular, markdown_table
from ._bounds import Ball
from ._complete import neuron_bounds, recheck, setup
from ._encode import encode
from .types import margin_spec

GAP = 1e-6  # HiGHS' relative MIP gap: the optimum is exact to this (its default, 1e-4, is coarse)
ROUNDS = 6  # the first radius tried is max_eps / 2^ROUNDS
SOLVED = 1e-4  # relative gap between distortion and lower bound at which the answer is "optimal"
MARGIN = 1e-5  # how far past the boundary a counterexample is asked for when the optimum is not


@dataclass
class MinDistortion(Tabular):
    """Per example: the minimal distortion found, a proven lower bound on it, and the point.

    Attributes:
        norm: "linf" or "l1".
        labels: the true classes.
        distortion: (N,) float64 on the CPU (the solver's numbers), the smallest ||x' - x||
            over misclassified x' (the MILP's optimum; inf when no adversarial example lies
            within max_eps).
        lower: (N,) float64 on the CPU, a proven lower bound: no x' closer than this is misclassified
            (when the status is "optimal", within SOLVED = 1e-4 of `distortion`, relatively, plus
            the band in which the model's rounding decides the class: see `min_distortion`).
        counterexamples: per example the adversarial input (C, H, W) at that distance (its
            norm within 0.1% of `distortion`), re-checked on the model; None when none.
        targets: the class the model gives the counterexample (None without one).
        status: "optimal", "misclassified" (x itself, distance 0), "beyond max_eps" (no
            adversarial example within max_eps: lower = max_eps) or "unknown" (time ran out,
            or a point could not be confirmed; see notes).
        seconds: time per example; notes: what happened, per example.
    """

    norm: str
    labels: list
    distortion: torch.Tensor
    lower: torch.Tensor
    counterexamples: list
    targets: list
    status: list
    seconds: list
    notes: list

    @property
    def gap(self) -> torch.Tensor:
        """``distortion - lower``, (N,): 0 (up to the solver's gap) when solved exactly."""
        return self.distortion - self.lower

    def table(self) -> str:
        rows = [[i, lab, st, d, lo, d - lo if math.isfinite(d) else None, t, s]
                for i, (lab, st, d, lo, t, s) in enumerate(zip(
                    self.labels, self.status, self.distortion.tolist(), self.lower.tolist(),
                    self.targets, self.seconds))]
        return markdown_table(["example", "label", "status", f"distortion ({self.norm})",
                               "lower bound", "gap", "adversarial class", "seconds"], rows)


def _solve_one(referee, x, y, norm, cap, which, time_limit, start):
    """(distortion, lower bound, counterexample or None, notes) for one correctly classified x.

    The radius starts at cap / 2^ROUNDS and doubles while nothing is reachable within it (each
    round then proves distortion >= radius, mostly from the bounds alone or with small MILPs):
    big-M constants over a small ball are tight, and one over the whole box makes even a tiny
    network's MILP slow. What a finished round proved is kept when a later one runs out of time."""
    net, x64 = referee.net, x.detach().cpu().double()[None]
    k = net.out_shape[0]
    C = margin_spec(torch.tensor([y]), k).double()
    with torch.no_grad():
        logits = net(x64)[0]
    order = sorted((j for j in range(k) if j != y), key=lambda j: (logits[y] - logits[j]).item())
    radius, proved = cap / 2 ** ROUNDS, 0.0
    while True:
        best, adv, lowers, notes, band = _round(referee, x, x64, y, C, order, norm, radius, which,
                                                time_limit, start)
        lower = max(proved, min(lowers + [best]))
        if adv is not None or notes or radius >= cap:
            return best, lower, adv, notes, band
        proved, radius = lower, min(2 * radius, cap)


def _confirm(referee, x, y, j, norm, prog, enc, res, need, left):
    """(point the model misclassifies beyond rounding, its distance from x, whether it came from an
    optimum) from an optimum of class j, or (None, inf, False). The optimum lies on (or, by the
    rounding allowance, just short of) the boundary z_j = z_y, where a touching boundary may leave
    no misclassified point nearby: then the MILP is solved again with z_j - z_y >= need + MARGIN,
    whose point lies past it by more than the model's rounding, a distance at most (need + MARGIN) /
    (the margin's slope) further. The distance is that of the checked point, measured in float64."""
    for attempt in (None, res):
        if attempt is None:
            cols, e, c = enc.logits
            again = prog.fork()
            again.rows_([(cols, (e[j] - e[y])[None])], [c[y] - c[j] + need + MARGIN], [np.inf])
            attempt = again.solve(enc.radius, [1.0], left, gap=GAP)
            if attempt.x is None:
                break
        cand = torch.from_numpy(attempt.x[enc.x]).view_as(x)
        point = recheck(referee, x, y, j, cand, lambda p: p.clamp(0, 1), max(attempt.fun, 1e-3))
        if point is not None:
            gap = (point.double() - x.double()).abs()
            return point, (gap.max() if norm == "linf" else gap.sum()).item(), attempt.status == 0
    return None, math.inf, False


def _round(referee, x, x64, y, C, order, norm, radius, which, time_limit, start):
    """One MILP per other class j within the radius, min r subject to z_j >= z_y, the class
    closest in logits first. After each better point, the bounds are recomputed over the ball
    of that radius (smaller big-M constants, more stable neurons) and later classes need only
    beat it: a class the bounds rule out, or whose MILP is infeasible, within the current
    radius r needs at least r >= the best distance, which is then the answer. A class counts as
    reached once z_j - z_y >= -need_j, the model's rounding bound over the ball: the float model
    may already misclassify there, so the lower bounds hold for it, not only for its copy."""
    net, others = referee.net, sorted(order)
    best, adv, lowers, notes, untried, band = math.inf, None, [], [], [], 0.0
    enc = None
    for j in order:
        if enc is None:  # (re)encode over the current radius
            with torch.no_grad():
                pre, spec_lo = neuron_bounds(net, Ball(x64, radius, norm), C, which)
                need = dict(zip(others, referee.need(x64, radius, torch.tensor([y]), tol=0.0)[0].tolist()))
            pre = [(lo[0].flatten().numpy(), up[0].flatten().numpy()) for lo, up in pre]
            spec_lo = dict(zip(others, spec_lo[0].tolist()))
            enc = encode(net, x64.flatten().numpy(), radius, norm, pre, free=True)
        if spec_lo[j] > need[j]:  # no point within the radius reaches class j
            lowers.append(radius)
            continue
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            lowers.append(0.0)
            untried.append(j)
            continue
        cols, e, c = enc.logits
        prog = enc.prog.fork()
        prog.rows_([(cols, (e[j] - e[y])[None])], [c[y] - c[j] - need[j]], [np.inf])  # z_j - z_y >= -need
        res = prog.solve(enc.radius, [1.0], left, gap=GAP)
        dual = getattr(res, "mip_dual_bound", None)
        dual = float(dual) if dual is not None and np.isfinite(dual) else None
        if res.status == 2:  # infeasible: class j needs more than the radius
            lowers.append(radius)
        elif res.status == 0:  # optimal (an LP, without binaries, has no dual bound: exact)
            lowers.append(max(res.fun if dual is None else dual, 0.0))
        else:
            lowers.append(max(dual or 0.0, 0.0))
            notes.append(f"class {j}: time limit {time_limit:g} s reached with its distance in "
                         f"[{lowers[-1]:.4g}, {res.fun if res.x is not None else math.inf:.4g}]"
                         if res.status == 1 else f"class {j}: HiGHS stopped with status "
                         f"{res.status} ({res.message})")
        if res.x is None or res.fun >= best:
            continue
        point, dist, exact = _confirm(referee, x, y, j, norm, enc.prog, enc, res, need[j], left)
        if point is None:
            notes.append(f"class {j}: the MILP's point at distance {res.fun:.4g} is not "
                         "misclassified beyond the model's rounding")
            continue
        best, adv, band = dist, point, max(dist - lowers[-1], 0.0) if exact else 0.0
        if best < 0.9 * radius:
            radius, enc = best, None
    if untried:
        notes.append(f"time limit {time_limit:g} s reached before classes {untried} were tried")
    return best, adv, lowers, notes, band


def min_distortion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                   max_eps: float | None = None, bounds: str = "crown",
                   time_limit: float = 60.0) -> MinDistortion:
    """The exact minimal adversarial distortion of each (x, y) under L-inf or L1.

    Eq. (6) of the tutorial: min ||x' - x|| subject to x' in [0, 1] and l(f, x') != l(f, x),
    after Tjeng, Xiao and Tedrake, "Evaluating robustness of neural networks with mixed integer
    programming" (ICLR 2019), section 4. The network is the big-M program of eq. (7) (shared with
    `milp`); the radius r is a variable, |x' - x| <= r (L-inf) or sum |x' - x| <= r (L1, with
    auxiliary variables), and the objective is min r. Misclassification is a disjunction over the
    classes j != y: one MILP per class with z_j >= z_y, the smallest optimum over j the answer.
    HiGHS' dual bound gives a proven lower bound when the time runs out.

    Held to the model as it runs: its float logits may differ from the exact ones by up to E
    (`rounding.rounding_bound`), so near the boundary rounding decides the class. The lower
    bound counts class j as reached once z_j - z_y >= -(E_y + E_j): no input closer than it is
    misclassified by the float model, in any batch. The counterexample is the optimum with
    z_j - z_y >= E_y + E_j + MARGIN (pushed further if needed, `recheck`), misclassified by
    every float evaluation; `distortion` is its measured distance. "optimal" means the two
    differ by at most SOLVED relatively plus that band (for a float32 model, about 1e-4 of the
    distance; for float64, nothing visible).

    Arguments:
        model: a chain that `read_network` reads (solved in float64 on a CPU copy, on purpose:
            HiGHS, scipy's MILP solver, runs on the CPU whatever x's device; left as found).
        x: images (N, C, H, W) in [0, 1]; y: labels (N,).
        norm: "linf" or "l1" (the L2 ball is not linear and is refused).
        max_eps: the largest distance searched (a smaller one gives tighter big-M constants and
            a faster solve, e.g. the distance of an attack's point); None searches the whole
            box [0, 1] (radius 1 for L-inf, sum max(x, 1 - x) for L1).
        bounds: "interval" or "crown", the per-neuron bounds of the big-M constants.
        time_limit: seconds per example.
    Returns a MinDistortion (a table when printed).
    """
    start = time.perf_counter()
    if max_eps is not None:
        max_eps = float(check_positive(max_eps, "max_eps"))
    x, yc, norm, time_limit, referee, k, wrong = setup(model, x, y, norm, time_limit, bounds,
                                                       "min_distortion", max_eps)
    shared = (time.perf_counter() - start) / max(len(x), 1)
    out = {name: [] for name in ("distortion", "lower", "counterexamples", "targets", "status",
                                 "seconds", "notes")}
    for i in range(len(x)):
        t0 = time.perf_counter() - shared
        cap = max_eps
        if cap is None:
            cap = 1.0 if norm == "linf" else torch.maximum(x[i], 1 - x[i]).sum().item()
        if wrong[i] and referee.fooled(x[i], int(yc[i])):
            best, lower, adv, notes = 0.0, 0.0, x[i].clone(), ["the model misclassifies x itself"]
            status = "misclassified"
        else:
            best, lower, adv, notes, band = _solve_one(referee, x[i], int(yc[i]), norm, cap, bounds,
                                                       time_limit, t0)
            if adv is not None and best - lower <= SOLVED * best + band + 1e-9:
                status = "optimal"
            elif adv is None and lower >= cap * (1 - 10 * GAP) and not notes:
                status = "beyond max_eps"
            else:
                status = "unknown"
        target = None if adv is None else int(predict(model, adv[None]).argmax(1).item())
        out["distortion"].append(best)
        out["lower"].append(lower)
        out["counterexamples"].append(adv)
        out["targets"].append(target)
        out["status"].append(status)
        out["seconds"].append(time.perf_counter() - t0)
        out["notes"].append("; ".join(notes) if notes else None)
    return MinDistortion(norm, yc.tolist(), torch.tensor(out.pop("distortion"), dtype=torch.float64),
                         torch.tensor(out.pop("lower"), dtype=torch.float64), **out)
