"""The probability of a misclassification under uniform input noise: naive Monte Carlo and
adaptive multi-level splitting.

Webb, Rainforth, Teh and Kumar, "A statistical approach to assessing neural network robustness"
(ICLR 2019), measure robustness as the probability of the event

    s(x') = max_{j != y} z_j(x') - z_y(x') >= 0,    x' ~ p(x' | x),

which is far too small for naive Monte Carlo where the network is robust (1e-10 needs ~1e11
samples to see once). Adaptive multi-level splitting (their Algorithm 1) writes it as a product
of conditional probabilities P(s >= L_k | s >= L_{k-1}), each about `rho`, with levels L_k
chosen from the particles themselves.

The input distribution p here, for both functions: each pixel independent and uniform on
[max(0, x_i - eps), min(1, x_i + eps)], i.e. the uniform distribution on the L-inf ball of
radius eps around x intersected with the image box [0, 1]^d (Webb et al.'s uniform prior within
the valid input range). Where the ball lies inside the box, x' = x + u with u uniform on
[-eps, eps]^d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats
from torch import nn

from .._checks import check_generator, check_images, check_in_range, check_labels, check_positive
from .._model import check_model, check_model_input, eval_mode, logits_of, plain
from .._random import draw_device
from ..losses import margin_loss
from ..tables import Tabular, markdown_table

__all__ = ["MonteCarlo", "Splitting", "monte_carlo", "splitting"]

CONFIDENCE = 0.95  # of Monte Carlo's one-sided Clopper-Pearson upper bound
WIDTH = 0.25  # first proposal half-width, as a fraction of each pixel's interval
BAND = (0.2, 0.5)  # acceptance rates between which the proposal width is kept
GROW, SHRINK = 1.5, 0.5  # width factors when acceptance is above / below the band
MIN_WIDTH = 1e-6


@dataclass(frozen=True, eq=False)  # tensors: == per field would be ambiguous
class MonteCarlo(Tabular):
    """Naive Monte Carlo estimates of P(s(x') >= 0), per example, on the CPU.

    Attributes:
        eps: the noise radius. n: samples per example. hits: (N,) long, samples misclassified.
        probability: (N,) float64, hits / n.
        upper: (N,) float64, one-sided 95 % Clopper-Pearson upper bound (3.0 / n, about, at 0
            hits: what n samples can rule out).
    """

    eps: float
    n: int
    hits: torch.Tensor
    probability: torch.Tensor
    upper: torch.Tensor

    @property
    def log_prob(self) -> torch.Tensor:
        """Natural log of the estimate: -inf where nothing was hit."""
        return self.probability.log()

    def table(self) -> str:
        rows = [[i, h, p, u] for i, (h, p, u) in enumerate(zip(
            self.hits.tolist(), self.probability.tolist(), self.upper.tolist()))]
        return markdown_table(["example", f"hits / {self.n}", "probability",
                               f"{CONFIDENCE:.0%} upper bound"], rows)


@dataclass(frozen=True, eq=False)  # tensors: == per field would be ambiguous
class Splitting(Tabular):
    """Adaptive multi-level splitting estimates of P(s(x') >= 0), per example, on the CPU.

    Attributes:
        eps, n_particles, rho: the call's settings.
        log_prob: (N,) float64, the natural log of the estimate, sum_k log(survivors_k / n);
            -inf where `stopped`.
        log_bound: (N,) float64, the log of the estimated P(s >= last level reached): equal to
            log_prob where the last level is 0, and an estimated upper bound on it where stopped.
        stopped: (N,) bool, where max_levels ran out before the level reached 0: the probability
            is below what that many levels resolve, about exp(log_bound).
        levels: per example the levels L_1, L_2, ... reached (the last is 0 unless stopped).
        acceptance: (N,) float64, the mean Metropolis-Hastings acceptance rate over the run.
    """

    eps: float
    n_particles: int
    rho: float
    log_prob: torch.Tensor
    log_bound: torch.Tensor
    stopped: torch.Tensor
    levels: list
    acceptance: torch.Tensor

    @property
    def log10_prob(self) -> torch.Tensor:
        """The estimate's base-10 logarithm (-inf where stopped)."""
        return self.log_prob / math.log(10)

    @property
    def probability(self) -> torch.Tensor:
        return self.log_prob.exp()

    def table(self) -> str:
        rows = [[i, lp / math.log(10), len(lv), "yes" if st else "no", lb / math.log(10), a]
                for i, (lp, lv, st, lb, a) in enumerate(zip(
                    self.log_prob.tolist(), self.levels, self.stopped.tolist(),
                    self.log_bound.tolist(), self.acceptance.tolist()))]
        return markdown_table(["example", "log10 P", "levels", "stopped", "log10 bound",
                               "acceptance"], rows)


def _box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's interval [max(0, x - eps), min(1, x + eps)], (N, 1, ...) to broadcast."""
    return (x - eps).clamp(0, 1).unsqueeze(1), (x + eps).clamp(0, 1).unsqueeze(1)


def _uniform(lo: torch.Tensor, hi: torch.Tensor, count: int, generator) -> torch.Tensor:
    """`count` draws per example from the input distribution: (N, count, ...)."""
    shape = (lo.shape[0], count, *lo.shape[2:])
    u = torch.rand(shape, generator=generator, device=draw_device(generator, lo.device))
    return lo + (hi - lo) * u.to(lo)


def _property(model: nn.Module, points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """s = max_{j != y} z_j - z_y at every point (N, P, ...) -> (N, P)."""
    n, p = points.shape[:2]
    z = model(points.flatten(0, 1))
    return margin_loss(z, y.repeat_interleave(p)).view(n, p)


def _reflect(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """`v` folded into [lo, hi] by reflection at its ends: the folded random walk stays
    symmetric, so uniform p needs no Hastings correction."""
    width = hi - lo
    t = torch.remainder(v - lo, 2 * width)
    return lo + width - (t - width).abs()


def _check(model, x, y, eps, generator):
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    y = check_labels(y, x)
    eps = float(check_positive(eps, "eps"))
    check_generator(generator)
    with torch.no_grad(), eval_mode(model):
        logits_of(model, x, y)  # (N, K) logits, labels within K: checked once, here
    return x, y, eps


@torch.no_grad()
def monte_carlo(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, n: int,
                batch_size: int = 10_000, generator: torch.Generator | None = None) -> MonteCarlo:
    """Naive Monte Carlo estimate of P(max_{j != y} z_j(x') - z_y(x') >= 0) per example.

    x' follows the input distribution of this module's docstring (uniform on the L-inf ball of
    radius `eps` within [0, 1]). The estimate is hits / n with a one-sided 95 % Clopper-Pearson
    upper bound; it sees nothing below about 1 / n, the limit splitting is for.

    Arguments:
        model: a classifier returning logits (N, K), run in eval mode and left as found.
        x: (N, C, H, W) images in [0, 1]; y: (N,) the classes whose misclassification counts.
        eps: > 0, the L-inf radius. n: samples per example. batch_size: samples per forward.
        generator: the random source, drawing on its own device.
    Hits accumulate on x's device; they are read once, at the end.
    """
    x, y, eps = _check(model, x, y, eps, generator)
    check_positive(n, "n", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    lo, hi = _box(x, eps)
    per = max(1, batch_size // len(x))
    hits = torch.zeros(len(x), dtype=torch.long, device=x.device)
    with eval_mode(model):
        for start in range(0, n, per):
            points = _uniform(lo, hi, min(per, n - start), generator)
            hits += (_property(model, points, y) >= 0).sum(1)
    hits = hits.cpu()
    upper = stats.beta.ppf(CONFIDENCE, hits.numpy() + 1, n - hits.numpy())
    upper = torch.where(hits == n, 1.0, torch.as_tensor(upper, dtype=torch.float64))
    return MonteCarlo(eps=eps, n=n, hits=hits, probability=hits.double() / n, upper=upper)


def _resample(points, s, keep, generator):
    """Each particle below the level replaced by a copy of a survivor drawn uniformly; no host
    read (survivors sorted first, an index drawn below their count)."""
    n, p = s.shape
    order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)
    count = keep.sum(1, keepdim=True)
    u = torch.rand(n, p, generator=generator, device=draw_device(generator, s.device))
    pick = order.gather(1, (u.to(s.device) * count).long().minimum(count - 1))
    index = torch.where(keep, torch.arange(p, device=s.device), pick)
    rows = torch.arange(n, device=s.device)[:, None]
    return points[rows, index], s.gather(1, index)


def _move(model, points, s, y, level, lo, hi, width, steps, generator):
    """`steps` Metropolis-Hastings moves of every particle, restricted to {s >= level}.

    Proposal: each pixel moves uniformly within +-width of its interval's length, reflected at
    the interval's ends: symmetric and inside the support, so under uniform p a move is accepted
    exactly when it stays at or above the level (Webb et al. section 4). Returns the particles,
    their s and the acceptance rate per example.
    """
    n, p = s.shape
    step = (hi - lo) * width.view(n, 1, *[1] * (points.dim() - 2))
    accepted = torch.zeros(n, device=s.device, dtype=torch.float64)
    for _ in range(steps):
        u = torch.rand(points.shape, generator=generator,
                       device=draw_device(generator, points.device)).to(points)
        proposal = _reflect(points + step * (2 * u - 1), lo, hi)
        s_new = _property(model, proposal, y)
        ok = s_new >= level[:, None]
        points = torch.where(ok.view(n, p, *[1] * (points.dim() - 2)), proposal, points)
        s = torch.where(ok, s_new, s)
        accepted += ok.sum(1)
    return points, s, accepted / (p * steps)


def _adapt(width: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """The proposal width, widened above the acceptance band and narrowed below it."""
    width = torch.where(rate > BAND[1], width * GROW, width)
    return torch.where(rate < BAND[0], width * SHRINK, width).clamp(MIN_WIDTH, 1.0)


@torch.no_grad()
def splitting(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
              n_particles: int = 1000, rho: float = 0.1, mh_steps: int = 50,
              max_levels: int = 100, generator: torch.Generator | None = None) -> Splitting:
    """Adaptive multi-level splitting estimate of log P(max_{j != y} z_j - z_y >= 0) per example.

    Webb et al. (ICLR 2019) Algorithm 1, under the input distribution of this module's
    docstring. Draw `n_particles` from it; then per level k: L_k = min(0, the particles'
    (1 - rho)-quantile of s), so a fraction about `rho` survive (their convention); add
    log(survivors / n_particles) to the estimate; stop if L_k = 0; else replace each particle
    below L_k by a copy of a random survivor and make `mh_steps` Metropolis-Hastings moves
    restricted to {s >= L_k}, the proposal width (per example, a fraction of each pixel's
    interval) widened or narrowed between levels to keep the acceptance rate in BAND.

    Arguments:
        model: a classifier returning logits (N, K), run in eval mode and left as found.
        x: (N, C, H, W) images in [0, 1]; y: (N,) the classes whose misclassification counts.
        eps: > 0, the L-inf radius of the noise.
        n_particles: particles per example (at least 2 / rho: each level must keep two).
        rho: in (0, 1), the fraction kept per level; the estimate's relative variance grows
            about as levels * (1 - rho) / (rho * n_particles).
        mh_steps: moves per level. max_levels: levels before giving up ("stopped").
        generator: the random source, drawing on its own device.
    Returns a `Splitting` result (natural logarithms). All examples advance together: one host
    read per level (whether every example has reached level 0), none in the moves.
    """
    x, y, eps = _check(model, x, y, eps, generator)
    rho = check_in_range(rho, "rho", 0, 1, low_open=True, high_open=True)
    check_positive(n_particles, "n_particles", integer=True)
    if n_particles * rho < 2:
        raise ValueError(f"n_particles must be >= 2 / rho = {math.ceil(2 / rho)} so that each "
                         f"level keeps two particles, got {n_particles}")
    check_positive(mh_steps, "mh_steps", integer=True)
    check_positive(max_levels, "max_levels", integer=True)
    n, lo, hi = len(x), *_box(x, eps)
    quantile = math.floor((1 - rho) * n_particles) + 1  # 1-based rank of the (1 - rho)-quantile
    log_p = torch.zeros(n, dtype=torch.float64, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    levels = torch.full((n, max_levels), math.nan, dtype=torch.float64, device=x.device)
    width = torch.full((n,), WIDTH, dtype=x.dtype, device=x.device)
    rates = torch.zeros(n, dtype=torch.float64, device=x.device)
    with eval_mode(model):
        points = _uniform(lo, hi, n_particles, generator)
        s = _property(model, points, y)
        for k in range(max_levels):
            level = s.kthvalue(quantile, dim=1).values.clamp(max=0)
            keep = s >= level[:, None]
            survived = (keep.sum(1).double() / n_particles).log()
            log_p = torch.where(done, log_p, log_p + survived)
            levels[:, k] = torch.where(done, math.nan, level.double())
            done = done | (level >= 0)
            if bool(done.all()):  # the one host read of a level
                break
            points, s = _resample(points, s, keep, generator)
            points, s, rate = _move(model, points, s, y, level, lo, hi, width, mh_steps,
                                    generator)
            rates += torch.where(done, 0.0, rate)
            width = _adapt(width, rate.to(width))
    return _result(eps, n_particles, rho, log_p, done, levels, rates)


def _result(eps, n_particles, rho, log_p, done, levels, rates) -> Splitting:
    """The Splitting record, on the CPU: one read of everything kept on the device."""
    log_p, done, levels, rates = log_p.cpu(), done.cpu(), levels.cpu(), rates.cpu()
    reached = [[v for v in row if not math.isnan(v)] for row in levels.tolist()]
    moved = torch.tensor([max(len(r) - 1 if d else len(r), 1) for r, d in
                          zip(reached, done.tolist())], dtype=torch.float64)
    return Splitting(eps=eps, n_particles=n_particles, rho=rho,
                     log_prob=torch.where(done, log_p, -math.inf), log_bound=log_p,
                     stopped=~done, levels=reached, acceptance=rates / moved)
