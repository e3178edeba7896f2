"""Attacks that change a single pixel.

The tutorial's traffic-light example (Wu, Wicker, Ruan, Huang and Kwiatkowska, "A game-based
approximate verification of deep neural networks with provable guarantees", TCS 2019): one
changed pixel turns a green light red.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .._checks import check_images, check_in_range, check_label_range, check_positive
from .._model import check_attack_inputs, eval_mode, logits_of
from .._random import draw_device
from ..losses import is_fooled, other_max
from ..norms import per_example
from .oracle import Oracle, QueryLedger, as_oracle, segments

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
    check_positive(batch_size, "batch_size", integer=True)
    col = _colours(colours, x)
    with eval_mode(model):
        check_label_range(y, logits_of(model, x[:1]).shape[1])  # once: the loop never reads y back
        best = [_best_single_pixel(model, x[i], y[i], col, targeted, batch_size) for i in range(len(x))]
    score = torch.stack([b[1] for b in best])
    found = score < torch.inf
    return torch.where(per_example(found, x), torch.stack([b[0] for b in best]), x), found


def _best_single_pixel(model, xi, yi, col, targeted, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """For one image (C, H, W): the fooling one-pixel change of least score (the true-class margin,
    or minus the target's logit), over every position and colour, and that score (inf if none).
    The running best stays on the device, chunk after chunk, with no host sync."""
    c, h, w = xi.shape
    best, best_score = xi, torch.full((), torch.inf, dtype=xi.dtype, device=xi.device)
    # candidate k = (position p, colour q): p = k // len(col), q = k % len(col)
    for chunk in torch.arange(h * w * len(col), device=xi.device).split(batch_size):
        p, q = chunk // len(col), chunk % len(col)
        imgs = xi.expand(len(chunk), c, h, w).clone()
        imgs[torch.arange(len(chunk), device=xi.device), :, p // w, p % w] = col[q]
        z = logits_of(model, imgs)
        ys = yi.expand(len(z))
        zy = z.gather(1, ys[:, None])[:, 0]  # not z[:, yi]: a 0-d index may be read on the host
        score = -zy if targeted else zy - other_max(z, ys)
        score = score.masked_fill(~is_fooled(z.argmax(1), ys, targeted), torch.inf)
        # the first of the least (a later chunk must do strictly better); a 1-element index,
        # since indexing with a 0-d tensor reads it on the host
        j = score.argmin().view(1)
        top, pick = score[j][0], imgs[j][0]
        better = top < best_score
        best, best_score = torch.where(better, pick, best), torch.where(better, top, best_score)
    return best, best_score


def _colours(colours, x: torch.Tensor) -> torch.Tensor:
    """The colours (K, C) a corner search tries: by default the 8 corners of the RGB cube for 3
    channels, black and white otherwise; checked to lie in [0, 1]."""
    c = x.shape[1]
    if colours is None:
        colours = CUBE_CORNERS if c == 3 else ((0.0,) * c, (1.0,) * c)
    col = torch.as_tensor(colours, dtype=x.dtype, device=x.device)
    if not col.numel() or col.numel() % c:
        raise ValueError(f"colours must be a list of {c}-channel colours, got shape {tuple(col.shape)}")
    col = col.reshape(-1, c)
    check_in_range(col.min().item(), "colours", 0, 1)
    check_in_range(col.max().item(), "colours", 0, 1)
    return col


def _initial_population(n: int, popsize: int, pixels: int, c: int, h: int, w: int,
                        generator, device) -> torch.Tensor:
    """DE's first generation, (n, popsize, pixels, 2 + c): rows and columns uniform on
    [0, h-1] and [0, w-1] (rounded when painted), colours N(0.5, 0.5) clipped to [0, 1]."""
    dev = draw_device(generator, device)
    pop = torch.rand(n, popsize, pixels, 2 + c, generator=generator, device=dev)
    pop[..., 0] *= h - 1
    pop[..., 1] *= w - 1
    colours = 0.5 + 0.5 * torch.randn(n, popsize, pixels, c, generator=generator, device=dev)
    pop[..., 2:] = colours.clamp(0, 1)
    return pop


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
    hi = torch.ones(pop.shape[-1], dtype=pop.dtype, device=pop.device)  # not torch.tensor: a copy
    hi[0], hi[1] = h - 1, w - 1
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
    queries (N,) long each example cost in this call. Every generation is charged whole, so a
    success came in generation ``queries // popsize - 1`` (0: the random initial population,
    which `random_pixel_search` draws from too).
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

    def fitness(cand, idx, live):  # (fitness to minimise, fooled), each (A, P); `live` rows pay
        probs = ledger.ask(_paint(x[idx], cand).flatten(0, 1), idx, live)
        probs, ys = probs.view(len(idx), popsize, -1), y[idx, None].expand(-1, popsize)
        p_y = probs.gather(2, ys[..., None])[..., 0]
        return (-p_y if targeted else p_y), is_fooled(probs.argmax(2), ys, targeted)

    pop = _initial_population(n, popsize, pixels, c, h, w, generator, x.device).to(x)
    rows = torch.arange(n, device=x.device)
    live = ledger.left() >= popsize  # a spent Oracle may leave some nothing
    fit, hit = fitness(pop, rows, live)
    fit, hit = fit.masked_fill(~live[:, None], torch.inf), hit & live[:, None]
    for part in segments(max_iter):
        # the one host sync of a segment: the rows still evolving, fixed until the next one
        if not len(act := ledger.active(~hit.any(1), popsize)):
            break
        for _ in part:
            live = ~hit[act].any(1) & (ledger.left()[act] >= popsize)
            kids = _mutants(pop[act], h, w, 0.5, generator)
            kid_fit, kid_hit = fitness(kids, act, live)
            keep = live[:, None] & ((kid_fit <= fit[act]) | kid_hit)  # a fooling child ends the search
            pop[act] = torch.where(keep[..., None, None], kids, pop[act])
            fit[act], hit[act] = torch.where(keep, kid_fit, fit[act]), torch.where(keep, kid_hit, hit[act])
    pick = fit.masked_fill(~hit, torch.inf).argmin(1)
    x_adv = torch.where(per_example(hit.any(1), x), _paint(x, pop[rows, pick][:, None])[:, 0], x)
    return ledger.result(x_adv)


def _first_fooling(ledger: QueryLedger, x: torch.Tensor, rounds: list[int], propose,
                   targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ask rounds of candidates, `rounds[r]` per example in round r from ``propose(r, idx)``
    (A, k, pixels, 2 + C), until each example is fooled or cannot pay for a whole round; keep
    the first fooling candidate of an example's first successful round."""
    x_adv = x.clone()
    won = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for part in segments(len(rounds)):
        # the one host sync of a segment: budgets only shrink and successes only grow, so an
        # example that cannot pay for the smallest round now never runs again
        if not len(act := ledger.active(~won, min(rounds))):
            break
        for r in part:
            k = rounds[r]
            live = ~won[act] & (ledger.left()[act] >= k)
            imgs = _paint(x[act], propose(r, act))
            hit = ledger.fooled(imgs.flatten(0, 1), act, targeted, live).view(len(act), k) & live[:, None]
            first = imgs[torch.arange(len(act), device=x.device), hit.int().argmax(1)]  # argmax: first True
            x_adv[act] = torch.where(per_example(hit.any(1), first), first, x_adv[act])
            won[act] = won[act] | hit.any(1)
    return ledger.result(x_adv)


@torch.no_grad()
def random_pixel_search(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *,
                        pixels: int = 1, max_queries: int = 8192, round_size: int = 256,
                        targeted: bool = False,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random search for a one-pixel (or `pixels`-pixel) attack: the baseline DE must beat.

    Draws candidates from the distribution of `one_pixel`'s first generation (Su et al. 2019,
    section III: positions uniform, colours N(0.5, 0.5) clipped to [0, 1]), `round_size` per
    example per round, and stops an example at the first round holding a candidate that
    changes the label (reaches the target when `targeted`). It needs only the label, so a
    label-only Oracle will do. Rounds are charged whole: an example spends at most
    round_size * (max_queries // round_size) queries, and when it is fooled its count is the
    end of that round, as `one_pixel`'s is the end of a generation.

    Returns ``(x_adv, queries)``: the first fooling candidate (else x) and the queries (N,)
    long each example cost in this call.

    Arguments:
        model: the classifier, or an Oracle (scores or labels) that counts and caps queries.
        pixels: pixels changed per candidate; max_queries: budget per example.
        round_size: candidates per example per round; generator: draws the candidates.
    """
    for value, name in ((pixels, "pixels"), (max_queries, "max_queries"), (round_size, "round_size")):
        check_positive(value, name, integer=True)
    if round_size > max_queries:
        raise ValueError(f"round_size ({round_size}) must not exceed max_queries ({max_queries})")
    oracle = as_oracle(model, "label", max_queries)
    x, y, _, _ = oracle.check_inputs(x, y)
    ledger = QueryLedger(oracle, x, y, max_queries)
    _, c, h, w = x.shape

    def propose(r, idx):
        return _initial_population(len(idx), round_size, pixels, c, h, w, generator, x.device).to(x)

    return _first_fooling(ledger, x, [round_size] * (max_queries // round_size), propose, targeted)


@torch.no_grad()
def corner_pixel_search(model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *,
                        max_queries: int | None = None, colours=None, round_size: int = 256,
                        targeted: bool = False,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The corner-colour search of `single_pixel_search` as a black-box attack with a budget.

    Tries every (position, colour) pair, H * W * len(colours) candidates (default colours: the
    8 corners of the RGB cube, so 8,192 on a 32 x 32 image), in a random order of its own for
    each example, `round_size` per round, and stops an example at the first round holding a
    candidate that changes the label (reaches the target when `targeted`). It needs only the
    label. With the default budget, all the candidates, it finds exactly the images that
    `single_pixel_search` finds; a smaller `max_queries` stops it after the whole rounds that
    fit, so the random order makes success within a budget a fair comparison with
    `random_pixel_search` and `one_pixel`.

    Returns ``(x_adv, queries)``: the first fooling candidate in the example's order (else x)
    and the queries (N,) long each example cost in this call.

    Arguments:
        model: the classifier, or an Oracle (scores or labels) that counts and caps queries.
        max_queries: budget per example (default: every candidate); colours: (K, C) in [0, 1].
        round_size: candidates per example per round; generator: draws each example's order.
    """
    check_positive(round_size, "round_size", integer=True)
    x = check_images(x)
    _, c, h, w = x.shape
    col = _colours(colours, x)
    total = h * w * len(col)
    if max_queries is not None:
        check_positive(max_queries, "max_queries", integer=True)
    budget = total if max_queries is None else min(max_queries, total)
    oracle = as_oracle(model, "label", budget)
    x, y, _, _ = oracle.check_inputs(x, y)
    ledger = QueryLedger(oracle, x, y, budget)
    dev = draw_device(generator, x.device)
    order = torch.rand(len(x), total, generator=generator, device=dev).argsort(1).to(x.device)
    ends = [min(start + round_size, total) for start in range(0, total, round_size)]
    rounds = [end - start for start, end in zip(range(0, total, round_size), ends) if end <= budget]
    if not rounds:
        raise ValueError(f"max_queries ({max_queries}) is less than one round of round_size ({round_size})")

    def propose(r, idx):  # candidate number k is position k // len(col) with colour k % len(col)
        k = order[idx, r * round_size:r * round_size + rounds[r]]
        p, q = k // len(col), k % len(col)
        where = torch.stack([p // w, p % w], -1).to(x.dtype)
        return torch.cat([where, col[q]], -1)[:, :, None]

    return _first_fooling(ledger, x, rounds, propose, targeted)
