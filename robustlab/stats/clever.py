"""CLEVER: a robustness score from extreme value theory.

Weng, Zhang, Chen, Yi, Su, Gao, Hsieh and Daniel, "Evaluating the robustness of neural networks:
an extreme value theory approach" (ICLR 2018). For the margin g_j(x) = z_c(x) - z_j(x) between
the predicted class c and a target j, Lipschitz continuity in the ball B_p(x0, R) gives (their
Theorem 3.2, with q the dual norm of p, 1/p + 1/q = 1)

    ||delta||_p <= min(g_j(x0) / L_q^j, R)  =>  g_j(x0 + delta) >= 0,
    L_q^j = max over x in B_p(x0, R) of ||grad g_j(x)||_q.

CLEVER estimates L_q^j (their Algorithm 1): n_batches times, draw batch_size points uniformly in
the ball and keep the largest gradient norm; the batch maxima follow a reverse Weibull law
(Fisher-Tippett-Gnedenko, the gradient norm being bounded), whose location, fitted by maximum
likelihood, estimates L_q^j. The targeted score is min(g_j(x0) / L_q^j, R); the untargeted one
(Algorithm 2) the minimum over j != c. It is an estimate, not a bound: an attack may find an
adversarial example closer than the score.

Choices stated here:

- The samples are clipped to [0, 1], as the authors' code and ART do: the model is defined on
  images, and an attack in [0, 1] reaches only the ball's part inside the box.
- Each target class gets its own samples (CLEVER-t is run per class in Algorithm 2).
- The fit is scipy.stats.weibull_min on the negated maxima (location -L), started from the
  shapes in SHAPES in turn until a usable fit (finite, shape at most MAX_SHAPE, location at or
  above the largest maximum: the law must hold the sample) passes the Kolmogorov-Smirnov test
  at ACCEPT.
- Fallback: L is the largest sampled gradient norm (a lower estimate of the constant) when the
  largest maximum occurs more than once (within a relative TIE), or when no usable fit passes
  the test (every fit failed, put the sample maximum outside its support, or is poor). A tied
  top is an atom, which no continuous law fits: a linear model has one gradient, so all maxima
  are equal, and a small ReLU network, whose gradient takes finitely many values, often meets
  its largest one again.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from .._checks import check_generator, check_images, check_in_range, check_labels, check_norm, check_positive
from .._model import check_model, check_model_input, eval_mode, frozen, logits_of, plain
from .._random import draw_device
from ..norms import dual_norm, flat_norm, per_example, random_in_ball
from ..tables import Tabular, markdown_table

__all__ = ["Clever", "clever", "fit_reverse_weibull", "uniform_in_ball"]

SHAPES = (1.0, 5.0, 10.0, 0.1, 20.0, 50.0, 100.0)  # starting shapes, as in the authors' code
ACCEPT = 0.05  # KS p-value below which a fit is poor (the next starting shape is tried)
TIE = 1e-6  # relative: one gradient computed in two batch rows may differ in its last bits
MAX_SHAPE = 1e3  # beyond, the law is at its Gumbel limit, where the location is not identified
MIN_BATCHES = 10  # a three-parameter fit needs several times more points than parameters
ROWS = 1 << 16  # sampled points per backward pass: bounds memory when N * (K-1) * batch is large


@dataclass(frozen=True, eq=False)  # tensors: == per field would be ambiguous
class Clever(Tabular):
    """CLEVER scores and what they were computed from, per example, on the CPU in float64.

    For an untargeted call the fields describe the target class that gives the smallest score.

    Attributes:
        norm: the perturbation norm p ("l1", "l2", "linf"); gradients are measured in its dual.
        radius: R, the largest score possible.
        score: (N,) min(margin / lipschitz, R), never NaN.
        prediction, target: (N,) long, the model's class c at x and the class j of the score.
        margin: (N,) g_j(x0) = z_c(x0) - z_j(x0) >= 0.
        lipschitz: (N,) the estimated L_q^j: the fitted reverse Weibull location, or the largest
            sampled gradient norm where `fallback`.
        shape, scale: (N,) the fitted reverse Weibull shape and scale (NaN where nothing fitted).
        ks_pvalue: (N,) Kolmogorov-Smirnov p-value of the fit (NaN where nothing fitted).
        fallback: (N,) bool, where lipschitz is the sample maximum instead of the fitted location.
        maxima: (N, n_batches) the per-batch maximum gradient norms the fit saw.
    """

    norm: str
    radius: float
    score: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    margin: torch.Tensor
    lipschitz: torch.Tensor
    shape: torch.Tensor
    scale: torch.Tensor
    ks_pvalue: torch.Tensor
    fallback: torch.Tensor
    maxima: torch.Tensor

    @property
    def location(self) -> torch.Tensor:
        """The reverse Weibull location: the Lipschitz estimate itself."""
        return self.lipschitz

    def table(self) -> str:
        rows = [[i, *row] for i, row in enumerate(zip(
            self.prediction.tolist(), self.target.tolist(), self.margin.tolist(),
            self.lipschitz.tolist(), self.score.tolist(), self.shape.tolist(),
            self.ks_pvalue.tolist(), ["yes" if f else "no" for f in self.fallback.tolist()]))]
        return markdown_table(["example", "class", "target", "margin",
                               f"L ({dual_norm(self.norm)})", f"score ({self.norm}, R="
                               f"{self.radius:g})", "Weibull shape", "KS p-value", "fallback"],
                              rows)


def uniform_in_ball(x: torch.Tensor, count: int, radius: float, norm: str,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` points uniform (by volume) in the `norm` ball of `radius` around each example.

    Weng et al. Algorithm 1 samples uniformly in B_p(x0, R). L-inf: uniform in the cube. L2, L1:
    a direction from the cone measure of the unit sphere (a normalised Gaussian; signed
    Dirichlet(1, ..., 1) for L1: ``norms.random_in_ball`` made unit) times R U^(1/d), U uniform
    in [0, 1], whose law is the volume's. Drawn on the generator's device.

    Arguments:
        x: (N, ...) centres. count: points per centre. radius: R > 0. norm: "l1", "l2", "linf".
    Returns (N, count, ...) perturbed points, not clipped to [0, 1].
    """
    flat = x.new_zeros(len(x) * count, x[0].numel())
    if norm == "linf":
        delta = random_in_ball(flat, radius, norm, generator)
    else:
        u = random_in_ball(flat, 1.0, norm, generator)
        # a radius drawn as exactly 0 leaves a zero vector: the point is then x0 itself
        u = u / per_example(flat_norm(u, norm).clamp_min(torch.finfo(u.dtype).tiny), u)
        r = torch.rand(len(flat), generator=generator, device=draw_device(generator, x.device))
        delta = u * per_example(r.to(flat) ** (1.0 / flat.shape[1]) * radius, u)
    return x.unsqueeze(1) + delta.view(len(x), count, *x.shape[1:])


def fit_reverse_weibull(maxima: np.ndarray) -> tuple[float, float, float, float, bool]:
    """Maximum-likelihood reverse Weibull fit of batch maxima, with the fallback stated above.

    Weng et al. section 3.3: the maxima of a bounded variable follow a reverse Weibull law whose
    location is the bound. scipy's weibull_min fits the negated maxima (location -L), from each
    starting shape in SHAPES in turn until a usable fit passes the Kolmogorov-Smirnov test at
    ACCEPT. Usable: finite, shape in (0, MAX_SHAPE], location at or above the largest maximum.

    Arguments:
        maxima: (n,) the per-batch maximum gradient norms.
    Returns ``(location, shape, scale, ks_pvalue, fallback)``: where `fallback`, location is the
    sample maximum, and shape, scale and p-value belong to the best usable fit (NaN if none).
    """
    top = float(np.max(maxima))
    if not np.all(np.isfinite(maxima)) or np.sum(maxima >= top - TIE * abs(top)) > 1:
        return top, math.nan, math.nan, math.nan, True  # an atom at the top (see module doc)
    data, best = -np.asarray(maxima, dtype=np.float64), (math.nan, math.nan, math.nan, -1.0)
    for start in SHAPES:
        fit = _fit_from(data, start)
        if fit is not None and fit[3] > best[3]:
            best = fit
        if best[3] >= ACCEPT:
            return (*best, False)
    return top, best[1], best[2], best[3] if best[3] >= 0 else math.nan, True


def _fit_from(data: np.ndarray, start: float) -> tuple[float, float, float, float] | None:
    """One weibull_min fit of the negated maxima from starting shape `start`: ``(location L,
    shape, scale, KS p-value)``, or None when it fails or is not usable."""
    try:
        with warnings.catch_warnings():  # precision warnings on near-equal data: the KS test
            warnings.simplefilter("ignore", RuntimeWarning)  # and the checks below judge it
            shape, loc, scale = stats.weibull_min.fit(data, start)
    except (ValueError, RuntimeError, FloatingPointError):
        return None
    if not all(map(math.isfinite, (shape, loc, scale))) or not (0 < shape <= MAX_SHAPE) \
            or scale <= 0 or -loc < -data.min():
        return None
    return -float(loc), float(shape), float(scale), float(
        stats.kstest(data, "weibull_min", args=(shape, loc, scale)).pvalue)


def _check_target(target, x: torch.Tensor, prediction: torch.Tensor, k: int) -> torch.Tensor:
    """Target classes (N,), each in [0, K) and different from the model's prediction."""
    if isinstance(target, torch.Tensor):
        target = check_labels(target, x, k, name="target")
    else:
        target = torch.full_like(prediction, check_in_range(target, "target", 0, k - 1,
                                                            integer=True))
    same = (target == prediction).nonzero().flatten().tolist()  # one sync, before sampling
    if same:
        raise ValueError(f"target equals the predicted class for examples {same}: the margin "
                         f"z_c - z_j is 0 there and CLEVER has nothing to measure")
    return target


def _targets(prediction: torch.Tensor, k: int) -> torch.Tensor:
    """Every class but the prediction, (N, K-1): j = i + (i >= c) for i in 0..K-2."""
    i = torch.arange(k - 1, device=prediction.device).expand(len(prediction), -1)
    return i + (i >= prediction[:, None]).long()


def _batch_maxima(model, x, prediction, targets, *, norm, radius, batch_size, generator):
    """The largest dual-norm gradient of g_j over `batch_size` fresh points per (example, j):
    one forward and one backward for all of them, nothing read on the host. Returns (N, J)."""
    n, j = targets.shape
    points = uniform_in_ball(x.repeat_interleave(j, 0), batch_size, radius, norm, generator)
    points = points.clamp(0, 1).flatten(0, 1).requires_grad_(True)  # (N * J * B, ...)
    z = model(points)
    rows = torch.arange(len(z), device=z.device)
    c = prediction.repeat_interleave(j * batch_size)
    t = targets.flatten().repeat_interleave(batch_size)
    (g,) = torch.autograd.grad((z[rows, c] - z[rows, t]).sum(), points)
    # NaN marks a gradient we cannot measure: count it as infinitely steep (the score goes to 0)
    norms = flat_norm(g, dual_norm(norm)).nan_to_num(nan=math.inf)
    return norms.view(n, j, batch_size).amax(2)


def _sample(model, x, prediction, targets, *, norm, radius, n_batches, batch_size, generator):
    """(N, J, n_batches) per-batch maxima, examples in chunks of at most ROWS points."""
    n, j = targets.shape
    per = max(1, ROWS // (j * batch_size))
    out = torch.empty(n, j, n_batches, dtype=x.dtype, device=x.device)
    with frozen(model):
        for b in range(n_batches):
            for lo in range(0, n, per):
                sl = slice(lo, lo + per)
                out[sl, :, b] = _batch_maxima(model, x[sl], prediction[sl], targets[sl],
                                              norm=norm, radius=radius, batch_size=batch_size,
                                              generator=generator)
    return out


def clever(model: nn.Module, x: torch.Tensor, *, norm=2, radius: float, n_batches: int,
           batch_size: int, target=None, generator: torch.Generator | None = None) -> Clever:
    """CLEVER scores of `model` at each example of `x`, untargeted or towards `target`.

    Weng et al. (ICLR 2018) Algorithms 1 and 2, as described in this module's docstring: per
    example and target class j != c (c the model's prediction at x), `n_batches` maxima of
    ||grad g_j||_q over `batch_size` points uniform in the ball (clipped to [0, 1]), a reverse
    Weibull fit whose location L estimates the Lipschitz constant, score min(g_j(x0) / L, R).

    Arguments:
        model: a classifier returning logits (N, K), left exactly as found.
        x: (N, C, H, W) images in [0, 1] on the model's device and dtype.
        norm: the perturbation norm p: 1, 2 or inf (any spelling `check_norm` accepts).
        radius: R > 0, the ball sampled and the largest score returned.
        n_batches: batch maxima to fit (>= MIN_BATCHES); the paper uses 500.
        batch_size: points per batch; the paper uses 1024.
        target: None (untargeted: the minimum over j != c), a class, or (N,) classes, each
            different from the model's prediction.
        generator: the random source, drawing on its own device.
    Sampling runs on x's device without reading anything on the host; the maxima come to the
    CPU once for scipy's fits (one per example and class, of at most len(SHAPES) starts).
    """
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    norm = check_norm(norm, ("l1", "l2", "linf"))
    radius = float(check_positive(radius, "radius"))
    check_positive(n_batches, "n_batches", integer=True)
    if n_batches < MIN_BATCHES:
        raise ValueError(f"n_batches must be >= {MIN_BATCHES} to fit a three-parameter reverse "
                         f"Weibull law, got {n_batches}")
    check_positive(batch_size, "batch_size", integer=True)
    check_generator(generator)
    with torch.no_grad(), eval_mode(model):
        z0 = logits_of(model, x)
    k = z0.shape[1]
    if k < 2:
        raise ValueError(f"model must return at least 2 classes, got {k}")
    prediction = z0.argmax(1)
    targets = (_targets(prediction, k) if target is None
               else _check_target(target, x, prediction, k)[:, None])
    margins = z0.gather(1, prediction[:, None]) - z0.gather(1, targets)
    maxima = _sample(model, x, prediction, targets, norm=norm, radius=radius,
                     n_batches=n_batches, batch_size=batch_size, generator=generator)
    return _scores(maxima.double().cpu(), margins.double().cpu(), prediction.cpu(),
                   targets.cpu(), norm, radius)


def _scores(maxima, margins, prediction, targets, norm, radius) -> Clever:
    """Fit every (example, class), score each, keep the smallest score per example."""
    fits = torch.tensor([fit_reverse_weibull(m) for m in maxima.flatten(0, 1).numpy()],
                        dtype=torch.float64).view(*targets.shape, 5)
    lipschitz = fits[..., 0]
    # margin / L, with a zero gradient everywhere (L = 0) meaning no class j can be reached
    ratio = torch.where(lipschitz > 0, margins / lipschitz,
                        torch.where(margins > 0, math.inf, 0.0))
    scores = ratio.clamp(max=radius)
    best = scores.argmin(1, keepdim=True)

    def pick(t):
        return t.gather(1, best).squeeze(1)

    fit = fits.gather(1, best[..., None].expand(-1, -1, 5)).squeeze(1)
    return Clever(norm=norm, radius=radius, score=pick(scores), prediction=prediction,
                  target=pick(targets), margin=pick(margins), lipschitz=fit[:, 0],
                  shape=fit[:, 1], scale=fit[:, 2], ks_pvalue=fit[:, 3],
                  fallback=fit[:, 4].bool(),
                  maxima=maxima.gather(1, best[..., None].expand(-1, -1, maxima.shape[2]))
                  .squeeze(1))
