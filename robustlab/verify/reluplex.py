"""A Reluplex-style complete verifier: depth-first case splitting on ReLU phases, each case an LP
over the linear relaxation of the phases not yet fixed, with bounds tightened at every split."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .._checks import check_eps
from ._bounds import Ball
from ._complete import confirm, each_example, neuron_bounds, relu_only, setup
from ._encode import dense_chain, encode
from .types import Verdict, margin_spec


def tighten(chain: list, box: tuple, root: list, phases: list):
    """Interval bounds on every ReLU's input given the phases fixed by the splits: (lower, upper)
    per layer, each intersected with the root bounds (sound over the whole ball) and clamped to
    its phase (z >= 0 active, z <= 0 inactive), so one split makes later neurons stable too;
    None when some neuron's bounds cross: no input of the ball takes these phases."""
    lo, hi, out = box[0], box[1], []
    for (w, b), (l0, u0), phase in zip(chain, root, phases):
        mid, rad = w @ ((hi + lo) / 2) + b, np.abs(w) @ ((hi - lo) / 2)
        l, u = np.maximum(mid - rad, l0), np.minimum(mid + rad, u0)
        l, u = np.where(phase > 0, np.maximum(l, 0), l), np.where(phase < 0, np.minimum(u, 0), u)
        if (l > u + 1e-9).any():
            return None
        u = np.maximum(u, l)
        out.append((l, u))
        lo, hi = np.maximum(l, 0), np.maximum(u, 0)
    return out


def _search(referee, chain, x, y, eps, norm, root, alive, need, time_limit, start):
    """Depth-first search over ReLU phases for one example; returns its Verdict. Class j is
    ruled out of a case when its LP proves z_y - z_j above need[j], the model's rounding bound."""
    net = referee.net
    x0 = x.detach().cpu().double().flatten().numpy()
    box = (np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1))
    stack = [([np.zeros(len(lo), np.int8) for lo, _ in root], alive)]
    nodes = lps = 0
    notes = []
    while stack:
        if time.perf_counter() - start > time_limit:
            notes.append(f"time limit {time_limit:g} s reached after {nodes} cases ({lps} LPs) with "
                         f"{len(stack)} open")
            break
        phases, alive = stack.pop()
        nodes += 1
        pre = tighten(chain, box, root, phases)
        if pre is None:  # the phases contradict each other over the ball
            continue
        enc = encode(net, x0, eps, norm, pre)
        cols, e, c = enc.logits
        split, still = None, []
        for j in alive:
            res = enc.prog.solve(cols, -(e[j] - e[y]), time_limit - (time.perf_counter() - start),
                                 relax=True)
            lps += 1
            if res.status == 2:  # the whole case is infeasible, whatever the class
                still = []
                break
            if res.status != 0:
                notes.append(f"class {j}: the LP stopped with status {res.status} ({res.message})")
                continue
            best = -res.fun + c[j] - c[y]  # max z_j - z_y over the relaxation of this case
            if best < -need[j]:
                continue  # class j cannot win anywhere in this case
            adv = confirm(referee, x, y, j, torch.from_numpy(res.x[enc.x]).view_as(x), eps, norm)
            if adv is not None:
                return referee.verdict(adv, y, f"case {nodes} ({lps} LPs): the LP's point for class {j}",
                                       start)
            # Reluplex repairs a ReLU the LP's solution violates: split the worst one
            worst = (0.0, None)
            for k, (a, (hc, he, hcst)) in enumerate(enc.hidden):
                zk = he @ res.x[hc] + hcst
                gap = np.abs(res.x[a] - np.maximum(zk, 0))
                if gap.max() > worst[0] + 1e-9:
                    worst = (gap.max(), (k, int(gap.argmax()), zk[gap.argmax()] > 0))
            if worst[1] is None:  # the LP's point is a real one: this is the exact maximum
                notes.append(f"class {j}: max z_{j} - z_y = {best:.3g} in case {nodes}, within the "
                             f"rounding bound {need[j]:.3g} of 0 or not misclassified beyond rounding")
                continue
            still.append(j)
            if split is None or best > split[0]:
                split = (best, worst[1])
        if not still:
            continue
        k, i, active_first = split[1]
        for phase in ((-1, 1) if active_first else (1, -1)):  # the popped one (last) first
            child = [p.copy() for p in phases]
            child[k][i] = phase
            stack.append((child, still))
    seconds = time.perf_counter() - start
    if notes:
        return Verdict("unknown", reason="; ".join(notes), seconds=seconds)
    return Verdict("verified", reason=f"every case is infeasible for every class ({nodes} cases, {lps} LPs)",
                   seconds=seconds)


def reluplex(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             bounds: str = "crown", time_limit: float = 60.0) -> list[Verdict]:
    """Complete robustness check of each (x, y) over the eps-ball by case splitting on ReLUs.

    After Katz, Barrett, Dill, Julian and Kochenderfer, "Reluplex: an efficient SMT solver for
    verifying deep neural networks" (CAV 2017), the constraint-solving approach of the tutorial:
    the network's affine layers are linear constraints; each ReLU a = max(z, 0) is either fixed
    to a phase (active: a = z, z >= 0; inactive: a = 0, z <= 0) or relaxed to its triangle
    (a >= 0, a >= z, a <= u (z - l) / (u - l)). A case is feasible for class j when the LP
    max z_j - z_y over it is >= 0 (HiGHS' simplex through scipy); an infeasible case is
    pruned. Otherwise, as Reluplex repairs a ReLU the simplex solution violates, the ReLU with
    the largest violation |a - max(z, 0)| is split into its two phases, depth first. Bounds are
    tightened at every case (Reluplex's bound tightening): CROWN / interval bounds of the whole
    ball, then intervals through the phases fixed so far, which make more ReLUs stable.
    Where no ReLU is violated the LP point is a real input, so the LP maximum is exact: the
    search ends (depth at most the number of unstable ReLUs). Verified when every case is
    infeasible for every class; falsified when an LP point, re-checked on the model, is
    misclassified (a simplification of Reluplex's SMT search: LP solves per case rather than
    one incrementally repaired tableau).

    Arguments:
        model: a chain of affine layers and ReLUs that `read_network` reads (max pooling is
            refused: use milp); solved in float64 on a CPU copy, on purpose: the simplex
            runs in scipy on the CPU whatever x's device; left as found.
        x: images (N, C, H, W) in [0, 1]; y: labels (N,); eps >= 0.
        norm: "linf" or "l1" (the L2 ball is not linear and is refused).
        bounds: "interval" or "crown", the bounds of the root case.
        time_limit: seconds per example; when it runs out the verdict is "unknown".
    Returns one Verdict per example (a list).
    """
    eps = check_eps(eps)
    start = time.perf_counter()
    x, yc, norm, time_limit, referee, k, wrong = setup(model, x, y, norm, time_limit, bounds, "reluplex", eps)
    relu_only(referee.net, "reluplex")
    chain = dense_chain(referee.net)
    with torch.no_grad():
        x64 = x.detach().cpu().double()
        pre, spec_lo = neuron_bounds(referee.net, Ball(x64, eps, norm), margin_spec(yc, k).double(), bounds)
        need = referee.need(x64, eps, yc)

    def solve(i: int, t0: float) -> Verdict:
        yi = int(yc[i])
        need_i = dict(zip((j for j in range(k) if j != yi), need[i].tolist()))
        alive = [j for j, lo in zip(need_i, spec_lo[i].tolist()) if lo <= need_i[j]]
        if not alive:
            return Verdict("verified", reason="the bounds alone prove it", seconds=time.perf_counter() - t0)
        root = [(lo[i].flatten().numpy(), up[i].flatten().numpy()) for lo, up in pre]
        return _search(referee, chain, x[i], yi, eps, norm, root, alive, need_i, time_limit, t0)
    return each_example(x, yc, wrong, start, referee, solve)
