"""Kendall's rank correlation between a complexity measure and the generalisation gap.

The tutorial's Table 2 (after Jin et al., "How does weight correlation affect the
generalisation ability of deep neural networks?", NeurIPS 2020) ranks complexity measures by
how well they order networks by their generalisation gap: over every pair of networks (i, j),
the pair is concordant when the measure and the gap move the same way, discordant when they
move opposite ways, and tied when either does not move. Kendall (1938):

    tau_a = (C - D) / P                                  P = n (n - 1) / 2 pairs
    tau_b = (C - D) / sqrt((P - T_measure) (P - T_gap))  T_x = pairs tied in x

With no ties the two are equal, which is why both reproduce the tutorial's printed tau values
(its networks all differ in gap and, unrounded, in every measure). With ties, tau_b (the
default, scipy.stats.kendalltau's) still reaches +-1 for a perfect (weak) ordering; tau_a
counts a tie as neither agreement nor disagreement over all pairs, as Jiang et al.
("Fantastic generalization measures and where to find them", ICLR 2020) average the signs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .._checks import check_choice
from ..tables import Tabular, markdown_table

VARIANTS = ("a", "b")


@dataclass(frozen=True)
class KendallResult(Tabular):
    """Kendall's tau of one measure against the gap, with the pair counts behind it.

    ``concordant + discordant + ties`` is the number of pairs, n (n - 1) / 2; ``ties`` counts
    the pairs tied in the measure or in the gap (or both), ``ties_measure`` and ``ties_gap``
    each side on its own (a pair tied in both counts in each).
    """

    tau: float
    concordant: int
    discordant: int
    ties: int
    ties_measure: int
    ties_gap: int
    n: int
    variant: str = "b"
    name: str = "measure"

    @property
    def pairs(self) -> int:
        return self.n * (self.n - 1) // 2

    def table(self) -> str:
        return markdown_table(["measure", "concordant", "discordant", "ties", f"tau_{self.variant}"],
                              [[self.name, self.concordant, self.discordant, self.ties, self.tau]],
                              decimals=[None, None, None, None, 3])


@dataclass(frozen=True)
class KendallTable(Tabular):
    """Kendall's tau of several measures against one gap, laid out as the tutorial's Table 2:
    one column per measure, rows for concordant pairs, discordant pairs, ties and tau."""

    results: dict[str, KendallResult]

    def __getitem__(self, name: str) -> KendallResult:
        return self.results[name]

    def table(self) -> str:
        names = list(self.results)
        rows = [["Concordant pairs", *(self.results[k].concordant for k in names)],
                ["Discordant pairs", *(self.results[k].discordant for k in names)],
                ["Tied pairs", *(self.results[k].ties for k in names)],
                ["Kendall's tau", *(self.results[k].tau for k in names)]]
        return markdown_table(["", *names], rows, decimals=[None] + [2] * len(names))


def _as_vector(values, name: str) -> torch.Tensor:
    """A 1-D float64 tensor of finite numbers from a sequence, array or tensor."""
    try:
        v = torch.as_tensor(values if not isinstance(values, torch.Tensor) else values.detach().cpu(),
                            dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from err
    if v.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per network), got shape "
                         f"{tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or infinite values: a rank needs finite numbers")
    return v


def _signs(v: torch.Tensor) -> torch.Tensor:
    """sign(v_j - v_i) for every pair i < j, as a flat vector of -1, 0, +1."""
    i, j = torch.triu_indices(len(v), len(v), offset=1)
    return torch.sign(v[j] - v[i])


def kendall(measure, gap, *, variant: str = "b", name: str = "measure") -> KendallResult:
    """Kendall's tau between a complexity measure and the generalisation gap over networks.

    Kendall, "A new measure of rank correlation" (Biometrika 1938); tau_b for ties (Kendall
    1945), as used by the tutorial's Table 2 and Jin et al. (NeurIPS 2020).

    Arguments:
        measure: one value per network (a sequence, array or 1-D tensor of finite numbers).
        gap: the generalisation gap of the same networks, in the same order.
        variant: "b" (default; ties shrink the denominator) or "a" (over all pairs).
        name: the measure's name, for the printed table.
    Returns a KendallResult with ``tau`` (0.0 when every pair is tied) and the counts.
    """
    check_choice(variant, VARIANTS, "variant")
    m, g = _as_vector(measure, "measure"), _as_vector(gap, "gap")
    if len(m) != len(g):
        raise ValueError(f"measure and gap must have one value per network each, got {len(m)} "
                         f"and {len(g)}")
    if len(m) < 2:
        raise ValueError(f"measure must hold at least 2 networks to form a pair, got {len(m)}")
    sm, sg = _signs(m), _signs(g)
    product = sm * sg
    concordant, discordant = int((product > 0).sum()), int((product < 0).sum())
    ties_m, ties_g = int((sm == 0).sum()), int((sg == 0).sum())
    pairs = len(m) * (len(m) - 1) // 2
    denominator = pairs if variant == "a" else math.sqrt((pairs - ties_m) * (pairs - ties_g))
    tau = (concordant - discordant) / denominator if denominator > 0 else 0.0
    return KendallResult(tau=tau, concordant=concordant, discordant=discordant,
                         ties=pairs - concordant - discordant, ties_measure=ties_m,
                         ties_gap=ties_g, n=len(m), variant=variant, name=name)


def kendall_table(measures: Mapping[str, Sequence], gap, *, variant: str = "b") -> KendallTable:
    """Kendall's tau of each named measure against `gap`, printed in Table 2's layout.

    Arguments:
        measures: measure name -> one value per network (same order as `gap`).
        gap: the generalisation gap per network.
        variant: "b" or "a", as in `kendall`.
    """
    if not isinstance(measures, Mapping) or not measures:
        raise ValueError("measures must be a non-empty mapping of name -> values per network")
    return KendallTable({str(k): kendall(v, gap, variant=variant, name=str(k))
                         for k, v in measures.items()})
