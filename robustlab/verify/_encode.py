"""The linear encoding the exact verifiers share: a ReLU / max-pooling network over an input set
as a mixed-integer linear program (big-M), or its LP relaxation, solved with HiGHS via scipy.

milp solves it as a MILP, min_distortion with the radius as a variable, reluplex and
branch_and_bound as LPs (integrality dropped) with some ReLU phases fixed by their bounds."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds as VarBounds
from scipy.optimize import LinearConstraint
from scipy.optimize import milp as solve_milp

from ._bounds import affine_runs
from .network import MaxPool, Network


@torch.no_grad()
def dense(run: list, shape: tuple):
    """An affine run as a dense float64 matrix and offset (numpy): out = W @ in + b."""
    d = math.prod(shape)
    eye = torch.eye(d, dtype=torch.float64).view(d, *shape)
    zero, out = torch.zeros(1, *shape, dtype=torch.float64), eye
    for layer in run:
        zero, out = layer(zero), layer(out)
    b = zero.flatten()
    return (out.flatten(1) - b).T.numpy(), b.numpy()


def dense_chain(net: Network) -> list:
    """The affine maps (W, b) of a ReLU network as dense float64 matrices: one before each ReLU
    and the last one onto the logits (an empty run between two ReLUs is the identity)."""
    chain, shape = [], net.in_shape
    for item in affine_runs(net):
        if isinstance(item, list):
            chain.append(dense(item, shape))
            shape = item[-1].out_shape if item else shape
    return chain


class Program:
    """Variables with bounds and integrality, and sparse rows lo <= A v <= hi."""

    def __init__(self):
        self.lb, self.ub, self.integer, self.rows, self.lo, self.hi = [], [], [], [], [], []
        self.n_vars = self.n_rows = 0

    def fork(self) -> Program:
        """A copy that shares the arrays but takes its own new variables and rows."""
        new = copy.copy(self)
        for name in ("lb", "ub", "integer", "rows", "lo", "hi"):
            setattr(new, name, list(getattr(self, name)))
        return new

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

    def solve(self, cost_cols, cost, time_limit, *, relax: bool = False, gap: float | None = None):
        """Minimise cost . v[cost_cols] with HiGHS; `relax` drops integrality (an LP), `gap` is
        the relative MIP gap at which HiGHS may stop (its default is 1e-4)."""
        c = np.zeros(self.n_vars)
        np.add.at(c, cost_cols, cost)
        r, col, v = (np.concatenate(t) for t in zip(*self.rows)) if self.rows else ([], [], [])
        a = sp.csr_array((v, (r, col)), shape=(self.n_rows, self.n_vars))
        cons = [LinearConstraint(a, np.concatenate(self.lo), np.concatenate(self.hi))] if self.n_rows else []
        options = {"time_limit": max(time_limit, 1e-3), "disp": False}
        if gap is not None:
            options["mip_rel_gap"] = gap
        integrality = np.zeros(self.n_vars) if relax else np.concatenate(self.integer)
        with quiet_fd1():
            return solve_milp(c, constraints=cons, integrality=integrality,
                              bounds=VarBounds(np.concatenate(self.lb), np.concatenate(self.ub)),
                              options=options)


@contextlib.contextmanager
def quiet_fd1():
    """Hide what HiGHS prints to file descriptor 1 even with disp=False (debug notes such as
    "HighsMipSolverData::transformNewIntegerFeasibleSolution" in scipy 1.17's HiGHS), which a
    notebook kernel would show; Python's own sys.stdout is untouched."""
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


def relu(prog: Program, expr, lower, upper) -> np.ndarray:
    """a = relu(z), z = E v[cols] + c in [lower, upper]: Tjeng et al.'s eq. (7) for the unstable
    neurons (a >= z, a <= u d, a <= z - l (1 - d), a >= 0, d binary); a = z (with a >= l) or
    a = 0 and z <= u for stable ones, with no binary. Every bound is enforced, not only implied,
    so bounds that a case split tightened (l = 0 or u = 0) are constraints of the program; with
    d relaxed to [0, 1] the unstable rows are the triangle relaxation."""
    cols, e, c = expr
    a = prog.variables(np.maximum(lower, 0), np.maximum(upper, 0))
    on, off, unstable = lower >= 0, (upper <= 0) & (lower < 0), (lower < 0) & (upper > 0)
    if on.any():
        prog.rows_([(a[on], np.eye(on.sum())), (cols, -e[on])], c[on], c[on])
    if off.any():
        prog.rows_([(cols, e[off])], np.full(off.sum(), -np.inf), upper[off] - c[off])
    if unstable.any():
        m, l, u = unstable.sum(), lower[unstable], upper[unstable]
        d = prog.variables(np.zeros(m), np.ones(m), integer=True)
        au, eu, cu = a[unstable], e[unstable], c[unstable]
        prog.rows_([(au, np.eye(m)), (cols, -eu)], cu, np.inf)
        prog.rows_([(au, np.eye(m)), (d, -np.diag(u))], np.full(m, -np.inf), 0)
        prog.rows_([(au, np.eye(m)), (cols, -eu), (d, -np.diag(l))], np.full(m, -np.inf), cu - l)
    return a


def max_pool(prog: Program, pool: MaxPool, expr, lower, upper) -> np.ndarray:
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


@dataclass
class Encoding:
    """A network over an input set as a program: `x` the input variables, `logits` as
    (cols, E, c) meaning E v[cols] + c, `radius` the variable radius (or None), `hidden` the
    (a, z) of each nonlinear layer: its output variables and its input as (cols, E, c)."""

    prog: Program
    x: np.ndarray
    logits: tuple
    radius: np.ndarray | None
    hidden: list


def encode(net: Network, x0: np.ndarray, eps: float, norm: str, pre: list, *,
           free: bool = False) -> Encoding:
    """The program of one example over the `norm` ball of radius eps around x0 and [0, 1].

    `pre` holds the (lower, upper) bounds (flat numpy) on the input of each ReLU / MaxPool. The
    input variables lie in the box [max(x - eps, 0), min(x + eps, 1)]; for L1 also
    |x' - x| <= t, sum t <= eps with auxiliary variables t. With `free`, the radius is a
    variable r in [0, eps] (the objective of minimal distortion): |x' - x| <= r for L-inf,
    sum t <= r for L1."""
    prog, n = Program(), len(x0)
    xv = prog.variables(np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1))
    r = prog.variables([0.0], [eps]) if free else None
    eye, ones = np.eye(n), np.ones((n, 1))
    if norm == "l1":
        t = prog.variables(np.zeros(n), np.full(n, eps))
        prog.rows_([(xv, eye), (t, -eye)], np.full(n, -np.inf), x0)
        prog.rows_([(xv, eye), (t, eye)], x0, np.inf)
        budget = [(t, ones.T)] + ([(r, -np.ones((1, 1)))] if free else [])
        prog.rows_(budget, [-np.inf], [0.0 if free else eps])
    elif free:
        prog.rows_([(xv, eye), (r, -ones)], np.full(n, -np.inf), x0)
        prog.rows_([(xv, eye), (r, ones)], x0, np.inf)
    expr, shape, k, hidden = (xv, eye, np.zeros(n)), net.in_shape, 0, []
    for item in affine_runs(net):
        if isinstance(item, list):
            w, b = dense(item, shape)
            expr = (expr[0], w @ expr[1], w @ expr[2] + b)
            shape = item[-1].out_shape if item else shape
            continue
        lower, upper = pre[k]
        k += 1
        if isinstance(item, MaxPool):
            v, shape = max_pool(prog, item, expr, lower, upper), item.out_shape
        else:
            v = relu(prog, expr, lower, upper)
        hidden.append((v, expr))
        expr = (v, np.eye(len(v)), np.zeros(len(v)))
    return Encoding(prog, xv, expr, r, hidden)
