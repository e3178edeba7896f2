"""Complete verification by mixed-integer linear programming: the big-M encoding of a ReLU (and
max-pooling) network, solved exactly with HiGHS through `scipy.optimize.milp`."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds as VarBounds
from scipy.optimize import LinearConstraint
from scipy.optimize import milp as solve_milp
from torch import nn

from .._checks import check_choice, check_eps, check_images, check_labels, check_norm, check_positive
from .._model import check_model_input, frozen, plain, predict
from ._bounds import Ball, affine_runs
from .crown import crown_bounds
from .interval import interval_bounds
from .network import MaxPool, read_network
from .types import Verdict, margin_spec

TOL = 1e-6  # a margin within TOL of 0 is not decided (HiGHS' feasibility tolerance is 1e-7)


@torch.no_grad()
def _dense(run: list, shape: tuple):
    """An affine run as a dense float64 matrix and offset (numpy): out = W @ in + b."""
    d = math.prod(shape)
    eye = torch.eye(d, dtype=torch.float64).view(d, *shape)
    zero, out = torch.zeros(1, *shape, dtype=torch.float64), eye
    for layer in run:
        zero, out = layer(zero), layer(out)
    b = zero.flatten()
    return (out.flatten(1) - b).T.numpy(), b.numpy()


class _Program:
    """Variables with bounds and integrality, and sparse rows lo <= A v <= hi."""

    def __init__(self):
        self.lb, self.ub, self.integer, self.rows, self.lo, self.hi = [], [], [], [], [], []
        self.n_vars = self.n_rows = 0

    def variables(self, lb, ub, integer=False) -> np.ndarray:
        lb, ub = np.asarray(lb, float), np.asarray(ub, float)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(np.full(len(lb), int(integer)))
        self.n_vars += len(lb)
        return np.arange(self.n_vars - len(lb), self.n_vars)

    def rows_(self, blocks: list, lo, hi):
        """Add rows sum_k M_k @ v[cols_k] in [lo, hi]; blocks are (cols, M (m, len(cols)))."""
        lo = np.asarray(lo, float)
        for cols, m in blocks:
            r, c = np.nonzero(m)
            self.rows.append((r + self.n_rows, cols[c], m[r, c]))
        self.lo.append(lo)
        self.hi.append(np.broadcast_to(np.asarray(hi, float), lo.shape))
        self.n_rows += len(lo)

    def solve(self, cost_cols, cost, time_limit):
        c = np.zeros(self.n_vars)
        np.add.at(c, cost_cols, cost)
        r, col, v = (np.concatenate(t) for t in zip(*self.rows)) if self.rows else ([], [], [])
        a = sp.csr_array((v, (r, col)), shape=(self.n_rows, self.n_vars))
        cons = [LinearConstraint(a, np.concatenate(self.lo), np.concatenate(self.hi))] if self.n_rows else []
        with _quiet_fd1():
            return solve_milp(c, constraints=cons, integrality=np.concatenate(self.integer),
                              bounds=VarBounds(np.concatenate(self.lb), np.concatenate(self.ub)),
                              options={"time_limit": max(time_limit, 1e-3), "disp": False})


@contextlib.contextmanager
def _quiet_fd1():
    """Hide what HiGHS prints to file descriptor 1 even with disp=False (debug notes such as
    "HighsMipSolverData::transformNewIntegerFeasibleSolution"), which a notebook kernel would
    show; Python's own sys.stdout is untouched."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no file descriptor 1 to protect
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _relu(prog: _Program, expr, lower, upper) -> np.ndarray:
    """a = relu(z), z = E v[cols] + c in [lower, upper]: Tjeng et al.'s eq. (7) for the unstable
    neurons (a >= z, a <= u d, a <= z - l (1 - d), a >= 0, d binary); a = z or a = 0 for stable
    ones, with no binary."""
    cols, e, c = expr
    a = prog.variables(np.maximum(lower, 0), np.maximum(upper, 0))
    on, unstable = lower >= 0, (lower < 0) & (upper > 0)
    if on.any():
        prog.rows_([(a[on], np.eye(on.sum())), (cols, -e[on])], c[on], c[on])
    if unstable.any():
        m, l, u = unstable.sum(), lower[unstable], upper[unstable]
        d = prog.variables(np.zeros(m), np.ones(m), integer=True)
        au, eu, cu = a[unstable], e[unstable], c[unstable]
        prog.rows_([(au, np.eye(m)), (cols, -eu)], cu, np.inf)
        prog.rows_([(au, np.eye(m)), (d, -np.diag(u))], np.full(m, -np.inf), 0)
        prog.rows_([(au, np.eye(m)), (cols, -eu), (d, -np.diag(l))], np.full(m, -np.inf), cu - l)
    return a


def _max_pool(prog: _Program, pool: MaxPool, expr, lower, upper) -> np.ndarray:
    """a = max of the window, z = E v[cols] + c in [lower, upper]: a >= z_i for every input of
    the window, a <= z_i + (max u - l_i)(1 - d_i), sum d_i = 1; an input whose upper bound is
    below the largest lower bound can never be the max and is dropped, and a window with one
    candidate left is a = z_i (no binary)."""
    cols, e, c = expr
    index = torch.arange(math.prod(pool.in_shape), dtype=torch.float64).view(1, *pool.in_shape)
    windows = pool.windows(index, -1.0)[0].long()  # (C, k, L)
    windows = windows.permute(0, 2, 1).reshape(-1, windows.shape[1])  # one row per output
    outs = []
    for w in windows.numpy():
        w = w[w >= 0]
        top = lower[w].max()
        w = w[upper[w] >= top]
        hi = upper[w].max()
        a = prog.variables([top], [hi])
        outs.append(a[0])
        one = np.ones((1, 1))
        if len(w) == 1:
            prog.rows_([(a, one), (cols, -e[w])], c[w], c[w])
            continue
        d = prog.variables(np.zeros(len(w)), np.ones(len(w)), integer=True)
        ones = np.ones((len(w), 1))
        prog.rows_([(a, ones), (cols, -e[w])], c[w], np.inf)
        prog.rows_([(a, ones), (cols, -e[w]), (d, np.diag(hi - lower[w]))],
                   np.full(len(w), -np.inf), c[w] + hi - lower[w])
        prog.rows_([(d, np.ones((1, len(w))))], [1.0], [1.0])
    return np.asarray(outs)


def encode(net, x0: np.ndarray, eps: float, norm: str, pre: list):
    """The MILP of one example: (program, input variables, logits as (cols, E, c)).

    `pre` holds the (lower, upper) bounds (flat numpy) on the input of each ReLU / MaxPool.
    The input set is the box [max(x - eps, 0), min(x + eps, 1)]; for L1 also |x' - x| <= t,
    sum t <= eps with auxiliary variables t."""
    prog = _Program()
    xv = prog.variables(np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1))
    if norm == "l1":
        t, eye = prog.variables(np.zeros(len(x0)), np.full(len(x0), eps)), np.eye(len(x0))
        prog.rows_([(xv, eye), (t, -eye)], np.full(len(x0), -np.inf), x0)
        prog.rows_([(xv, eye), (t, eye)], x0, np.inf)
        prog.rows_([(t, np.ones((1, len(x0))))], [-np.inf], [eps])
    expr, shape, k = (xv, np.eye(len(x0)), np.zeros(len(x0))), net.in_shape, 0
    for item in affine_runs(net):
        if isinstance(item, list):
            w, b = _dense(item, shape)
            expr = (expr[0], w @ expr[1], w @ expr[2] + b)
            shape = item[-1].out_shape if item else shape
            continue
        lower, upper = pre[k]
        k += 1
        if isinstance(item, MaxPool):
            v, shape = _max_pool(prog, item, expr, lower, upper), item.out_shape
        else:
            v = _relu(prog, expr, lower, upper)
        expr = (v, np.eye(len(v)), np.zeros(len(v)))
    return prog, xv, expr


def _bounds(net, ball: Ball, C: torch.Tensor, which: str):
    """Per-neuron bounds on the input of every nonlinear layer and lower bounds (N, K-1) on the
    margins z_y - z_j: intervals, then (which="crown") intersected with CROWN's."""
    pre, spec = interval_bounds(net, ball, C)
    pre, spec_lo = [(b.lower, b.upper) for b in pre], spec.lower
    if which == "crown":
        pre_c, (lo_c, _) = crown_bounds(net, ball, C)
        pre = [(torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])) for a, b in zip(pre, pre_c)]
        spec_lo = torch.maximum(spec_lo, lo_c)
    return pre, spec_lo


def _recheck(model, x, y, j, cand, eps, norm):
    """`cand` moved into the ball and [0, 1] in x's dtype, if the model misclassifies it there;
    else nudged a little along the gradient of z_j - z_y; None when nothing is misclassified."""
    def clean(p):
        d = p - x
        if norm == "linf":
            d = d.clamp(-eps, eps)
        elif d.abs().sum() > eps:
            d = d * (eps / d.abs().sum())
        return (x + d).clamp(0, 1)
    p = clean(cand)
    for step in (0.0, 1e-6, 1e-5, 1e-4, 1e-3):
        if step:
            with frozen(model):
                q = p.clone().requires_grad_(True)
                z = model(q[None])[0]
                (g,) = torch.autograd.grad(z[j] - z[y], q)
            p = clean(p + step * max(eps, 1e-3) * g.sign())
        if predict(model, p[None]).argmax(1).item() != y:
            return p
    return None


def _one(model, net, x, y, eps, norm, pre, spec_lo, time_limit, start):
    """The verdict for one example: one MILP per class j that the bounds do not rule out,
    maximising z_j - z_y, the most threatening j (smallest bound on z_y - z_j) first."""
    k = len(spec_lo) + 1
    others = [j for j in range(k) if j != y]
    todo = sorted((lo, j) for lo, j in zip(spec_lo.tolist(), others) if lo <= 0)
    if not todo:
        return Verdict("verified", reason=f"the bounds alone prove it: z_y - z_j >= "
                       f"{min(spec_lo.tolist()):.4g} for every j", seconds=time.perf_counter() - start)
    prog, xv, (cols, e, c) = encode(net, x.detach().cpu().double().flatten().numpy(), eps, norm, pre)
    worst, notes = -np.inf, []
    for _, j in todo:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            notes.append(f"time limit {time_limit:g} s reached before class {j} was decided")
            break
        res = prog.solve(cols, -(e[j] - e[y]), left)  # minimise z_y - z_j
        const = c[j] - c[y]
        found = -res.fun + const if res.x is not None else -np.inf
        dual = getattr(res, "mip_dual_bound", None)
        bound = -dual + const if dual is not None and np.isfinite(dual) else np.inf
        if found > TOL:
            adv = _recheck(model, x, y, j, torch.from_numpy(res.x[xv]).view_as(x).to(x), eps, norm)
            if adv is not None:
                return Verdict("falsified", adv, reason=f"z_{j} - z_y = {found:.4g} at the MILP's "
                               f"solution", seconds=time.perf_counter() - start)
            notes.append(f"class {j}: the MILP's point (z_{j} - z_y = {found:.3g}) is not "
                         "misclassified by the model in its own precision")
        elif res.status not in (0, 1):
            notes.append(f"class {j}: HiGHS stopped with status {res.status} ({res.message})")
        elif bound >= -TOL:
            notes.append(f"class {j}: time limit {time_limit:g} s reached with max z_{j} - z_y in "
                         f"[{found:.4g}, {bound:.4g}]" if res.status == 1 else
                         f"class {j}: max z_{j} - z_y = {found:.3g} is within {TOL:g} of 0")
        worst = max(worst, bound)
    if notes:
        return Verdict("unknown", reason="; ".join(notes), seconds=time.perf_counter() - start)
    return Verdict("verified", reason=f"max_j z_j - z_y <= {worst:.4g} (MILP over {len(todo)} of "
                   f"{k - 1} classes; the bounds rule out the rest)", seconds=time.perf_counter() - start)


def milp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         bounds: str = "crown", time_limit: float = 60.0) -> list[Verdict]:
    """Exact robustness check of each (x, y) over the eps-ball by a mixed-integer linear program.

    Tjeng, Xiao and Tedrake, "Evaluating robustness of neural networks with mixed integer
    programming" (ICLR 2019), eq. (7) of the tutorial; Cheng, Nührenberg and Ruess (2017). A
    ReLU a = max(z, 0) with pre-activation bounds l < 0 < u becomes, with a binary d,
        a >= z,  a >= 0,  a <= u d,  a <= z - l (1 - d);
    a stable neuron (l >= 0 or u <= 0) is a = z or a = 0, with no binary, and max pooling gets
    one binary per input that can be the max. Convolutions are expanded to dense matrices. The
    bounds l, u are intervals (IBP), tightened by CROWN when bounds="crown" (smaller big-M
    constants and more stable neurons: a faster solve; bounds="interval" for comparison).

    One MILP per class j that the bounds do not already rule out (a lower bound on z_y - z_j
    above 0 settles j without a solver), maximising z_j - z_y: the example is verified when
    every optimum (or HiGHS' dual bound) is below 0, falsified when some solution has
    z_j - z_y > 0 and the model, in its own precision, misclassifies that point after it is
    moved into the ball and [0, 1] (nudged along the gradient if rounding keeps it on the
    boundary). Per class rather than one MILP with max_j: each program is smaller, most
    classes never reach the solver, and a counterexample ends the search early. An example
    the model already misclassifies is falsified by x itself.

    Arguments:
        model: a chain that `read_network` reads (solved in float64 on a copy; left as found).
        x: images (N, C, H, W) in [0, 1]; y: labels (N,); eps >= 0.
        norm: "linf" or "l1" (|x' - x| <= t, sum t <= eps with auxiliary variables); the L2
            ball is not linear and is refused.
        bounds: "interval" or "crown", the per-neuron bounds of the big-M constants.
        time_limit: seconds per example (bounds included); when it runs out the verdict is
            "unknown" with the range left on max_j z_j - z_y (the solver's gap).
    Returns one Verdict per example (a list), with seconds and a reason (the optimum, or why
    unknown).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = plain(check_images(x))
    check_model_input(model, x)
    y = check_labels(y, x)
    eps, norm = check_eps(eps), check_norm(norm, ("linf", "l1", "l2"))
    if norm == "l2":
        raise ValueError("norm='l2' is not supported by milp: the L2 ball is not a linear "
                         "constraint; use norm='linf' or norm='l1'")
    check_choice(bounds, ("interval", "crown"), "bounds")
    time_limit = float(check_positive(time_limit, "time_limit"))
    start = time.perf_counter()
    net64 = read_network(copy.deepcopy(model).to("cpu", torch.float64).eval(), x.shape[1:],
                         like=torch.zeros((), dtype=torch.float64))
    k = net64.out_shape[0]
    if y.numel() and int(y.max()) >= k:
        raise ValueError(f"y holds labels outside [0, {k}): range [{int(y.min())}, {int(y.max())}]")
    yc = y.cpu()
    wrong = (predict(model, x).argmax(1) != y).cpu()
    with torch.no_grad():
        x64 = x.detach().cpu().double()
        pre, spec_lo = _bounds(net64, Ball(x64, eps, norm), margin_spec(yc, k).double(), bounds)
    shared = (time.perf_counter() - start) / len(x)
    verdicts = []
    for i in range(len(x)):
        t0 = time.perf_counter() - shared
        if wrong[i]:
            verdicts.append(Verdict("falsified", x[i].clone(), reason="the model misclassifies x itself",
                                    seconds=time.perf_counter() - t0))
            continue
        pre_i = [(lo[i].flatten().numpy(), up[i].flatten().numpy()) for lo, up in pre]
        verdicts.append(_one(model, net64, x[i], int(yc[i]), eps, norm, pre_i, spec_lo[i], time_limit, t0))
    return verdicts
