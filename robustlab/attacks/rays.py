"""RayS: a hard-label L-inf attack as a discrete search over sign directions.

`along` (the point at radius r along a direction, inside the box) is shared with Sign-OPT
(sign_opt.py), which searches radii along unit L2 directions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive
from ..norms import per_example
from .oracle import Oracle, QueryLedger, as_oracle, segments
from .square import _signs


def along(x: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The point clip(x + r v, 0, 1) at radius r (N,) along directions v (N, ...)."""
    return (x + per_example(r, x) * v).clamp(0, 1)


def block_flips(dim: int, device) -> torch.Tensor:
    """The hierarchical schedule of RayS (Algorithm 3) as a table (L, 2) of blocks [start, end)
    of the flattened image: first the empty block (the first direction as it is), then the
    whole vector, each half, each quarter, ... (ceil(dim / 2**s) long at stage s), and last the
    dim single coordinates, over which the search then cycles for good."""
    # built where the data is, from ranges: a table copied from the host would make a GPU wait
    blocks, stage = [torch.zeros(1, 2, dtype=torch.long, device=device)], 0
    while True:
        size = math.ceil(dim / 2 ** stage)
        start = torch.arange(0, dim, size, device=device)
        blocks.append(torch.stack([start, (start + size).clamp(max=dim)], 1))
        if size == 1:
            return torch.cat(blocks)
        stage += 1


@torch.no_grad()
def rays(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, eps: float | None = None,
         max_queries: int = 10_000, search_steps: int = 8,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RayS: a hard-label L-inf attack as a discrete search over sign directions.

    Chen and Gu, "RayS: a ray searching method for hard-label adversarial attack" (KDD 2020),
    Algorithms 1-3. The L-inf distance to the boundary is min over d in {-1, 1}^D of
    g(d) = min {r : label(clip(x + r d, 0, 1)) != y}. From a random sign vector d (the paper
    starts from all ones; a random one lets restarts differ), each candidate flips one block of
    d (the whole vector, then halves, quarters, ... down to single pixels: `block_flips`) and
    costs one query: is the flipped d adversarial at the best radius r so far? Only where it
    is, d takes the flip and a binary search brings r down (`search_steps` halvings: r within
    r / 2**search_steps of g(d)). Before anything is found r is 1, which covers the whole box.
    Without `eps` the radius is minimised within the budget; with `eps` an example stops as
    soon as r <= eps (the paper's "success at eps" mode).

    Every example asks one query per iteration, for its own next step (a check, or a halving
    of its current search), so a batch moves in lockstep with no host sync and no image
    evaluated for nothing while some example is still searching.

    Returns ``(x_adv, queries)``: x_adv the adversarial clip(x + r d) of least r found (within
    eps when eps is given), x where there is none; queries (N,) long, what each example cost.

    Arguments:
        eps: the L-inf radius that counts as success, or None to minimise the radius.
        max_queries: budget per example; search_steps: halvings of each binary search.
        generator: draws the first sign vector.
    """
    oracle = as_oracle(model, "label", max_queries)
    x, y, eps, _ = oracle.check_inputs(x, y, eps=eps, norm="linf", norms=("linf",))
    check_positive(search_steps, "search_steps", integer=True)
    ledger = QueryLedger(oracle, x, y, max_queries)
    n, dim = len(x), x[0].numel()
    d = _signs((n, dim), generator, x)
    radius = torch.ones(n, dtype=x.dtype, device=x.device)  # the best r; 1 spans the box
    low = torch.zeros_like(radius)  # the lower end of an example's binary search
    halvings = torch.zeros(n, dtype=torch.long, device=x.device)  # left in it; 0: checking flips
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    nxt = torch.zeros(n, dtype=torch.long, device=x.device)  # next entry of the schedule
    table = block_flips(dim, x.device)
    cycle = len(table) - dim  # where the single coordinates start
    cols = torch.arange(dim, device=x.device)

    def searching():  # without eps every row minimises its radius until the budget is spent
        return torch.ones_like(found) if eps is None else ~(found & (radius <= eps))

    for part in segments(max_queries):
        # the one host sync of a segment: the rows still searching, fixed until the next one
        if not len(act := ledger.active(searching())):
            break
        for _ in part:
            live = searching()[act] & (ledger.left()[act] >= 1)
            bis, r, lo = halvings[act] > 0, radius[act], low[act]
            at = torch.where(nxt[act] < len(table), nxt[act], cycle + (nxt[act] - cycle) % dim)
            block = (cols >= table[at, :1]) & (cols < table[at, 1:])
            cand = torch.where(bis[:, None] | ~block, d[act], -d[act])
            r_try = torch.where(bis, (lo + r) / 2, r)
            ok = ledger.fooled(along(x[act], cand.view_as(x[act]), r_try), act, False, live)
            took = live & ~bis & ok  # a flip that beats r: keep it, and search below r
            d[act] = torch.where(took[:, None], cand, d[act])
            found[act] = found[act] | took
            radius[act] = torch.where(live & ok, r_try, r)
            low[act] = torch.where(took, 0, torch.where(live & bis & ~ok, r_try, lo))
            halvings[act] = torch.where(took, search_steps, halvings[act] - (live & bis).long())
            nxt[act] = nxt[act] + (live & ~bis).long()
    done = found & ~searching() if eps is not None else found
    return ledger.result(torch.where(per_example(done, x), along(x, d.view_as(x), radius), x))
