"""Incremental re-verification after a model changed (fine-tuning, pruning, quantisation): the
previous verdicts as a warm start, each reused only through a check that is sound for the new
model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_eps
from ..norms import flat_norm
from ..tables import Tabular, markdown_table
from ._complete import setup
from .crown import crown
from .milp import milp
from .types import Verdict, margin_spec

HOW = ("counterexample", "crown", "solver")


@dataclass
class Reverification(Tabular):
    """What `reverify` found: one Verdict per example (`verdicts`), how each was reached
    (`how`: "counterexample" when the previous counterexample still fools the new model,
    "crown" when CROWN alone proves a previously verified point, "solver" when the complete
    verifier ran), the previous statuses (`before`), and the total `seconds`."""

    verdicts: list
    how: list
    before: list
    seconds: float

    @property
    def reused(self) -> int:
        """How many verdicts the warm start settled without the complete verifier."""
        return sum(h != "solver" for h in self.how)

    @property
    def changed(self) -> int:
        """How many statuses differ from the previous ones (fine-tuning's effect)."""
        return sum(b != v.status for b, v in zip(self.before, self.verdicts))

    def table(self) -> str:
        rows = [(i, b, v.status, h, v.seconds) for i, (b, v, h)
                in enumerate(zip(self.before, self.verdicts, self.how))]
        return markdown_table(["example", "before", "now", "how", "seconds"], rows,
                              decimals=[None] * 4 + [3])


def _still_fools(referee, x: torch.Tensor, y: int, p, eps: float, norm: str) -> bool:
    """Whether the old counterexample p is in the ball around x and [0, 1] and misclassified by
    the new model beyond its rounding (`Referee.fooled`: alone and in a batch)."""
    if not isinstance(p, torch.Tensor) or p.shape != x.shape:
        return False
    p = p.to(x)
    inside = bool(flat_norm((p.double() - x.double())[None], norm)[0] <= eps)
    return inside and bool(((p >= 0) & (p <= 1)).all()) and referee.fooled(p, y)


def reverify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
             previous: Sequence[Verdict | None], norm: str = "linf", bounds: str = "crown",
             time_limit: float = 60.0) -> Reverification:
    """Verify the robustness of each (x, y) over the eps-ball for a changed model, reusing the
    verdicts of the model before the change.

    The warm start of incremental verification (Ugare, Singh and Misailovic, "Proof transfer
    for fast certification of multiple approximate neural networks", OOPSLA 2022; Ugare,
    Banerjee, Misailovic and Singh, "Incremental verification of neural networks" (IVAN),
    PLDI 2023): a small change of the
    weights rarely changes a verdict, so the old one is the first guess, and it is confirmed by
    a check that is sound for the new model whatever the change:
    - previously falsified: the old counterexample is run through the new model (inside the
      ball and [0, 1], misclassified beyond rounding, alone and in a batch); if it still
      fools it, the verdict is falsified at the cost of two forward passes;
    - previously verified: CROWN on the margins z_y - z_j of the new model, widened by its
      rounding bound (`crown`), proves it when every lower bound is > 0;
    - otherwise (or when the check fails, or no previous verdict): the complete `milp`.
    Old per-neuron bounds and old branch-and-bound splits are not reused: both bound the old
    weights, and they hold for the new ones only after a bound on the weight change is
    propagated through every layer (IVAN reuses the specification tree's splits as a
    heuristic order, not as bounds); without that analysis reuse would be unsound.

    Arguments:
        model: the changed model, a chain that `read_network` reads (left as found).
        x: images (N, C, H, W) in [0, 1]; y: labels (N,); eps >= 0; norm: "linf" or "l1".
        previous: one Verdict (or None when there is none) per example, from before the change
            (e.g. `milp(old_model, x, y, eps=eps)`).
        bounds, time_limit: passed to `milp` (time_limit per example).
    Returns a Reverification (verdicts, how each was reached, previous statuses, seconds).
    """
    start = time.perf_counter()
    eps = check_eps(eps)
    x, yc, norm, time_limit, referee, k, _ = setup(model, x, y, norm, time_limit, bounds, "reverify", eps)
    previous = list(previous) if isinstance(previous, Sequence) else previous
    if not isinstance(previous, list) or len(previous) != len(x) or not all(
            v is None or isinstance(v, Verdict) for v in previous):
        size = len(previous) if isinstance(previous, list) else "?"
        raise ValueError(f"previous must hold one Verdict (or None) per example, {len(x)} in all, got "
                         f"{type(previous).__name__} of length {size}")
    verdicts, how = [None] * len(x), ["solver"] * len(x)
    for i, old in enumerate(previous):  # two forward passes each
        t0 = time.perf_counter()
        if old is not None and old.status == "falsified" and _still_fools(
                referee, x[i], int(yc[i]), old.counterexample, eps, norm):
            verdicts[i] = referee.verdict(old.counterexample.to(x).clone(), int(yc[i]),
                                          "the previous counterexample still fools the changed model", t0)
            how[i] = "counterexample"
    proved = [i for i, old in enumerate(previous) if old is not None and old.verified]
    if proved:  # one batched CROWN pass
        t0 = time.perf_counter()
        idx = torch.tensor(proved, device=x.device)
        spec = margin_spec(yc[proved].to(x.device), k).to(x.dtype)
        low = crown(model, x[idx], eps=eps, norm=norm, C=spec).lower
        share = (time.perf_counter() - t0) / len(proved)
        for i, lo in zip(proved, low.min(1).values.tolist()):
            if lo > 0:
                verdicts[i] = Verdict("verified", seconds=share, reason=f"CROWN proves z_y - z_j >= {lo:.4g} "
                                      "on the changed model")
                how[i] = "crown"
    rest = [i for i, v in enumerate(verdicts) if v is None]
    if rest:  # one complete check, its set-up shared
        idx = torch.tensor(rest, device=x.device)
        for i, v in zip(rest, milp(model, x[idx], yc[rest].to(x.device), eps=eps, norm=norm, bounds=bounds,
                                   time_limit=time_limit)):
            verdicts[i] = v
    before = [None if v is None else v.status for v in previous]
    return Reverification(verdicts, how, before, time.perf_counter() - start)
