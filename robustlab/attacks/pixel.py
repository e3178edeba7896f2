"""Attacks that change a single pixel.

The tutorial's traffic-light example (Wu, Wicker, Ruan, Huang and Kwiatkowska, "A game-based
approximate verification of deep neural networks with provable guarantees", TCS 2019): one
changed pixel turns a green light red.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .._checks import check_in_range, check_positive
from .._model import check_attack_inputs, eval_mode, logits_of
from .._random import draw_device
from ..losses import is_fooled, other_max
from .oracle import Oracle, QueryLedger, as_oracle

CUBE_CORNERS = tuple(itertools.product((0.0, 1.0), repeat=3))


@torch.no_grad()
def single_pixel_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        colours=None, targeted: bool = False,
                        batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Exhaustive search over every pixel position and a set of colours for a one-pixel attack.

    For each image, tries setting each of the H*W pixels to each colour in `colours` (default:
    the 8 corners of the RGB cube for 3 channels, black and white for 1) and keeps the first
    candidate that changes the label (or reaches the target when `targeted`), preferring the
    one that lowers the true-class margin most. It is a complete search over that finite set,
    so "not found" means no such one-pixel change exists there.

    Returns ``(x_adv, found)``: ``x_adv`` equals ``x`` where nothing was found.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    n, c, h, w = x.shape
    if colours is None:
        colours = CUBE_CORNERS if c == 3 else ((0.0,) * c, (1.0,) * c)
    col = torch.as_tensor(colours, dtype=x.dtype, device=x.device).view(-1, c)
    check_in_range(col.min().item(), "colours", 0, 1)
    check_in_range(col.max().item(), "colours", 0, 1)
    x_adv, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    # candidate k = (position p, colour q): p = k // len(col), q = k % len(col)
    cand = torch.arange(h * w * len(col), device=x.device)
    with eval_mode(model):
        for i in range(n):
            best, best_score = None, None
            for chunk in cand.split(batch_size):
                p, q = chunk // len(col), chunk % len(col)
                imgs = x[i].expand(len(chunk), c, h, w).clone()
                imgs[torch.arange(len(chunk), device=x.device), :, p // w, p % w] = col[q]
                z = logits_of(model, imgs, y[i:i + 1])
                label = z.argmax(1)
                hit = is_fooled(label, y[i], targeted)
                if hit.any():
                    zy = z[:, y[i]]
                    score = -zy if targeted else zy - other_max(z, y[i].expand(len(z)))
                    score = score.masked_fill(~hit, torch.inf)
                    j = score.argmin()
                    if best_score is None or score[j] < best_score:
                        best, best_score = imgs[j], score[j]
            if best is not None:
                x_adv[i], found[i] = best, True
    return x_adv, found


def _paint(x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Images (A, P, C, H, W): x (A, C, H, W) with each candidate's pixels set.

    A candidate (k, 2 + C) lists k pixels as (row, col, colour...); positions are rounded.
    """
    a, p, k = cand.shape[:3]
    h, w = x.shape[2:]
    imgs = x[:, None].repeat(1, p, 1, 1, 1)
    rows = cand[..., 0].round().long().clamp(0, h - 1)
    cols = cand[..., 1].round().long().clamp(0, w - 1)
    ia = torch.arange(a, device=x.device)[:, None, None]
    ip = torch.arange(p, device=x.device)[None, :, None]
    imgs[ia, ip, :, rows, cols] = cand[..., 2:]
    return imgs


def _mutants(pop: torch.Tensor, h: int, w: int, f: float, generator) -> torch.Tensor:
    """DE/rand/1 without crossover: x_r1 + F (x_r2 - x_r3), r1, r2, r3 distinct, kept in range."""
    a, p = pop.shape[:2]
    dev = draw_device(generator, pop.device)
    r1 = torch.randint(0, p, (a, p), generator=generator, device=dev)
    o2 = torch.randint(1, p, (a, p), generator=generator, device=dev)
    o3 = torch.randint(1, p - 1, (a, p), generator=generator, device=dev)
    o3 = o3 + (o3 >= o2)  # distinct non-zero offsets make r1, r2, r3 distinct
    ia = torch.arange(a, device=pop.device)[:, None]
    pick = [pop[ia, (r % p).to(pop.device)] for r in (r1, r1 + o2, r1 + o3)]
    kid = pick[0] + f * (pick[1] - pick[2])
    hi = torch.tensor([h - 1, w - 1] + [1] * (pop.shape[-1] - 2), dtype=pop.dtype, device=pop.device)
    return kid.clamp(min=torch.zeros_like(hi), max=hi)


@torch.no_grad()
def one_pixel(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *, pixels: int = 1,
              popsize: int = 400, max_iter: int = 100, targeted: bool = False,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-pixel attack by differential evolution, from confidence scores only.

    Su, Vargas and Sakurai, "One pixel attack for fooling deep neural networks" (IEEE TEVC
    2019), section III. A candidate is `pixels` tuples (row, col, colour); the first generation
    draws positions uniformly and colours from N(0.5, 0.5) (the paper's N(128, 127) on 0..255),
    each next one the DE/rand/1 children x_r1 + F (x_r2 - x_r3), F = 0.5, no crossover, a child
    replacing its parent when its fitness is no worse (or it fools the model). Fitness is the
    probability of the true class (targeted: minus that of the target). An example stops as
    soon as a candidate fools the model; each generation costs `popsize` queries, so at most
    popsize (max_iter + 1).

    Returns ``(x_adv, queries)``: the fooling candidate of least fitness (else x) and the
    queries (N,) long each example cost in this call.
    """
    for value, name in ((pixels, "pixels"), (popsize, "popsize"), (max_iter, "max_iter")):
        check_positive(value, name, integer=True)
    if popsize < 3:
        raise ValueError(f"popsize must be >= 3 for DE/rand/1, got {popsize}")
    budget = popsize * (max_iter + 1)
    oracle = as_oracle(model, "scores", budget)
    x, y, _, _ = oracle.check_inputs(x, y)
    ledger = QueryLedger(oracle, x, y, budget)
    n, c, h, w = x.shape

    def fitness(cand, idx):  # (fitness to minimise, fooled), each (A, P)
        probs = ledger.ask(_paint(x[idx], cand).flatten(0, 1), idx.repeat_interleave(popsize))
        probs, ys = probs.view(len(idx), popsize, -1), y[idx, None].expand(-1, popsize)
        p_y = probs.gather(2, ys[..., None])[..., 0]
        return (-p_y if targeted else p_y), is_fooled(probs.argmax(2), ys, targeted)

    dev = draw_device(generator, x.device)
    pop = torch.rand(n, popsize, pixels, 2 + c, generator=generator, device=dev)
    pop[..., 0] *= h - 1
    pop[..., 1] *= w - 1
    colours = 0.5 + 0.5 * torch.randn(n, popsize, pixels, c, generator=generator, device=dev)
    pop[..., 2:] = colours.clamp(0, 1)
    pop = pop.to(x)
    fit = torch.full((n, popsize), torch.inf, dtype=x.dtype, device=x.device)
    hit = torch.zeros(n, popsize, dtype=torch.bool, device=x.device)
    if len(act := (ledger.left() >= popsize).nonzero()[:, 0]):  # a spent Oracle may leave some nothing
        fit[act], hit[act] = fitness(pop[act], act)
    for _ in range(max_iter):
        act = (~hit.any(1) & (ledger.left() >= popsize)).nonzero()[:, 0]
        if not len(act):
            break
        kids = _mutants(pop[act], h, w, 0.5, generator)
        kid_fit, kid_hit = fitness(kids, act)
        keep = (kid_fit <= fit[act]) | kid_hit  # a fooling child ends the search: keep it
        pop[act] = torch.where(keep[..., None, None], kids, pop[act])
        fit[act], hit[act] = torch.where(keep, kid_fit, fit[act]), torch.where(keep, kid_hit, hit[act])
    won = hit.any(1)
    pick = fit.masked_fill(~hit, torch.inf).argmin(1)
    x_adv = x.clone()
    x_adv[won] = _paint(x[won], pop[won, pick[won]][:, None])[:, 0]
    return ledger.result(x_adv)
