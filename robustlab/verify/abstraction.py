"""Abstraction of a ReLU network into an interval neural network (neurons of a hidden layer merged
into groups, their weights into intervals), sound output ranges of the abstract network, and
counterexample-free refinement (split the group whose weights disagree most) until a property
is proved or the abstraction is the concrete network."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_positive
from .._model import check_model
from ..tables import Tabular, markdown_table
from ._complete import TOL, relu_only
from ._encode import dense_chain
from .network import Network, read_network
from .properties import check_property, region, verify_property
from .rounding import as_float64
from .types import Bounds, Verdict


@dataclass
class IntervalNetwork:
    """An interval neural network: per layer the weight bounds `w_lo`, `w_hi` (T, S) and bias
    bounds `b_lo`, `b_hi` (T,), between abstract neurons (groups) of consecutive layers, ReLUs
    between layers; `groups[l]` lists the concrete neurons (index tensors) of each abstract
    neuron of hidden layer l."""

    w_lo: list
    w_hi: list
    b_lo: list
    b_hi: list
    groups: list
    in_shape: tuple

    @property
    def neurons(self) -> int:
        """The number of abstract hidden neurons."""
        return sum(len(g) for g in self.groups)

    @property
    def concrete(self) -> int:
        """The number of concrete hidden neurons they stand for."""
        return sum(sum(len(m) for m in g) for g in self.groups)


def _labels(groups, widths: list) -> list:
    """The groups of every hidden layer as lists of index tensors, from one label per neuron
    (any integers; neurons with one label form one group)."""
    if not isinstance(groups, Sequence) or len(groups) != len(widths):
        raise ValueError(f"groups must hold one sequence of labels per hidden layer ({len(widths)} layers "
                         f"of widths {widths}), got {type(groups).__name__} of length "
                         f"{len(groups) if isinstance(groups, Sequence) else '?'}")
    out = []
    for layer, (g, w) in enumerate(zip(groups, widths)):
        g = torch.as_tensor(g)
        if g.shape != (w,) or g.is_floating_point() or g.dtype == torch.bool:
            raise ValueError(f"groups[{layer}] must hold {w} integer labels, one per neuron, got "
                             f"shape {tuple(g.shape)} dtype {g.dtype}")
        out.append([torch.nonzero(g == v).flatten() for v in torch.unique(g)])
    return out


def _reduce(w: torch.Tensor, label: torch.Tensor, n: int, dim: int, how: str) -> torch.Tensor:
    """min or max ("amin" / "amax") of the entries of w along `dim` within each of n groups."""
    shape = list(w.shape)
    shape[dim] = n
    index = label.view([-1 if i == dim else 1 for i in range(w.dim())]).expand_as(w)
    return w.new_zeros(shape).scatter_reduce(dim, index, w, how, include_self=False)


def _merge(w: torch.Tensor, b: torch.Tensor, rows: list, cols: list):
    """Interval weights between groups: for row group T and column group S,
    |S| [min_{t in T, s in S} w_ts, max ...], and bias [min_{t in T} b_t, max ...]."""
    r, c = _inverse(rows, w.shape[0]), _inverse(cols, w.shape[1])
    size = torch.tensor([len(s) for s in cols], dtype=w.dtype)
    lo, hi = (_reduce(_reduce(w, r, len(rows), 0, how), c, len(cols), 1, how) * size
              for how in ("amin", "amax"))
    return lo, hi, _reduce(b, r, len(rows), 0, "amin"), _reduce(b, r, len(rows), 0, "amax")


def _inverse(groups: list, n: int) -> torch.Tensor:
    """The group number of each of the n neurons."""
    label = torch.empty(n, dtype=torch.long)
    for i, members in enumerate(groups):
        label[members] = i
    return label


def _abstract_net(net: Network, groups, C: torch.Tensor | None, d: torch.Tensor | None) -> IntervalNetwork:
    """The interval network of `net` (float64, ReLU only) for `groups`, C and d folded into the
    last layer (rows of the property instead of logits)."""
    chain = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in dense_chain(net)]
    if C is not None:
        w, b = chain[-1]
        chain[-1] = (C @ w, C @ b + (0 if d is None else d))
    hidden = _labels(groups, [w.shape[0] for w, _ in chain[:-1]])
    singles = [[torch.tensor([i]) for i in range(n)] for n in (chain[0][0].shape[1], chain[-1][0].shape[0])]
    parts = [singles[0], *hidden, singles[1]]
    merged = [_merge(w, b, parts[i + 1], parts[i]) for i, (w, b) in enumerate(chain)]
    return IntervalNetwork(*map(list, zip(*merged)), hidden, net.in_shape)


def abstract(model: nn.Module, groups: Sequence, *, in_shape: Sequence[int], C: torch.Tensor | None = None,
             d: torch.Tensor | None = None) -> IntervalNetwork:
    """The interval neural network of `model` with the neurons of each hidden layer merged.

    Prabhakar and Afzal, "Abstraction based output range analysis for neural networks"
    (NeurIPS 2019), section 3: the neurons of a hidden layer are partitioned into groups; the
    weight from group S (layer l-1) to group T (layer l) is the interval
    |S| [min_{t in T, s in S} w_ts, max_{t in T, s in S} w_ts] and T's bias
    [min_{t in T} b_t, max_{t in T} b_t]. Every concrete neuron t of T then receives
    sum_S sum_{s in S} w_ts a_s, a sum of |S| terms each in [min w, max w] * [range of S], so
    the interval network's range of T contains every member's value (`abstract_bounds`).
    Input features and outputs are never merged. Singleton groups give the concrete network.

    Arguments:
        model: a chain of affine layers and ReLUs that `read_network` reads (read in float64).
        groups: one sequence of integer labels per hidden (ReLU) layer, one label per neuron;
            neurons with the same label are merged.
        in_shape: the shape of one input.
        C, d: optional property rows (S, K) and offsets (S,) folded into the last layer, so that
            the outputs are the rows of C f(x) + d (tighter than bounding the logits first).
    """
    check_model(model)
    net = as_float64(read_network(model, in_shape), "cpu")
    relu_only(net, "abstract")
    if C is not None:
        C, d = check_property(C, d, net.out_shape[0])
    return _abstract_net(net, groups, C, d)


def abstract_bounds(inn: IntervalNetwork, lower: torch.Tensor, upper: torch.Tensor) -> Bounds:
    """Sound bounds on the outputs of the interval network over the box [lower, upper].

    Interval arithmetic on interval weights (Prabhakar and Afzal 2019, the output range of an
    INN, here by intervals instead of their MILP): [w_lo, w_hi] * [L, U] is the min and max of
    the four products, summed over the groups S of the layer before, plus [b_lo, b_hi]; a ReLU
    clamps both ends. The bounds hold in real arithmetic for the concrete network whatever the
    grouping (the model's floating-point rounding is not included: `refine` adds it).

    Arguments:
        inn: from `abstract`; lower, upper: (N, *in_shape) boxes, lower <= upper.
    Returns Bounds (N, K) on the outputs (float64, on the CPU).
    """
    if lower.shape != upper.shape or tuple(lower.shape[1:]) != tuple(inn.in_shape):
        raise ValueError(f"lower and upper must have shape (N, *{tuple(inn.in_shape)}), got "
                         f"{tuple(lower.shape)} and {tuple(upper.shape)}")
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()) or (lower > upper).any():
        raise ValueError("lower and upper must be finite with lower <= upper")
    lo, hi = lower.detach().cpu().double().flatten(1), upper.detach().cpu().double().flatten(1)
    for i, (wl, wh, bl, bh) in enumerate(zip(inn.w_lo, inn.w_hi, inn.b_lo, inn.b_hi)):
        if i:
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        ends = torch.stack([w[None] * v[:, None] for w in (wl, wh) for v in (lo, hi)])  # (4, N, T, S)
        lo, hi = ends.amin(0).sum(-1) + bl, ends.amax(0).sum(-1) + bh
    return Bounds(lo, hi)


@dataclass
class Refinement(Tabular):
    """What `refine` found: `verdict`, the abstract hidden neurons at the end (`neurons`, of
    `concrete`), the refinement `rounds`, per round the abstract neurons and the lowest row
    bound less the rounding it must beat (`history`: > 0 proves the property) and the final
    lower bounds of the rows (`lower`, (S,)). Prints as the history."""

    verdict: Verdict
    neurons: int
    concrete: int
    rounds: int
    lower: torch.Tensor
    history: list = field(default_factory=list)

    def table(self) -> str:
        rows = [(r, n, f"{n}/{self.concrete}", m) for r, (n, m) in enumerate(self.history)]
        return markdown_table(["round", "abstract neurons", "of concrete", "lowest row - rounding"], rows)


def _widest(inn: IntervalNetwork) -> tuple[int, int, bool]:
    """(hidden layer, group, whether incoming) of the non-singleton group with the widest weight
    interval, incoming (from the layer before) or outgoing (to the layer after)."""
    best = (-1.0, None)
    for layer, members in enumerate(inn.groups):
        w_in = inn.w_hi[layer] - inn.w_lo[layer]  # (T, S): rows are this layer's groups
        w_out = inn.w_hi[layer + 1] - inn.w_lo[layer + 1]  # (next, T): columns are
        for t, m in enumerate(members):
            if len(m) > 1:
                width = max(float(w_in[t].max()), float(w_out[:, t].max()))
                if width > best[0]:
                    best = (width, (layer, t, bool(w_in[t].max() >= w_out[:, t].max())))
    return best[1]


def _split(labels: list, inn: IntervalNetwork, chain: list) -> list:
    """New labels: the group of `_widest` cut in two at the median of its members' weights on
    the entry (column, or row for outgoing weights) where they differ most."""
    layer, t, incoming = _widest(inn)
    members = inn.groups[layer][t]
    span = chain[layer][0][members] if incoming else chain[layer + 1][0][:, members].T  # (members, entries)
    key = span[:, (span.amax(0) - span.amin(0)).argmax()]
    new = [g.clone() for g in labels]
    new[layer][members[key.argsort()[len(members) // 2:]]] = int(new[layer].max()) + 1
    return new


def refine(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *, C: torch.Tensor,
           d: torch.Tensor | None = None, groups: Sequence | None = None, max_rounds: int = 1000,
           complete: bool = False, time_limit: float = 60.0) -> Refinement:
    """Prove C f(x) + d > 0 (every row) over the box by abstraction and refinement.

    Prabhakar and Afzal (NeurIPS 2019), section 5: bound the property on the interval network
    (`abstract_bounds`); if a row's lower bound is not above the model's rounding bound
    |C_s| E + 1e-6, split the abstract neuron whose weight interval is widest (its members sorted
    by their weight on that interval's entry, cut at the median) and try again, until the
    property is proved or every group is a singleton: then the bounds are the concrete
    network's interval bounds, and the verdict stays "unknown" (abstraction never falsifies),
    or with `complete` goes to `verify_property` (the exact MILP of the concrete network).

    Arguments:
        model: a ReLU chain that `read_network` reads; lower, upper: the box (one input's
            shape); C (S, K), d (S,): the property.
        groups: the starting labels per hidden layer (as for `abstract`); None merges each
            hidden layer into one group.
        max_rounds: splits at most; complete: decide what abstraction leaves open exactly;
        time_limit: seconds (for the complete check too).
    Returns a Refinement (verdict, abstract neurons, rounds, history, bounds).
    """
    start = time.perf_counter()
    max_rounds = check_positive(max_rounds, "max_rounds", integer=True)
    time_limit = float(check_positive(time_limit, "time_limit"))
    if not isinstance(complete, bool):
        raise TypeError(f"complete must be True or False, got {type(complete).__name__}")
    reg = region(model, lower, upper)
    relu_only(reg.net, "refine")
    C, d = check_property(C, d, reg.net.out_shape[0])
    need = C.abs() @ reg.err + TOL
    chain = [(torch.from_numpy(w), torch.from_numpy(b)) for w, b in dense_chain(reg.net)]
    chain[-1] = (C @ chain[-1][0], C @ chain[-1][1] + d)  # outgoing weights of the last hidden layer
    widths = [w.shape[0] for w, _ in chain[:-1]]
    _labels(groups if groups is not None else [[0] * w for w in widths], widths)  # checks them
    labels = [torch.as_tensor(g).long() if groups is not None else torch.zeros(w, dtype=torch.long)
              for g, w in zip(groups or widths, widths)]
    lo64, up64 = reg.box64
    history, rounds = [], 0
    while True:
        inn = _abstract_net(reg.net, labels, C, d)
        low = abstract_bounds(inn, lo64, up64).lower[0]
        history.append((inn.neurons, float((low - need).min())))
        proved = bool((low > need).all())
        singletons = inn.neurons == inn.concrete
        if proved or singletons or rounds >= max_rounds or time.perf_counter() - start > time_limit:
            break
        labels = _split(labels, inn, chain)
        rounds += 1

    def result(verdict):
        return Refinement(verdict, inn.neurons, inn.concrete, rounds, low, history)
    seconds = time.perf_counter() - start
    if proved:
        return result(Verdict("verified", reason=f"the interval network with {inn.neurons} of {inn.concrete} "
                              f"neurons proves every row >= {float(low.min()):.4g}", seconds=seconds))
    why = ("the concrete network's interval bounds do not prove it" if singletons else
           f"stopped after {rounds} refinements ({'time limit' if rounds < max_rounds else 'max_rounds'})")
    if not complete:
        return result(Verdict("unknown", reason=why, seconds=seconds))
    exact = verify_property(model, lower, upper, C=C, d=d, time_limit=max(time_limit - seconds, 1e-3))
    return result(Verdict(exact.status, exact.counterexample, reason=f"{why}; the MILP: {exact.reason}",
                          seconds=time.perf_counter() - start))
