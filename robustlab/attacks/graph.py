"""Attacks on a graph convolutional network (`robustlab.graph_models.GCN`): Nettack, a targeted
greedy attack on one node, and the PGD topology attack, a global attack on the edges; evasion
(perturb the graph the trained model sees) against poisoning (retrain on the perturbed graph).

Why not an Lp ball: adjacency and bag-of-words features are binary, so the threat model counts
flips, ``||A' - A||_0 / 2 + ||X' - X||_0 <= budget``, and every result here is checked to keep
the graph undirected, 0/1, without self loops, and binary features binary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_generator, check_in_range, check_positive
from .._model import check_model, eval_mode, frozen, model_device
from .._random import draw_device
from ..graph_data import (
    Graph,
    check_adjacency,
    check_graph,
    check_nodes,
    degree_statistic,
    powerlaw_log_likelihood,
    powerlaw_terms,
)
from ..graph_models import GCN, PoisonResult, gcn_accuracy, normalize_adjacency, poison_eval
from ..tables import Tabular, markdown_table

__all__ = ["NettackResult", "PoisonResult", "TopologyResult", "nettack", "pgd_topology",
           "poison_eval", "random_flips", "surrogate_logits"]


def _check_inputs(model, graph) -> None:
    check_model(model)
    check_graph(graph)
    dev = model_device(model)
    if dev is not None and dev != graph.adjacency.device:
        raise ValueError(f"graph is on {graph.adjacency.device} but the model is on {dev}")


def _check_budget(budget) -> int:
    return check_in_range(budget, "budget", 0, math.inf, integer=True)


def _margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``z_label - max_{c != label} z_c`` over the last axis; equal to the log-probability margin
    (the log-softmax's normaliser cancels). Negative: the node is misclassified."""
    mask = F.one_hot(label, logits.shape[-1]).bool()  # label: one class, a 0-dim tensor
    return logits[..., label] - logits.masked_fill(mask, -math.inf).amax(-1)


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _count_flips(graph: Graph, adjacency: torch.Tensor, features: torch.Tensor,
                 budget: int) -> tuple[int, int]:
    """The constraint of every output, checked: a simple undirected graph, binary features when
    they were, and (edge flips, feature flips) within `budget` in all."""
    check_adjacency(adjacency, "perturbed adjacency")
    if _is_binary(graph.features) and not _is_binary(features):
        raise RuntimeError("the attack made binary features non-binary")
    edges = int((adjacency != graph.adjacency).triu(1).sum())
    feats = int((features != graph.features).sum())
    if edges + feats > budget:
        raise RuntimeError(f"the attack made {edges + feats} flips, over its budget {budget}")
    return edges, feats


def _check_gcn(model) -> GCN:
    if not isinstance(model, GCN):
        raise TypeError(f"model must be a robustlab.graph_models.GCN (the surrogate reads its "
                        f"weights W1 W2), got {type(model).__name__}")
    return model


def surrogate_logits(model: GCN, features: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Nettack's linearised surrogate ``Z = Â² X W``, ``W = W1 W2`` (Zügner et al., KDD 2018,
    eq. 5): the GCN with its ReLU removed, logits (N, K)."""
    _check_gcn(model)
    a_hat = normalize_adjacency(adjacency)
    return a_hat @ (a_hat @ (features @ _weight(model)))


def _weight(model: GCN) -> torch.Tensor:
    return model.layer1.weight.T @ model.layer2.weight.T  # (F, K); nn.Linear stores W^T


def _edge_flip_logits(a: torch.Tensor, xw: torch.Tensor, target: int, rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
    """The surrogate's logits (C, K) at `target` after flipping each edge (rows[c], cols[c])
    alone, exactly, in O(N² + C K) rather than one forward pass per candidate.

    With ``Ã = A + I``, degrees d and ``g = Ã D^-1/2 XW``, the target's logits are
    ``z_t = d_t^-1/2 sum_j w_j g_j`` with ``w_j = Ã_tj / d_j``. A flip of (r, c) by
    ``δ = 1 - 2 A_rc`` changes ``Ã_rc = Ã_cr`` and ``d_r, d_c`` by δ: w changes at j = r, c
    only, and g by terms in columns r and c of Ã, so each candidate costs a few K-vectors
    (Zügner et al. update the same quantities incrementally, their Theorem 5.1).
    """
    at = a + torch.eye(len(a), dtype=a.dtype, device=a.device)
    d = at.sum(1)
    g = at @ (d.rsqrt()[:, None] * xw)
    w0 = at[target] / d
    reach = w0 @ at  # sum_j w_j Ã_jk for every k, before the flip
    delta = 1 - 2 * a[rows, cols]
    d_r, d_c = d[rows] + delta, d[cols] + delta
    # new w at r and c: Ã_tr gains δ when c is the target, Ã_tc when r is
    w_r = (at[target, rows] + delta * (cols == target)) / d_r
    w_c = (at[target, cols] + delta * (rows == target)) / d_c
    dw_r, dw_c = (w_r - w0[rows])[:, None], (w_c - w0[cols])[:, None]
    h_r, h_c = d_r.rsqrt()[:, None] * xw[rows], d_c.rsqrt()[:, None] * xw[cols]  # D'^-1/2 XW
    change_r = h_r - d[rows].rsqrt()[:, None] * xw[rows]
    change_c = h_c - d[cols].rsqrt()[:, None] * xw[cols]
    a_rc = at[rows, cols][:, None]
    z = (w0 @ g + dw_r * g[rows] + dw_c * g[cols]  # sum_j w'_j g_j
         + (reach[rows, None] + dw_r + dw_c * a_rc) * change_r  # sum_j w'_j Ã_jr (h'_r - h_r)
         + (reach[cols, None] + dw_r * a_rc + dw_c) * change_c
         + delta[:, None] * (w_r[:, None] * h_c + w_c[:, None] * h_r))  # the flipped entries
    d_t = d[target] + delta * ((rows == target) | (cols == target))
    return d_t.rsqrt()[:, None] * z


DEGREE_THRESHOLD = 0.004  # χ²(1) at 95 %: Λ below it, one power law explains both degree sequences


def _degree_ratios(clean: torch.Tensor, degree: torch.Tensor, rows: torch.Tensor,
                   cols: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Nettack's degree likelihood-ratio ``Λ = 2 (l(D_clean) + l(D')) - 2 l(D_clean ∪ D')``
    (Zügner et al., eqs. 9-10) for each edge flip (C,), D' the degrees after the flip: the
    power-law sums are updated at its two ends r and c only, not recounted."""
    n0, s0 = (t.sum() for t in powerlaw_terms(clean))
    n, s = (t.sum() for t in powerlaw_terms(degree))
    for end in (rows, cols):  # each flip moves the degrees of its two ends by δ
        (k_old, log_old), (k_new, log_new) = (powerlaw_terms(degree[end]),
                                              powerlaw_terms(degree[end] + delta))
        n, s = n + k_new - k_old, s + log_new - log_old
    return 2 * (powerlaw_log_likelihood(n0, s0) + powerlaw_log_likelihood(n, s)
                - powerlaw_log_likelihood(n0 + n, s0 + s))


@dataclass(frozen=True)
class NettackResult(Tabular):
    """Nettack on one node: the perturbed graph, the flips made (in order) and the margins
    ``z_label - max_other z`` of the surrogate and of the GCN itself, before and after."""

    target: int
    budget: int
    adjacency: torch.Tensor
    features: torch.Tensor
    edge_flips: list[tuple[int, int]]
    feature_flips: list[tuple[int, int]]
    surrogate_margin_before: float
    surrogate_margin_after: float
    margin_before: float
    margin_after: float
    success: bool
    degree_statistic: float  # Λ of the degree test, clean against perturbed (< 0.004: passes)

    @property
    def n_flips(self) -> int:
        return len(self.edge_flips) + len(self.feature_flips)

    def table(self) -> str:
        rows = [("target", self.target), ("flips / budget", f"{self.n_flips} / {self.budget}"),
                ("edge flips", len(self.edge_flips)), ("feature flips", len(self.feature_flips)),
                ("surrogate margin", f"{self.surrogate_margin_before:.3f} -> "
                                     f"{self.surrogate_margin_after:.3f}"),
                ("GCN margin", f"{self.margin_before:.3f} -> {self.margin_after:.3f}"),
                ("misclassified", self.success),
                ("degree test Λ (< 0.004 passes)", f"{self.degree_statistic:.5f}")]
        return markdown_table(["Nettack", "value"], rows)


def nettack(model: GCN, graph: Graph, target: int, *, budget: int, structure: bool = True,
            features: bool = True, direct: bool = True, degree_test: bool = True
            ) -> NettackResult:
    """Nettack (Zügner, Akbarnejad and Günnemann, KDD 2018): greedy flips against one node.

    On the linearised surrogate ``Z = Â² X W1 W2`` (eq. 5) each step scores every candidate
    edge flip exactly and every feature flip exactly (Z is linear in X), and makes the one that
    most lowers the target's margin ``Z_t,y - max_{c != y} Z_t,c`` (eq. 6), up to `budget`
    flips; a step that would not lower it is skipped, so the margin never rises with budget.
    As in the paper, no edge removal may leave a node without neighbours, and with
    `degree_test` an edge flip must keep the degree sequence's power law (a likelihood-ratio
    test, section 4.1, eqs. 7-10). Left out: the feature co-occurrence test (section 4.2).

    Arguments:
        model: the trained GCN; only its weights are read (the surrogate's W).
        graph: the clean graph; the target's label is ``graph.labels[target]``.
        target: the attacked node's index.
        budget: the most flips, edges and features together.
        structure, features: which kinds of flip are allowed (features must be binary).
        direct: flip the target's own edges and features; False is the influencer attack,
            which flips only the edges and features of the target's neighbours.
        degree_test: allow only the edge flips that pass the degree likelihood-ratio test.
    """
    _check_inputs(model, graph)
    _check_gcn(model)
    n = graph.n_nodes
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = int(target)
    check_in_range(target, "target", 0, n - 1, integer=True)
    budget = _check_budget(budget)
    for name, v in (("structure", structure), ("features", features), ("direct", direct),
                    ("degree_test", degree_test)):
        check_bool(v, name)
    if features and not _is_binary(graph.features):
        raise ValueError("features=True flips binary features, but graph.features is not 0/1")
    a, x = graph.adjacency.detach().clone(), graph.features.detach().clone()
    clean_degree = a.sum(1)
    dev, label = a.device, graph.labels[target]
    if direct:
        attackers = torch.tensor([target], device=dev)
        others = torch.arange(n, device=dev)
        rows, cols = torch.full((n - 1,), target, device=dev), others[others != target]
    else:
        attackers = a[target].nonzero().squeeze(1)
        if not len(attackers):
            raise ValueError(f"target {target} has no neighbours, so no influencers: use direct=True")
        pairs = torch.cartesian_prod(attackers, torch.arange(n, device=dev))
        influencer = torch.zeros(n, dtype=torch.bool, device=dev)
        influencer[attackers] = True
        once = ~influencer[pairs[:, 1]] | (pairs[:, 0] < pairs[:, 1])  # a pair of influencers once
        pairs = pairs[(pairs[:, 1] != target) & (pairs[:, 1] != pairs[:, 0]) & once]
        rows, cols = pairs[:, 0], pairs[:, 1]
    with torch.no_grad():
        w = _weight(model)
        margin = before = _margin(surrogate_logits(model, x, a)[target], label)
        n_edges = len(rows)
        done = torch.zeros(n_edges + len(attackers) * x.shape[1], dtype=torch.bool, device=dev)
        made = torch.full((budget,), -1, device=dev)  # the candidate flipped at each step, or -1
        for step in range(budget):  # sync-free: the choice stays on the device
            xw, a_hat = x @ w, normalize_adjacency(a)
            edge = _margin(_edge_flip_logits(a, xw, target, rows, cols), label)
            degree = a.sum(1)
            forbidden = (a[rows, cols] == 1) & ((degree[rows] == 1) | (degree[cols] == 1))
            if degree_test:
                ratio = _degree_ratios(clean_degree, degree, rows, cols, 1 - 2 * a[rows, cols])
                forbidden |= ~(ratio < DEGREE_THRESHOLD)  # NaN (no degree >= 2) fails too
            edge = edge.masked_fill(forbidden, math.inf) if structure else edge.fill_(math.inf)
            z = a_hat[target] @ (a_hat @ xw)
            weight_in = (a_hat[target] @ a_hat)[attackers]  # (Â²)_{t,i}
            feat = z + weight_in[:, None, None] * (1 - 2 * x[attackers])[:, :, None] * w
            feat = _margin(feat, label).flatten()
            feat = feat if features else feat.fill_(math.inf)
            scores = torch.cat([edge, feat]).masked_fill(done, math.inf)
            best = scores.argmin()
            go = scores[best] < margin
            done[best] |= go
            made[step] = torch.where(go, best, -1)
            e = best.clamp(max=n_edges - 1)
            flip_edge = go & (best < n_edges)
            r, c = rows[e], cols[e]
            new = torch.where(flip_edge, 1 - a[r, c], a[r, c])
            a[r, c] = new
            a[c, r] = new
            f = (best - n_edges).clamp(min=0)
            i, j = attackers[f // x.shape[1]], f % x.shape[1]
            x[i, j] = torch.where(go & (best >= n_edges), 1 - x[i, j], x[i, j])
            margin = torch.where(go, scores[best], margin)
        after = _margin(surrogate_logits(model, x, a)[target], label)
        with eval_mode(model):
            real = _margin(torch.stack([model(graph.features, graph.adjacency)[target],
                                        model(x, a)[target]]), label)
    _count_flips(graph, a, x, budget)
    made, rows, cols, attackers = (t.tolist() for t in (made, rows, cols, attackers))
    edge_flips = [(rows[k], cols[k]) for k in made if 0 <= k < n_edges]  # in the order made
    feature_flips = [(attackers[(k - n_edges) // x.shape[1]], (k - n_edges) % x.shape[1])
                     for k in made if k >= n_edges]
    m_before, m_after = real.tolist()
    return NettackResult(target, budget, a, x, edge_flips, feature_flips, float(before),
                         float(after), m_before, m_after, m_after < 0,
                         degree_statistic(graph.adjacency, a))


def _project(s: torch.Tensor, budget: int, iterations: int = 40) -> torch.Tensor:
    """Euclidean projection onto ``{0 <= s <= 1, sum s <= budget}`` (Xu et al. 2019, eq. 7):
    ``clip(s - μ, 0, 1)`` with μ = 0 when the clipped sum fits, else the root of
    ``sum clip(s - μ, 0, 1) = budget``, found by bisection without leaving the device."""
    clipped = s.clamp(0, 1)
    lo, hi = s.min() - 1, s.max()  # sum clip(s - lo) = len(s) > budget, sum clip(s - hi) = 0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        over = (s - mid).clamp(0, 1).sum() > budget
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    return torch.where(clipped.sum() <= budget, clipped, (s - hi).clamp(0, 1))  # hi: feasible


def _flipped(adjacency: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
             s: torch.Tensor) -> torch.Tensor:
    """``A' = A + (1 - 2A) ∘ S`` with S the symmetric matrix of the upper-triangle vector s."""
    upper = torch.zeros_like(adjacency).index_put((rows, cols), s)
    return adjacency + (1 - 2 * adjacency) * (upper + upper.T)


@dataclass(frozen=True)
class TopologyResult(Tabular):
    """A global edge attack: the perturbed adjacency, the edges flipped (E, 2), and the accuracy
    of the model on the attacked nodes before and after (evasion)."""

    adjacency: torch.Tensor
    edge_flips: torch.Tensor
    budget: int
    clean_accuracy: float
    attacked_accuracy: float
    degree_statistic: float  # Λ of Nettack's degree test (not enforced here; < 0.004 passes)

    def table(self) -> str:
        rows = [("edge flips / budget", f"{len(self.edge_flips)} / {self.budget}"),
                ("accuracy, clean graph", self.clean_accuracy),
                ("accuracy, attacked graph", self.attacked_accuracy),
                ("degree test Λ (< 0.004 passes)", f"{self.degree_statistic:.5f}")]
        return markdown_table(["PGD topology attack", "value"], rows, decimals=[None, 3])


def pgd_topology(model: nn.Module, graph: Graph, *, budget: int, steps: int = 100,
                 lr: float = 200.0, nodes: torch.Tensor | None = None, samples: int = 20,
                 generator: torch.Generator | None = None) -> TopologyResult:
    """PGD topology attack (Xu, Chen, Liu, Chen, Weng, Hong and Lin, IJCAI 2019): evasion.

    Relax the edge flips to ``s ∈ [0, 1]^{N(N-1)/2}`` (one per pair), ``A' = A + (1 - 2A) ∘ S``
    (eq. 3); ascend the cross-entropy of the attacked nodes, ``s <- Π(s + η_t ∇_s CE)`` with
    ``η_t = lr / sqrt(t + 1)`` and Π the projection onto ``{0 <= s <= 1, 1ᵀs <= budget}``
    (eq. 7, by bisection); then draw `samples` binary flip vectors ``u ~ Bernoulli(s)`` and keep
    the one within budget of highest loss (their section 3.2). The top-`budget` entries of s
    are one more candidate, so a valid one always exists where the paper would redraw.

    Arguments:
        model: a trained node classifier ``model(features, adjacency) -> logits (N, K)``.
        graph: the clean graph.
        budget: the most edge flips.
        steps, lr: PGD iterations and base step size (the paper's 200, for a mean loss).
        nodes: the attacked nodes (the test nodes by default), with their true labels.
        samples: Bernoulli draws of the final flips.
        generator: the source of the draws (drawn on its device, moved to the graph's).
    """
    _check_inputs(model, graph)
    budget = _check_budget(budget)
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    check_positive(samples, "samples", integer=True)
    check_generator(generator)
    nodes = graph.test if nodes is None else check_nodes(nodes, graph.n_nodes)
    a, x, y = graph.adjacency.detach(), graph.features.detach(), graph.labels[nodes]
    rows, cols = torch.triu_indices(len(a), len(a), 1, device=a.device)
    s = torch.zeros(len(rows), dtype=a.dtype, device=a.device)
    with frozen(model):
        for t in range(steps):
            s = s.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x, _flipped(a, rows, cols, s))[nodes], y)
            (grad,) = torch.autograd.grad(loss, s)
            s = _project(s.detach() + lr / math.sqrt(t + 1) * grad, budget)
        with torch.no_grad():
            top = torch.zeros_like(s)
            values, where = s.topk(min(budget, len(s)))
            top[where] = (values > 0).to(s.dtype)
            draw = draw_device(generator, a.device)
            candidates = [(torch.rand(len(s), generator=generator, device=draw).to(a.device) < s)
                          .to(s.dtype) for _ in range(samples)] + [top]
            losses = torch.stack([F.cross_entropy(model(x, _flipped(a, rows, cols, u))[nodes], y)
                                  for u in candidates])
            valid = torch.stack([u.sum() <= budget for u in candidates])
            best = torch.stack(candidates)[losses.masked_fill(~valid, -math.inf).argmax()]
    adjacency = _flipped(a, rows, cols, best)
    _count_flips(graph, adjacency, graph.features, budget)
    flips = torch.stack([rows, cols], 1)[best.bool()]
    return TopologyResult(adjacency, flips, budget, gcn_accuracy(model, graph, nodes),
                          gcn_accuracy(model, graph, nodes, adjacency=adjacency),
                          degree_statistic(graph.adjacency, adjacency))


def random_flips(graph: Graph, *, budget: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """The adjacency with `budget` distinct node pairs, drawn uniformly, flipped: the baseline
    a topology attack must beat."""
    check_graph(graph)
    budget = _check_budget(budget)
    check_generator(generator)
    a = graph.adjacency.detach()
    rows, cols = torch.triu_indices(len(a), len(a), 1, device=a.device)
    if budget > len(rows):
        raise ValueError(f"budget must be at most the {len(rows)} node pairs, got {budget}")
    pick = torch.randperm(len(rows), generator=generator,
                          device=draw_device(generator, a.device))[:budget].to(a.device)
    s = torch.zeros(len(rows), dtype=a.dtype, device=a.device).index_fill(0, pick, 1)
    return _flipped(a, rows, cols, s)
