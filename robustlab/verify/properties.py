"""Properties over input regions: "for every x in the box [lower, upper], C f(x) + d > 0", checked
exactly by the big-M MILP of `_encode` (HiGHS), and the specifications of common properties:
a class never predicted in a region (`never_class`), monotonicity in one feature
(`verify_monotone`, a two-copy encoding).

A region is one box, not a ball around a point: its inputs need not lie in [0, 1] (tabular
features), and every row of the property may involve every logit."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_nonnegative, check_positive
from .._model import check_model, check_model_input, frozen, predict
from ._bounds import Ball, Box
from ._complete import TOL, neuron_bounds, relu_only
from ._encode import dense_chain, encode
from .network import Dense, Network, ReLU
from .reach import _check_box
from .rounding import as_float64, read_exact, rounding_bound
from .types import Verdict


@dataclass
class Region:
    """A checked box: `lower`, `upper` (1, *shape) in the model's dtype, the network read over it
    in float64 on the CPU (`net`), and the model's rounding bound `err` (K,) of every logit over
    the whole box (`rounding.rounding_bound`)."""

    model: nn.Module
    lower: torch.Tensor
    upper: torch.Tensor
    net: Network
    u: float
    err: torch.Tensor

    @property
    def box64(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lower.detach().cpu().double(), self.upper.detach().cpu().double()

    def ball(self) -> Ball:
        """The box as the input set of the bounding code (its centre and half-width)."""
        lo, up = self.box64
        return Ball((lo + up) / 2, float((up - lo).max()) / 2, "linf", Box(lo, up))

    def err_at(self, p: torch.Tensor) -> torch.Tensor:
        """The rounding bound (K,) of every logit at the single point p (*shape)."""
        p64 = p.detach().cpu().double()[None]
        return rounding_bound(self.net, p64, p64, self.u)[0]

    def exact(self, p: torch.Tensor) -> torch.Tensor:
        """The logits (K,) of the float64 network at p (*shape): f in (nearly) real arithmetic."""
        with torch.no_grad():
            return self.net(p.detach().cpu().double()[None])[0]



def box_encoding(net: Network, lo: np.ndarray, up: np.ndarray, pre: list):
    """The MILP of `net` over the box [lo, up] (flat): the encoder's program, its input box
    replaced by this one (`encode` builds the input variables first, over a ball clipped to
    [0, 1]). `pre` holds the (lower, upper) bounds (1, *shape) on each ReLU's input."""
    enc = encode(net, (lo + up) / 2, float((up - lo).max()) / 2, "linf",
                 [(a[0].flatten().numpy(), b[0].flatten().numpy()) for a, b in pre])
    enc.prog.lb[0], enc.prog.ub[0] = lo, up
    return enc


def region(model: nn.Module, lower, upper) -> Region:
    """Checked region of `model`: lower and upper one input's shape (no batch), float32 or
    float64, finite, lower <= upper, on the model's device and of its dtype; the network read
    exactly over it."""
    check_model(model)
    for name, t in (("lower", lower), ("upper", upper)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    lo, up = _check_box(lower[None], upper[None])  # the batch of one box that reach_box checks
    check_model_input(model, lo, "lower")
    net, u = read_exact(model, lo, up)
    net64 = as_float64(net, "cpu")
    err = rounding_bound(net64, lo.cpu().double(), up.cpu().double(), u)[0]
    return Region(model, lo, up, net64, u, err)


def check_property(C, d, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C (S, K) and d (S,) as float64 CPU tensors (d = 0 when None); errors name C and d."""
    if not isinstance(C, torch.Tensor) or C.dim() != 2 or C.shape[1] != k or C.shape[0] == 0:
        raise ValueError(f"C must be a tensor of shape (S, {k}) for a model with {k} logits, got "
                         f"{tuple(C.shape) if isinstance(C, torch.Tensor) else type(C).__name__}")
    d = torch.zeros(len(C)) if d is None else d
    if not isinstance(d, torch.Tensor) or d.shape != (len(C),):
        raise ValueError(f"d must be a tensor of shape ({len(C)},), one offset per row of C, got "
                         f"{tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__}")
    C, d = C.detach().cpu().double(), d.detach().cpu().double()
    if not (torch.isfinite(C).all() and torch.isfinite(d).all()):
        raise ValueError("C and d must be finite (no NaN or infinite entries)")
    return C, d


def in_model(reg: Region, p: torch.Tensor) -> torch.Tensor:
    """p (*shape, any dtype) clamped into the region in the model's dtype: the point it runs."""
    return torch.minimum(torch.maximum(p.to(reg.lower), reg.lower[0]), reg.upper[0])


def violation(reg: Region, p: torch.Tensor, C, d, require: str) -> float:
    """How far p violates the property beyond rounding: > 0 when every float evaluation of the
    model at p has (C f + d)_s < 0 for some row ("all") or for every row ("any"). Each row's
    real value is pushed up by its rounding bound |C_s| E(p) first."""
    rows = C @ reg.exact(p) + d + C.abs() @ reg.err_at(p)
    return float(-rows.max() if require == "any" else -rows.min())


def confirmed(reg: Region, p: torch.Tensor, C, d, require: str) -> bool:
    """Whether p violates the property beyond rounding and the model, run on it alone and in a
    batch, in its own dtype, gives rows that violate it too."""
    if violation(reg, p, C, d, require) <= 0:
        return False
    z = predict(reg.model, torch.stack([p, p.flip(-1), p]))[[0, 2]].cpu().double()
    rows = z @ C.T + d
    return bool(((rows.max(1).values if require == "any" else rows.min(1).values) < 0).all())


def counterexample(reg: Region, cand: torch.Tensor, C, d, require: str) -> torch.Tensor | None:
    """A point near the solver's `cand` that `confirmed` holds for, or None: the solver's point
    sits on the boundary row = 0 up to its tolerances, so it is tried, then moved against the
    gradient of the least violated row in sign steps of 1e-6 ... 1e-3 of the box's width."""
    p = in_model(reg, cand)
    width = (reg.upper - reg.lower)[0]
    for step in (0.0, 1e-6, 1e-5, 1e-4, 1e-3):
        if step:
            with frozen(reg.model):
                q = p.clone().requires_grad_(True)
                rows = reg.model(q[None])[0].double() @ C.to(q.device).T + d.to(q.device)
                worst = rows.max() if require == "any" else rows.min()
                (g,) = torch.autograd.grad(worst, q)
            p = in_model(reg, p - step * width * g.sign())
        if confirmed(reg, p, C, d, require):
            return p.detach()
    return None


def minimum(res, const: float) -> tuple[float, float]:
    """(the best value found, a proved lower bound) of a HiGHS minimisation plus `const`: the
    MIP dual bound, or the optimum itself when HiGHS solved an LP to optimality (no binaries:
    every ReLU stable), or -inf."""
    found = res.fun + const if res.x is not None else np.inf
    dual = getattr(res, "mip_dual_bound", None)
    if dual is not None and np.isfinite(dual):
        return found, dual + const
    return found, found if res.status == 0 else -np.inf


def verify_property(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *, C: torch.Tensor,
                    d: torch.Tensor | None = None, require: str = "all", bounds: str = "crown",
                    time_limit: float = 60.0) -> Verdict:
    """Exact check that C f(x) + d > 0 for every x in the box [lower, upper]: a MILP per row.

    The property of a region rather than of a ball (Katz et al., "Reluplex", CAV 2017, the ACAS
    Xu properties; Tjeng, Xiao and Tedrake, ICLR 2019, for the big-M encoding reused from
    `milp`). require="all": every row s must hold, so each row is minimised over the box,
        m_s = min_x (C f(x) + d)_s,
    and the property holds iff every m_s > 0. require="any" (a disjunction: at every x some row
    is positive) minimises the largest row with one more variable t,
        m = min_{x, t} t  subject to  t >= (C f(x) + d)_s for every s,
    which needs no binary for the max because t is pushed down onto it. Rows whose CROWN lower
    bound already clears the rounding need no solver ("all").

    "verified" holds for the model in its own dtype: each minimum (HiGHS' dual bound) must
    exceed |C_s| E + 1e-6, E the model's rounding bound over the box. "falsified" returns a
    point of the box (in the model's dtype) where the real rows violate the property by more
    than their rounding bound at that point, re-checked by running the model on it.

    Arguments:
        model: a chain that `read_network` reads (solved in float64 on a CPU copy; left as found).
        lower, upper: the box, one input's shape (no batch dimension), lower <= upper.
        C: (S, K) rows on the K logits; d: (S,) offsets (0 when None).
        require: "all" (conjunction of rows) or "any" (disjunction).
        bounds: "interval" or "crown", the per-neuron bounds of the big-M constants.
        time_limit: seconds for the whole property.
    Returns a Verdict (the counterexample of lower's shape when falsified).
    """
    start = time.perf_counter()
    check_choice(require, ("all", "any"), "require")
    check_choice(bounds, ("interval", "crown"), "bounds")
    time_limit = float(check_positive(time_limit, "time_limit"))
    reg = region(model, lower, upper)
    C, d = check_property(C, d, reg.net.out_shape[0])
    need = (C.abs() @ reg.err + TOL).numpy()
    with torch.no_grad():
        pre, lo_rows = neuron_bounds(reg.net, reg.ball(), C[None], bounds)
    lo_rows = lo_rows[0].numpy() + d.numpy()

    def done(status, reason, adv=None):
        return Verdict(status, adv, reason=reason, seconds=time.perf_counter() - start)
    if require == "all" and (lo_rows > need).all():
        return done("verified", f"the bounds alone prove every row >= {lo_rows.min():.4g}")
    enc = box_encoding(reg.net, *(t.flatten().numpy() for t in reg.box64), pre)
    prog, (cols, e, c) = enc.prog, enc.logits
    rows_e, rows_c = C.numpy() @ e, C.numpy() @ c + d.numpy()
    if require == "any":
        t = prog.variables([-np.inf], [np.inf])
        prog.rows_([(t, np.ones((len(C), 1))), (cols, -rows_e)], rows_c, np.inf)
        goals = [((t, np.ones(1), 0.0), float(need.max()))]
    else:
        goals = [((cols, rows_e[s], rows_c[s]), need[s]) for s in np.argsort(lo_rows)
                 if lo_rows[s] <= need[s]]
    worst, notes = np.inf, []
    for (gcols, ge, gc), need_s in goals:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            notes.append(f"time limit {time_limit:g} s reached before every row was decided")
            break
        res = prog.solve(gcols, ge, left)
        found, bound = minimum(res, gc)
        if found < -TOL:
            adv = counterexample(reg, torch.from_numpy(res.x[enc.x]).view_as(lower), C, d, require)
            if adv is not None:
                return done("falsified", f"the property's row reaches {found:.4g} at the MILP's point; "
                            f"the model violates it there by more than its rounding", adv)
            notes.append(f"the MILP's point (row {found:.3g}) is not a violation beyond the model's rounding")
        elif res.status not in (0, 1):
            notes.append(f"HiGHS stopped with status {res.status} ({res.message})")
        elif bound <= need_s:
            notes.append(f"the minimum row lies in [{bound:.4g}, {found:.4g}], not above the model's "
                         f"rounding bound {need_s:.3g}" + (" (time limit)" if res.status == 1 else ""))
        worst = min(worst, bound)
    if notes:
        return done("unknown", "; ".join(notes))
    return done("verified", f"min over the box of the {'largest' if require == 'any' else 'smallest'} "
                f"row >= {worst:.4g} (MILP)")


def never_class(j: int, num_classes: int) -> dict:
    """The property "no input of the region is classified as class j", as verify_property's
    keyword arguments (C, d, require="any").

    Class j is predicted at x iff f_j(x) >= f_i(x) for every i != j (ties aside), so the
    property is the disjunction "some i has f_i(x) - f_j(x) > 0": rows e_i - e_j for every
    i != j, require="any" (one MILP minimising max_i f_i - f_j). Verified: at every x some class
    beats j strictly, so argmax != j whatever the tie-breaking; falsified: a point where f_j
    beats every other class by more than rounding, so every float evaluation predicts j."""
    k = int(check_positive(num_classes, "num_classes", integer=True))
    if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < k:
        raise ValueError(f"j must be a class index in [0, {k}), got {j!r}")
    if k < 2:
        raise ValueError(f"num_classes must be >= 2 for a class to be beaten, got {k}")
    eye = torch.eye(k, dtype=torch.float64)
    return dict(C=eye[[i for i in range(k) if i != j]] - eye[j], d=None, require="any")


def _pair(net: Network) -> Network:
    """Two copies of a ReLU network side by side on the input (x, x') (2 D,): block-diagonal
    dense layers, so that the encoder builds the program of f(x) and f(x') at once."""
    layers, width = [], None
    for i, (w, b) in enumerate(dense_chain(net)):
        w, b = torch.from_numpy(w), torch.from_numpy(b)
        if i:
            layers.append(ReLU((2 * width,)))
        layers.append(Dense(torch.block_diag(w, w), torch.cat([b, b]), (2 * w.shape[1],)))
        width = w.shape[0]
    return Network(layers, layers[0].in_shape)


def verify_monotone(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *, feature: int,
                    output: int = 0, slack: float = 1e-3, time_limit: float = 60.0) -> Verdict:
    """Exact check that logit `output` never falls by more than `slack` when input `feature`
    grows inside the box: f_o(x') >= f_o(x) - slack for all x, x' in it with x'_k >= x_k and
    x'_i = x_i otherwise.

    The two-copy (product) encoding of relational properties (Barthe, D'Argenio and Rezk,
    "Secure information flow by self-composition", 2004; used for monotonicity of networks by
    Sivaraman et al., "Counterexample-guided learning of monotonic neural networks", NeurIPS
    2020): one MILP over (x, x') of the network doubled block-diagonally, x and x' tied by the
    rows above, minimising m = f_o(x') - f_o(x). Verified when m > -slack + E_o + E'_o + 1e-6
    (E the model's rounding bound over the box, once per copy): then even the float model
    never drops by more than `slack`. slack > 0 is needed, since x' = x gives m = 0 and rounding
    alone can make the float model fall a little. Falsified: a pair, returned stacked (2, *shape)
    as (x, x'), where the real drop beats slack plus both rounding bounds, re-run on the model.

    Arguments:
        model: a chain of affine layers and ReLUs that `read_network` reads (a tabular MLP).
        lower, upper: the box, one input's shape; feature: the index of the feature in the
            flattened input; output: the logit; slack >= 0; time_limit: seconds.
    """
    start = time.perf_counter()
    slack = check_nonnegative(slack, "slack")
    time_limit = float(check_positive(time_limit, "time_limit"))
    reg = region(model, lower, upper)
    relu_only(reg.net, "verify_monotone")
    n, k = lower.numel(), reg.net.out_shape[0]
    for name, v, top in (("feature", feature, n), ("output", output, k)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < top:
            raise ValueError(f"{name} must be an index in [0, {top}), got {v!r}")
    need = 2 * float(reg.err[output]) + TOL - slack
    pre = neuron_bounds(reg.net, reg.ball(), None, "crown")[0]
    twice = [(torch.cat([a.flatten(1)] * 2, 1), torch.cat([b.flatten(1)] * 2, 1)) for a, b in pre]
    lo, up = (t.flatten().numpy() for t in reg.box64)
    enc = box_encoding(_pair(reg.net), np.concatenate([lo, lo]), np.concatenate([up, up]), twice)
    tie = np.hstack([-np.eye(n), np.eye(n)])  # x' - x
    same = np.arange(n) != feature
    enc.prog.rows_([(enc.x, tie[same])], np.zeros(n - 1), np.zeros(n - 1))
    enc.prog.rows_([(enc.x, tie[[feature]])], [0.0], [np.inf])
    cols, e, c = enc.logits
    res = enc.prog.solve(cols, e[k + output] - e[output], time_limit)
    const = c[k + output] - c[output]
    found, bound = minimum(res, const)
    seconds = time.perf_counter() - start
    if res.x is not None and found < -slack:
        x0, x1 = (in_model(reg, torch.from_numpy(v).view_as(lower)) for v in np.split(res.x[enc.x], 2))
        # HiGHS meets the ties x'_i = x_i only to its tolerance: x' is rebuilt from x exactly
        grown = x0.flatten().clone()
        grown[feature] = torch.maximum(x1.flatten()[feature], grown[feature])
        x1 = grown.view_as(x0)
        exact = float(reg.exact(x1)[output] - reg.exact(x0)[output])
        drop = exact + float(reg.err_at(x0)[output] + reg.err_at(x1)[output])
        z = predict(model, torch.stack([x0, x1]))[:, output].double()
        if drop < -slack and float(z[1] - z[0]) < -slack:
            return Verdict("falsified", torch.stack([x0, x1]), reason=f"f_{output} falls by {-exact:.4g} "
                           f"when feature {feature} grows by {float((x1 - x0).flatten()[feature]):.4g}",
                           seconds=seconds)
    if res.status == 0 and bound > need:
        return Verdict("verified", reason=f"min f_{output}(x') - f_{output}(x) >= {bound:.4g} (MILP)",
                       seconds=seconds)
    return Verdict("unknown", reason=f"min f_{output}(x') - f_{output}(x) lies in [{bound:.4g}, {found:.4g}] "
                   f"(HiGHS status {res.status}), not decided against -slack = {-slack:.3g} and the "
                   f"model's rounding", seconds=seconds)
