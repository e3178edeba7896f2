"""Test generation for neural networks guided by coverage (the tutorial's software-testing
methods): a coverage-guided fuzzer, random testing at the same budget, and concolic testing.

- `fuzz`: coverage feedback on random mutants (Odena et al., TensorFuzz, ICML 2019; Xie et
  al., DeepHunter, ISSTA 2019);
- `random_testing`: the baseline, uniform mutants of the seeds with no feedback;
- `concolic`: one LP per uncovered neuron (Sun et al., "Concolic testing for deep neural
  networks", ASE 2018).

Every mutant stays within `eps` of the seed it descends from (L-inf: every pixel within eps;
L0: at most eps entries changed) and inside [0, 1]. A generated input is adversarial when the
model's prediction on it differs from its seed's label (the given `y`, else the model's own
prediction at the seed). Budgets count model evaluations of generated inputs (the seeds are
evaluated once beforehand, by every method alike); concolic's budget counts LP solves.

All three return a `Testing`: the coverage curve (evaluations -> coverage), the final
`Coverage`, the tests generated with the index of their seed, and the adversarial ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from torch import nn

from .._checks import check_choice, check_eps, check_generator, check_images, check_labels, check_positive
from .._model import check_model, check_model_input, plain, predict
from .._random import draw_device
from ..tables import Tabular, markdown_table
from ..verify.network import MaxPool, Reshape
from ..verify.network import ReLU as ReadReLU
from ..verify.rounding import as_float64, read_exact
from .coverage import CRITERIA, MCDC, Coverage, activations, coverage

__all__ = ["Testing", "concolic", "fuzz", "random_testing"]

NORMS = ("linf", "l0")
# MC/DC items are pairs of inputs: a mutant alone covers none, so these criteria cannot steer
PER_INPUT = tuple(c for c in CRITERIA if c not in MCDC)


@dataclass(frozen=True, eq=False)  # tensors: == per field would be ambiguous
class Testing(Tabular):
    """What a test generator produced.

    Attributes:
        method: "fuzz", "random" or "concolic". criterion: the coverage criterion.
        steps: evaluations (fuzz, random) or LP solves (concolic) after each round, from 0.
        curve: (len(steps),) coverage value after each round (never decreasing).
        coverage: the final `Coverage` of the seeds and the tests together.
        tests: (T, C, H, W) the generated inputs kept as tests; origins: (T,) their seeds.
        adversarial: (A, C, H, W) generated inputs the model misclassifies;
            adversarial_origins: (A,) their seeds.
        evaluations: model evaluations of generated inputs.
        targets: (T,) concolic only: the neuron (flat index of `coverage.covered`) each test
            was solved for. failures: concolic only: LP solutions that missed their neuron once
            executed in the model's dtype; infeasible: LPs with no solution.
    """

    method: str
    criterion: str
    steps: tuple[int, ...]
    curve: torch.Tensor
    coverage: Coverage
    tests: torch.Tensor
    origins: torch.Tensor
    adversarial: torch.Tensor
    adversarial_origins: torch.Tensor
    evaluations: int
    targets: torch.Tensor | None = None
    failures: int = 0
    infeasible: int = 0

    def table(self) -> str:
        return markdown_table(
            ["method", "criterion", "evaluations", "tests", "adversarial", "coverage"],
            [[self.method, self.criterion, self.evaluations, len(self.tests),
              len(self.adversarial), self.coverage.value]],
            decimals=[None, None, None, None, None, 4])


# --------------------------------------------------------------------------- arguments

def _seed_inputs(model, seeds, y):
    """The seeds checked against the model, and their labels (the model's where y is None)."""
    check_model(model)
    seeds = plain(check_images(seeds, "seeds"))
    check_model_input(model, seeds, "seeds")
    logits = predict(model, seeds)
    if y is None:
        return seeds, logits.argmax(1)
    y = check_labels(y, seeds)
    if y.numel() and int(y.max()) >= logits.shape[1]:
        raise ValueError(f"y holds labels outside [0, {logits.shape[1]})")
    return seeds, y


def _budget(eps, norm: str, d: int):
    """L-inf: a radius > 0; L0: a count of entries >= 1 (at most all d of them)."""
    check_choice(norm, NORMS, "norm")
    if norm == "l0":
        return min(check_positive(eps, "eps", integer=True), d)
    eps = check_eps(eps)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return eps


def _check_criterion(criterion: str) -> None:
    if criterion in MCDC:
        raise ValueError(f"criterion {criterion!r} covers pairs of inputs, which no single "
                         f"mutant can raise; use one of {list(PER_INPUT)}")
    check_choice(criterion, PER_INPUT, "criterion")


# --------------------------------------------------------------------------- mutations

def _uniform(like: torch.Tensor, generator) -> torch.Tensor:
    """U[0, 1) of `like`'s shape, drawn by the library's rule (robustlab/_random.py)."""
    dev = draw_device(generator, like.device)
    return torch.rand(like.shape, generator=generator, device=dev).to(like)


def _within(x: torch.Tensor, seed: torch.Tensor, eps: float) -> torch.Tensor:
    """`x` projected onto the L-inf ball of radius eps around `seed`, then into [0, 1]."""
    return torch.minimum(torch.maximum(x, seed - eps), seed + eps).clamp(0, 1)


def _mutate_linf(parent, seed, eps: float, generator) -> torch.Tensor:
    """TensorFuzz's mutation: uniform noise in [-eps, eps] on the parent, kept in the seed's
    ball and the box (so mutations accumulate along a queue's lineage)."""
    return _within(parent + (_uniform(parent, generator) * 2 - 1) * eps, seed, eps)


def _mutate_l0(parent, seed, k: int, generator) -> torch.Tensor:
    """Redraw entries of the parent, keeping at most k entries changed from the seed: the
    entries the parent already changed are chosen first (they rank above any fresh one), then
    random others; a chosen changed entry keeps its value or is redrawn with probability 1/2."""
    p, s = parent.flatten(1), seed.flatten(1)
    changed = p != s
    rank = _uniform(p, generator) + changed
    chosen = torch.zeros_like(changed).scatter(1, rank.topk(k, 1).indices, True)
    redraw = (_uniform(p, generator) < 0.5) | ~changed
    out = torch.where(chosen, torch.where(redraw, _uniform(p, generator), p), s)
    return out.view_as(parent)


def _mutate(parent, seed, eps, norm: str, generator) -> torch.Tensor:
    if norm == "l0":
        return _mutate_l0(parent, seed, eps, generator)
    return _mutate_linf(parent, seed, eps, generator)


# --------------------------------------------------------------------------- fuzzing loop

def _loop(model, seeds, labels, *, feedback: bool, criterion, budget, eps, norm, batch_size,
          params, generator) -> Testing:
    """The shared loop of `fuzz` (feedback: mutate queue entries, keep the batches that raise
    coverage) and `random_testing` (mutate the seeds, keep everything)."""
    total = coverage(model, seeds, criterion, **params)
    queue, lineage = seeds, torch.arange(len(seeds), device=seeds.device)
    steps, counts, mutants, origins, fooled, kept = [0], [total.covered.sum()], [], [], [], []
    dev = draw_device(generator, seeds.device)
    while steps[-1] < budget:
        n = min(batch_size, budget - steps[-1])
        pick = torch.randint(len(queue), (n,), generator=generator, device=dev).to(seeds.device)
        where = lineage[pick]
        batch = _mutate(queue[pick], seeds[where], eps, norm, generator)
        cov = coverage(model, batch, criterion, **params)
        gained = (cov.covered & ~total.covered).any()
        total = total | cov
        mutants.append(batch)
        origins.append(where)
        fooled.append(predict(model, batch).argmax(1) != labels[where])
        # one host read per round: the queue's length decides the next round's draw
        if feedback and bool(gained):
            queue, lineage = torch.cat([queue, batch]), torch.cat([lineage, where])
            kept.append(len(mutants) - 1)
        steps.append(steps[-1] + n)
        counts.append(total.covered.sum())
    keep = kept if feedback else range(len(mutants))
    tests = torch.cat([mutants[i] for i in keep]) if keep else seeds[:0]
    test_origins = torch.cat([origins[i] for i in keep]) if keep else lineage[:0]
    fooled_all, all_mutants, all_origins = torch.cat(fooled), torch.cat(mutants), torch.cat(origins)
    curve = torch.stack(counts).double() / max(total.total, 1)
    return Testing("fuzz" if feedback else "random", criterion, tuple(steps), curve, total,
                   tests, test_origins, all_mutants[fooled_all], all_origins[fooled_all],
                   steps[-1])


def _prepare(model, seeds, y, criterion, budget, eps, norm, batch_size, params, generator):
    _check_criterion(criterion)
    budget = check_positive(budget, "budget", integer=True)
    batch_size = check_positive(batch_size, "batch_size", integer=True)
    check_generator(generator)
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict of the criterion's arguments, got "
                        f"{type(params).__name__}")
    seeds, labels = _seed_inputs(model, seeds, y)
    eps = _budget(eps, norm, seeds[0].numel())
    return dict(model=model, seeds=seeds, labels=labels, criterion=criterion, budget=budget,
                eps=eps, norm=norm, batch_size=batch_size, params=params or {},
                generator=generator)


def fuzz(model: nn.Module, seeds: torch.Tensor, y: torch.Tensor | None = None, *,
         criterion: str = "neuron", budget: int, eps: float, norm: str = "linf",
         batch_size: int = 32, params: dict | None = None,
         generator: torch.Generator | None = None) -> Testing:
    """Coverage-guided fuzzing after TensorFuzz (Odena et al., ICML 2019) and DeepHunter (Xie
    et al., ISSTA 2019): a queue starts with the seeds; each round draws `batch_size` entries
    uniformly, mutates them within the budget around their original seed, and appends the
    batch to the queue when it covers an item nothing covered before (DeepHunter keeps whole
    mutant batches this way); mutants the model misclassifies are reported.

    Arguments:
        seeds: (N, C, H, W) inputs in [0, 1]. y: their labels, or None for the model's
            predictions at the seeds.
        criterion: a per-input criterion of `stats.coverage.coverage` (not MC/DC).
        budget: model evaluations of mutants (>= 1). eps: L-inf radius (> 0) or, with
            norm="l0", how many entries may differ from the seed (>= 1).
        norm: "linf" or "l0". batch_size: mutants per round.
        params: keyword arguments of the criterion (e.g. {"threshold": 0.25}, {"train": x}).
        generator: the random source (see robustlab/_random.py).
    """
    return _loop(**_prepare(model, seeds, y, criterion, budget, eps, norm, batch_size, params,
                            generator), feedback=True)


def random_testing(model: nn.Module, seeds: torch.Tensor, y: torch.Tensor | None = None, *,
                   criterion: str = "neuron", budget: int, eps: float, norm: str = "linf",
                   batch_size: int = 32, params: dict | None = None,
                   generator: torch.Generator | None = None) -> Testing:
    """Random testing, the baseline of both generators: `budget` mutants of seeds drawn
    uniformly, each uniform in the L-inf ball of the seed within [0, 1] (or, for L0, `eps`
    random entries redrawn uniformly), with no feedback; every mutant is a test.

    Arguments: as in `fuzz`.
    """
    return _loop(**_prepare(model, seeds, y, criterion, budget, eps, norm, batch_size, params,
                            generator), feedback=False)


# --------------------------------------------------------------------------- concolic testing

def _read(model: nn.Module, seeds: torch.Tensor) -> list:
    """The model's layers in float64 on the CPU, checked to compute what the model computes;
    an error names what concolic cannot encode as linear constraints."""
    box = torch.zeros_like(seeds[:1]), torch.ones_like(seeds[:1])
    try:
        net, _ = read_exact(model, *box)
    except ValueError as err:
        raise ValueError(f"model: concolic testing solves LPs over ReLU networks; {err}") from err
    if any(isinstance(layer, MaxPool) for layer in net.layers):
        raise ValueError("model has a MaxPool2d: concolic testing here encodes affine and ReLU "
                         "layers only (a max is not linear under a fixed ReLU pattern)")
    if not any(isinstance(layer, ReadReLU) for layer in net.layers):
        raise ValueError("model has no ReLU: concolic testing targets ReLU neurons")
    return as_float64(net, "cpu").layers


def _forms(layers: list, x0: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every ReLU layer's pre-activation as an affine function of the input, valid where the
    activation pattern of the layers before it is that of `x0` (Sun et al. 2018, Sec. 4: the
    concolic execution fixes the pattern): [(A (n, d), c (n,), active at x0 (n,))].

    Arguments:
        layers: the float64 layers of `_read`. x0: one input (1, C, H, W), float64.
    """
    d = x0.numel()
    a = torch.eye(d, dtype=torch.float64).view(d, *x0.shape[1:])  # columns: the input's basis
    c, z, out = torch.zeros_like(x0), x0, []
    for layer in layers:
        if isinstance(layer, ReadReLU):
            on = z > 0
            out.append((a.flatten(1).T, c.flatten(), on.flatten()))
            a, c, z = a * on, c * on, z * on
        elif isinstance(layer, Reshape):
            a, c, z = layer.linear(a), layer.linear(c), layer.linear(z)
        else:  # Dense, Conv, ChannelAffine: x -> linear(x) + bias
            a, c, z = layer.linear(a), layer(c), layer(z)
    return out


def _solve(forms, layer: int, unit: int, x0, low, high, level: float):
    """DeepConcolic's LP for one neuron (Sun et al. 2018, Sec. 5): minimise t = ||x - x0||_inf
    subject to the activation pattern of x0 in the layers before `layer`, the target
    pre-activation >= level, and low <= x <= high. Returns x (float64 numpy) or None."""
    d = x0.numel()
    x0 = x0.flatten().numpy()
    eye, ones = np.eye(d), np.ones((d, 1))
    rows, rhs = [np.hstack([eye, -ones]), np.hstack([-eye, -ones])], [x0, -x0]
    for a, c, on in forms[:layer]:
        sign = np.where(on.numpy(), -1.0, 1.0)[:, None]  # active: -(a x + c) <= 0
        rows.append(np.hstack([sign * a.numpy(), np.zeros((len(a), 1))]))
        rhs.append(-sign[:, 0] * c.numpy())
    a, c, _ = forms[layer]
    rows.append(np.hstack([-a[unit].numpy(), [0.0]])[None])
    rhs.append(np.array([c[unit].item() - level]))
    bounds = [*zip(low.flatten().tolist(), high.flatten().tolist()), (0, None)]
    res = linprog(np.r_[np.zeros(d), 1.0], A_ub=np.vstack(rows), b_ub=np.concatenate(rhs),
                  bounds=bounds, method="highs")
    return res.x[:d] if res.status == 0 else None


def _concolic_args(model, budget, eps, threshold, margin):
    budget = check_positive(budget, "budget", integer=True)
    if eps is not None:
        eps = check_eps(eps)
        if eps <= 0:
            raise ValueError(f"eps must be > 0 or None, got {eps}")
    threshold = check_eps(threshold, "threshold")
    margin = check_eps(margin, "margin")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    check_model(model)
    return budget, eps, threshold, margin


def _pre(model, x) -> torch.Tensor:
    """Every ReLU unit's pre-activation on `x`, (N, neurons), in the order of the coverage."""
    return torch.cat([pre for _, pre, _ in activations(model, x, conv="unit")], 1)


def _pick(pre: torch.Tensor, tried: torch.Tensor, covered: torch.Tensor):
    """DeepConcolic's requirement closest to being satisfied: (test, neuron) with the largest
    pre-activation among uncovered neurons and untried pairs, or None when none is left."""
    score = pre.masked_fill(tried | covered.cpu()[None], -torch.inf)
    best = int(score.argmax())
    return None if score.view(-1)[best] == -torch.inf else divmod(best, pre.shape[1])


def _box(seed: torch.Tensor, eps: float | None):
    """Where a test of `seed` may lie: [0, 1], within eps of the seed when eps is given."""
    if eps is None:
        return torch.zeros_like(seed), torch.ones_like(seed)
    return (seed - eps).clamp_min(0), (seed + eps).clamp_max(1)


def concolic(model: nn.Module, seeds: torch.Tensor, y: torch.Tensor | None = None, *,
             budget: int, eps: float | None = None, threshold: float = 0.0,
             margin: float = 1e-3) -> Testing:
    """Concolic testing for neuron coverage after DeepConcolic (Sun, Wu, Ruan, Huang and
    Kwiatkowska, ASE 2018): repeatedly take the uncovered neuron closest to being activated
    (the largest pre-activation over the tests so far, and the test where it happens), fix that
    test's activation pattern in the layers before the neuron, solve with HiGHS the LP of
    least L-inf change that lifts the neuron's pre-activation to threshold + margin, run the
    solution on the model in its own dtype, and keep it when it really covers the neuron.

    A pair (test, neuron) is tried once: an infeasible LP, or a solution the model's rounding
    leaves below the threshold (counted in `failures`), moves on to the next best pair. Stops
    after `budget` solves or when no pair is left. Units are read per position (conv="unit").

    Arguments:
        seeds: (N, C, H, W) inputs in [0, 1]. y: their labels, or None for the model's.
        budget: LP solves (>= 1). eps: keep tests within this L-inf radius of their seed, or
            None for anywhere in [0, 1].
        threshold: neuron coverage's threshold (output > threshold covers).
        margin: how far past the threshold the LP asks (> 0), against float32 rounding.
    """
    budget, eps, threshold, margin = _concolic_args(model, budget, eps, threshold, margin)
    seeds, labels = _seed_inputs(model, seeds, y)
    layers = _read(model, seeds)
    sizes = [len(a) for a, _, _ in _forms(layers, seeds[:1].cpu().double())]
    total = coverage(model, seeds, "neuron", threshold=threshold, conv="unit")
    if total.total != sum(sizes):
        raise ValueError("model: its nn.ReLU modules are not the ReLU layers its chain of layers "
                         "reads (a ReLU applied twice or outside the chain)")
    start = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    pre = _pre(model, seeds).cpu().double()
    tried = torch.zeros_like(pre, dtype=torch.bool)
    pool, origin = seeds, torch.arange(len(seeds), device=seeds.device)
    steps, values, targets, failures = [0], [total.value], [], 0
    while steps[-1] < budget and (pair := _pick(pre, tried, total.covered)) is not None:
        (i, j), layer = pair, next(k for k in range(len(sizes)) if pair[1] < start[k + 1])
        tried[i, j] = True
        x0, (low, high) = pool[i:i + 1], _box(seeds[origin[i:i + 1]], eps)
        here = x0.cpu().double()
        sol = _solve(_forms(layers, here), layer, j - start[layer], here, low.cpu().double(),
                     high.cpu().double(), threshold + margin)
        steps.append(steps[-1] + 1)
        if sol is not None:
            # the cast to the model's dtype may round a coordinate past a bound
            x = torch.minimum(torch.maximum(torch.from_numpy(sol).view_as(x0).to(x0), low), high)
            cov = coverage(model, x, "neuron", threshold=threshold, conv="unit")
            hit = bool(cov.covered[j])
            failures += not hit
        if sol is not None and hit:
            total = total | cov
            pool, origin = torch.cat([pool, x]), torch.cat([origin, origin[i:i + 1]])
            pre = torch.cat([pre, _pre(model, x).cpu().double()])
            tried = torch.cat([tried, torch.zeros_like(tried[:1])])
            targets.append(j)
        values.append(total.value)
    infeasible = len(steps) - 1 - failures - len(targets)
    tests, test_origins = pool[len(seeds):], origin[len(seeds):]
    fooled = predict(model, tests).argmax(1) != labels[test_origins] if len(tests) else \
        torch.zeros(0, dtype=torch.bool, device=seeds.device)
    return Testing("concolic", "neuron", tuple(steps), torch.tensor(values, dtype=torch.float64),
                   total, tests, test_origins, tests[fooled], test_origins[fooled],
                   len(steps) - 1 - infeasible,
                   torch.tensor(targets, dtype=torch.long, device=seeds.device), failures,
                   infeasible)
