"""Distortion and query statistics of an attack's successful examples, and the smallest
budget at which PGD succeeds (`pgd_distortion`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_positive
from .._model import check_attack_inputs, predict
from ..attacks import pgd
from ..losses import is_fooled
from ..norms import flat_norm, per_example
from ..tables import Tabular, markdown_table


def _check_success(success, n: int) -> torch.Tensor:
    if not isinstance(success, torch.Tensor) or success.dtype != torch.bool:
        raise TypeError(f"success must be a bool tensor, got "
                        f"{getattr(success, 'dtype', type(success).__name__)}")
    if success.shape != (n,):
        raise ValueError(f"success must have shape ({n},), got {tuple(success.shape)}")
    return success


def _mean_median(v: torch.Tensor) -> tuple[float, float]:
    if v.numel() == 0:
        return math.nan, math.nan
    v = v.double()
    # quantile interpolates: the median of [1, 4] is 2.5 (torch.median would say 1)
    return v.mean().item(), v.quantile(0.5).item()


def distortion_stats(x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor, *,
                     l0_tol: float = 1e-6) -> dict[str, float]:
    """Success rate and L0/L1/L2/L-inf size of the successful perturbations x_adv - x.

    The statistics of minimum-norm attacks (Carlini and Wagner, IEEE S&P 2017, Tables IV-VI;
    Moosavi-Dezfooli et al., DeepFool, CVPR 2016): how far an attack had to go, over the
    examples it broke. L0 counts changed pixels (a pixel changed in any channel counts once,
    as in C&W and the one-pixel attack), ignoring changes below `l0_tol` (float round-off of
    attacks that work in another space, such as C&W's tanh).

    Arguments:
        x, x_adv: (N, C, H, W) originals and attacked images.
        success: (N,) bool, which examples the attack broke.
    Returns a dict: ``success_rate``, ``n_success`` and ``{l0,l1,l2,linf}_{mean,median}``
    (NaN when nothing succeeded).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor):
        raise TypeError("x and x_adv must be tensors")
    if x.shape != x_adv.shape or x.dim() != 4:
        raise ValueError(f"x and x_adv must have the same shape (N, C, H, W), got "
                         f"{tuple(x.shape)} and {tuple(x_adv.shape)}")
    success = _check_success(success, len(x)).to(x.device)
    delta = (x_adv - x)[success].double()
    out = {"success_rate": success.float().mean().item() if len(x) else math.nan,
           "n_success": int(success.sum())}
    changed = (delta.abs() > l0_tol).any(1).flatten(1).sum(1)
    for norm, v in [("l0", changed), ("l1", flat_norm(delta, "l1")), ("l2", flat_norm(delta, "l2")),
                    ("linf", flat_norm(delta, "linf"))]:
        out[f"{norm}_mean"], out[f"{norm}_median"] = _mean_median(v)
    return out


def query_stats(queries: torch.Tensor, success: torch.Tensor) -> dict[str, float]:
    """Success rate and the number of model queries the successful examples took.

    The statistics of query-based black-box attacks (Andriushchenko et al., Square attack,
    ECCV 2020, Table 1; Chen et al., HopSkipJump, IEEE S&P 2020): mean and median queries
    over the examples broken, since failures just exhaust the budget.

    Arguments:
        queries: (N,) queries spent per example, the second item of what every black-box
            attack returns, ``(x_adv, queries)``.
        success: (N,) bool, which examples the attack broke.
    Returns a dict: ``success_rate``, ``n_success``, ``queries_mean``, ``queries_median``.
    """
    queries = torch.as_tensor(queries)
    if queries.dim() != 1 or queries.is_complex() or queries.dtype == torch.bool:
        raise ValueError(f"queries must be a 1-D tensor of counts, got shape {tuple(queries.shape)} "
                         f"and dtype {queries.dtype}")
    if (queries < 0).any():
        raise ValueError("queries must be >= 0")
    success = _check_success(success, len(queries)).to(queries.device)
    mean, median = _mean_median(queries[success])
    return {"success_rate": success.float().mean().item() if len(queries) else math.nan,
            "n_success": int(success.sum()), "queries_mean": mean, "queries_median": median}


@dataclass(frozen=True)
class PGDDistortion(Tabular):
    """Per example: ``eps``, the smallest radius at which PGD was seen to succeed (inf where
    it failed at `high`; 0 where the clean input is already misclassified); ``failed``, the
    largest radius below it at which PGD was seen to fail (`high` where PGD never succeeded;
    0 where no tried radius failed, radius 0 being a failure on a correctly classified input);
    ``x_adv``, the misclassified point found at ``eps`` (x itself where none); ``distance``,
    its `norm` distance from x (<= eps up to float rounding); ``fooled``, whether one was
    found."""

    eps: torch.Tensor
    failed: torch.Tensor
    x_adv: torch.Tensor
    distance: torch.Tensor
    fooled: torch.Tensor
    norm: str

    def table(self) -> str:
        found = self.eps[self.fooled].double()
        median = found.quantile(0.5).item() if found.numel() else math.nan
        mean_gap = (self.eps - self.failed)[self.fooled].double().mean().item() if found.numel() else math.nan
        return markdown_table(["norm", "fooled", "median eps", "mean eps - failed eps"],
                              [[self.norm, f"{int(self.fooled.sum())} / {len(self.eps)}", median, mean_gap]],
                              decimals=[None, None, 4, 5])


def pgd_distortion(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "l2",
                   high: float, bisections: int = 12, steps: int = 100, step_factor: float = 2.5,
                   loss: str = "ce", random_start: bool = False,
                   generator: torch.Generator | None = None) -> PGDDistortion:
    """The smallest radius at which PGD finds an adversarial example, per example, by bisection.

    PGD (Madry et al., ICLR 2018) answers "is there an adversarial example within eps?" only
    with yes (it found one) or "not found". Searching eps for the boundary between the two
    turns it into a minimum-norm attack, an upper bound on the minimal distortion (eq. 6 of
    the tutorial) to set beside a verifier's certified radius (a lower bound) and C&W's
    distortion. Each example keeps a bracket [failed, eps]: PGD failed at `failed` and fooled
    the model at `eps`; every round runs PGD once on the whole batch at the midpoints (one
    radius per example) and halves each bracket. The step is alpha = step_factor * radius /
    steps, so that the iterate's path is step_factor times the radius at every radius (2.5:
    the common rule of thumb; Madry et al. themselves fixed alpha, 0.01 for eps = 0.3 on
    MNIST). PGD's success need not be monotone in eps, so `eps` is a radius at which PGD
    succeeded, not the smallest at which it could; `failed` is no lower bound on the minimal
    distortion. Example i's result after k rounds is within high / 2^k of a boundary of PGD's
    success. Under L1, PGD's SLIDE step (attacks.pgd) spreads each step evenly over its top
    5 % of coordinates instead of the single steepest one, so even on a linear model w.x + b
    the radius found exceeds the minimal L1 distance, by the ratio of max |w_i| to the mean
    |w_i| of the coordinates moved (13 % on the model of tests/test_evaluate_distortion.py):
    a valid upper bound, but a loose one.

    Arguments:
        norm: "linf", "l2" or "l1", the norm of the ball and of `distance`.
        high: the largest radius tried; examples PGD cannot fool there get eps = inf.
        bisections: rounds of halving; steps, step_factor, loss, random_start, generator: PGD's
            (random_start=False by default: from x itself, BIM's start, so that the test at
            each radius does not depend on a draw).
    Reads the host a few times per round (PGD's checks of its arguments at entry), never per
    PGD step. The model is left as found; everything comes back on x's device.
    """
    x, y, _, norm = check_attack_inputs(model, x, y, norm=norm, norms=("linf", "l2", "l1"))
    check_positive(high, "high")
    check_positive(bisections, "bisections", integer=True)
    check_positive(steps, "steps", integer=True)
    check_positive(step_factor, "step_factor")

    def fools(radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # alpha > 0 even where the radius is 0 (an example misclassified already): its ball is x
        alpha = (step_factor * radius / steps).clamp_min(torch.finfo(x.dtype).tiny)
        adv = pgd(model, x, y, eps=radius, alpha=alpha, steps=steps, norm=norm, loss=loss,
                  random_start=random_start, generator=generator)
        return adv, is_fooled(predict(model, adv).argmax(1), y, False)

    wrong = is_fooled(predict(model, x).argmax(1), y, False)
    hi = torch.where(wrong, 0.0, torch.full((len(x),), float(high), dtype=x.dtype, device=x.device))
    lo = torch.zeros_like(hi)
    best, fooled = fools(hi)
    best = torch.where(per_example(fooled, x), best, x)
    for _ in range(bisections):
        mid = (lo + hi) / 2
        adv, now = fools(mid)
        now = now & fooled  # examples never fooled keep their bracket [0, high]
        hi, lo = torch.where(now, mid, hi), torch.where(now | ~fooled, lo, mid)
        best = torch.where(per_example(now, x), adv, best)
    inf = torch.full_like(hi, math.inf)
    # never fooled: hi is still `high`, the radius PGD was seen to fail at
    return PGDDistortion(eps=torch.where(fooled, hi, inf), failed=torch.where(fooled, lo, hi),
                         x_adv=best.detach(),
                         distance=torch.where(fooled, flat_norm(best - x, norm), inf),
                         fooled=fooled, norm=norm)
