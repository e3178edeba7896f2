"""Randomized smoothing: Gaussian-noise training, PREDICT and CERTIFY, certified accuracy.

Cohen, Rosenfeld and Kolter, "Certified adversarial robustness via randomized smoothing"
(ICML 2019). A base classifier f is turned into the smoothed classifier

    g(x) = argmax_c P(f(x + e) = c),    e ~ N(0, sigma^2 I).

If the top class has probability p_A >= underline(p_A) > 1/2, g is constant on the L2 ball of
radius ``sigma * Phi^-1(underline(p_A))`` around x (their Theorem 1 with p_B <= 1 - p_A).
g cannot be evaluated exactly, so the paper gives two Monte Carlo algorithms, both here:

- ``predict`` (PREDICT): ``n`` noisy samples; return the top class when a two-sided binomial
  test between the top two counts rejects "they are equally likely" at level ``alpha``,
  otherwise abstain. It returns a wrong answer with probability at most ``alpha``.
- ``certify`` (CERTIFY): guess the top class from ``n0`` samples (selection), then bound its
  probability from below with a one-sided Clopper-Pearson interval on ``n`` fresh samples
  (estimation); certify radius ``sigma * Phi^-1(p_A)`` if ``p_A > 1/2``, else abstain. A
  returned radius is wrong (g is not robust at it) with probability at most ``alpha``.

``gaussian_noise`` is the training objective the paper uses so that f classifies well under
noise; ``certified_accuracy`` measures the certified accuracy at several radii.

The noisy inputs ``x + e`` are not clipped to [0, 1], as in the paper: the theorem is about
the Gaussian distribution itself, and clipping would make the noise non-Gaussian.
Abstentions are the class ``-1`` (``ABSTAIN``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from .._checks import (
    check_generator,
    check_images,
    check_in_range,
    check_label_range,
    check_labels,
    check_logits,
    check_nonnegative,
    check_positive,
)
from .._model import check_model, check_model_input, eval_mode, plain
from .._random import draw_device
from ..tables import Tabular, markdown_table

__all__ = ["ABSTAIN", "CertifiedAccuracy", "certified_accuracy", "certify", "gaussian_noise",
           "lower_confidence_bound", "predict", "sample_counts", "two_sided_pvalue"]

ABSTAIN = -1


def _noise(shape, *, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn on the generator's device, on like's device."""
    dev = draw_device(generator, like.device)
    return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def gaussian_noise(*, sigma: float, generator: torch.Generator | None = None):
    """An Objective for ``train.fit``: cross-entropy on ``x + N(0, sigma^2 I)``.

    Cohen et al. section 4 (and Lecuyer et al. 2019): train the base classifier with Gaussian
    data augmentation at the sigma it will be smoothed with. One fresh noise draw per example
    and step, on x's device (from `generator`, on its device, when given); the noisy input is
    not clipped to [0, 1], as in the paper. Returns ``objective(model, x, y) -> loss``.
    """
    sigma = check_positive(sigma, "sigma")
    return _noise_objective(sigma, generator, _noise, f"gaussian_noise(sigma={sigma:g})")


def _noise_objective(scale: float, generator, noise, name: str):
    """CE on ``x + scale * noise(x.shape, like=x, generator=generator)``, named `name`."""
    check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        noisy = x + scale * noise(x.shape, like=x, generator=generator)
        return F.cross_entropy(check_logits(model(noisy), len(x)), y)

    objective.__name__ = objective.__qualname__ = name
    return objective


def _check_common(model, x, sigma, alpha, batch_size, generator):
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    sigma = check_positive(sigma, "sigma")
    if alpha is not None:
        check_in_range(alpha, "alpha", 0, 1, low_open=True, high_open=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_generator(generator)
    return x, float(sigma)


@torch.no_grad()
def sample_counts(model: nn.Module, x: torch.Tensor, *, sigma: float, n: int,
                  batch_size: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
    """SAMPLEUNDERNOISE of Cohen et al.: how often the base classifier ``argmax model(x + e)``
    picks each class over `n` draws ``e ~ N(0, sigma^2 I)`` per example.

    Returns an ``(N, K)`` long tensor on x's device (row sums `n`). The N * n noisy copies go
    through the model in eval mode, `batch_size` at a time, the mode of every submodule restored
    afterwards; counts accumulate on the device (a scatter-add, which never waits for the
    device), so sampling never syncs with the host (checking x does, once). Draws come from
    `generator`, on its device.
    """
    x, sigma = _check_common(model, x, sigma, None, batch_size, generator)
    check_positive(n, "n", integer=True)
    return _sample_counts(model, x, sigma=sigma, n=n, batch_size=batch_size, generator=generator)


def _sample_counts(model, x, *, sigma, n, batch_size, generator, noise=_noise) -> torch.Tensor:
    """SAMPLEUNDERNOISE with ``sigma * noise(shape, like=, generator=)``: standard normal draws
    by default, another distribution's standard draws for `certificates` (Laplace)."""
    rows_total, counts, k = len(x) * n, None, 0
    with eval_mode(model):
        for start in range(0, rows_total, batch_size):
            stop = min(start + batch_size, rows_total)
            rows = torch.arange(start, stop, device=x.device) // n  # example of each copy
            xb = x.index_select(0, rows)
            noisy = xb + sigma * noise(xb.shape, like=xb, generator=generator)
            logits = check_logits(model(noisy), stop - start)
            if counts is None:
                k = logits.shape[1]
                counts = torch.zeros(len(x) * k, dtype=torch.long, device=x.device)
            top = rows * k + logits.argmax(1)
            counts.scatter_add_(0, top, torch.ones_like(top))
    return counts.view(len(x), k)


def two_sided_pvalue(n_a, n_b):
    """P-value of the two-sided binomial test of ``n_a`` successes in ``n_a + n_b`` trials
    against p = 1/2 (BINOMPVALUE of PREDICT), element-wise on arrays or tensors of counts.

    The null distribution is symmetric, so the two-sided p-value is
    ``min(1, 2 * P(X <= min(n_a, n_b)))``, X ~ Bin(n_a + n_b, 1/2): exactly what
    ``scipy.stats.binomtest(n_a, n_a + n_b).pvalue`` returns, vectorised. No trials: 1.
    """
    a, b = (torch.as_tensor(v).double() for v in (n_a, n_b))  # scipy returns a float for 0-d
    p = 2 * stats.binom.cdf(torch.minimum(a, b).numpy(), (a + b).numpy(), 0.5)
    p = torch.as_tensor(p, dtype=torch.float64).reshape(a.shape).clamp(max=1.0)
    return torch.where(a + b == 0, 1.0, p)


def lower_confidence_bound(successes, trials: int, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion
    (LOWERCONFBOUND of CERTIFY), element-wise on counts: the alpha quantile of
    Beta(k, n - k + 1), and 0 for k = 0. It equals the lower end of the two-sided exact
    interval at level 1 - 2 alpha, ``scipy.stats.binomtest(k, n).proportion_ci(1 - 2 * alpha,
    method="exact").low``. Returns a float64 tensor."""
    k = torch.as_tensor(successes).double()
    bound = stats.beta.ppf(alpha, k.clamp(min=1).numpy(), (trials - k + 1).numpy())
    return torch.where(k == 0, 0.0, torch.as_tensor(bound, dtype=torch.float64).reshape(k.shape))


def _top_two(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top class, its count and the runner-up's count, per row (ties: the lower index first)."""
    if counts.shape[1] < 2:
        counts = torch.cat([counts, torch.zeros_like(counts)], 1)
    values, index = counts.topk(2, dim=1)
    return index[:, 0], values[:, 0], values[:, 1]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, sigma: float, n: int = 1000,
            alpha: float = 0.001, batch_size: int = 1000,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """PREDICT of Cohen et al.: the smoothed classifier's class for each example, or abstain.

    Draws `n` noisy copies of each example, takes the two most frequent classes c_A, c_B of the
    base classifier (counts n_A >= n_B) and returns c_A when the two-sided binomial test of
    n_A successes in n_A + n_B trials against p = 1/2 has p-value <= `alpha`, else ``-1``
    (abstain). The probability of returning a class other than g(x) is at most `alpha`.

    Returns an ``(N,)`` long tensor on x's device, ``-1`` where it abstains. One host sync (the
    counts, read once for scipy). The model is left exactly as found.
    """
    x, sigma = _check_common(model, x, sigma, alpha, batch_size, generator)
    check_positive(n, "n", integer=True)
    counts = _sample_counts(model, x, sigma=sigma, n=n, batch_size=batch_size,
                            generator=generator).cpu()
    top, n_a, n_b = _top_two(counts)
    keep = two_sided_pvalue(n_a, n_b) <= alpha
    return torch.where(keep, top, ABSTAIN).to(x.device)


@torch.no_grad()
def certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CERTIFY of Cohen et al.: the smoothed classifier's class and a certified L2 radius.

    Per example: selection, the most frequent base class c_A over `n0` noisy copies; estimation,
    its count n_A over `n` fresh copies and the one-sided (1 - alpha) Clopper-Pearson lower
    bound p_A on its probability (``lower_confidence_bound``). If p_A > 1/2 it returns c_A with
    radius ``sigma * Phi^-1(p_A)`` (``scipy.stats.norm.ppf``); otherwise it abstains. With
    probability at least 1 - alpha over the noise, a returned class is g(x) and g(x') = c_A
    for every ``||x' - x||_2 < radius``. The defaults are the paper's (n0 = 100, n = 100,000,
    alpha = 0.001).

    Returns ``(prediction, radius)``, both ``(N,)`` on x's device: `prediction` long, the class
    c_A or ``-1`` (abstain); `radius` of x's dtype, > 0 where certified and exactly 0 where it
    abstains. Raises ValueError naming the argument for sigma <= 0, n0 > n, alpha outside
    (0, 1), and for images outside [0, 1]. Two host syncs (one per sampling stage). The model
    is left exactly as found (eval mode while sampling, every submodule's mode restored).
    """
    prediction, radius, _ = _certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                     batch_size=batch_size, generator=generator)
    return prediction, radius


def _certify(model, x, *, sigma, n0, n, alpha, batch_size, generator):
    """CERTIFY, and the number of classes K the model returned."""
    x, guess, p_a, k = _lower_bound(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                    batch_size=batch_size, generator=generator)
    certified = p_a > 0.5
    radius = torch.from_numpy(float(sigma) * stats.norm.ppf(p_a.clamp(min=0.5).numpy()))
    radius = torch.where(certified, radius, 0.0)
    prediction = torch.where(certified, guess, ABSTAIN)
    return prediction.to(x.device), radius.to(device=x.device, dtype=x.dtype), k


def _lower_bound(model, x, *, sigma, n0, n, alpha, batch_size, generator, noise=_noise):
    """CERTIFY's two sampling stages with `noise` of scale `sigma`: the checked x, the guessed
    class c_A and the (1 - alpha) lower bound on its probability (both on the CPU), and K."""
    x, sigma = _check_common(model, x, sigma, alpha, batch_size, generator)
    check_positive(n0, "n0", integer=True)
    check_positive(n, "n", integer=True)
    if n0 > n:
        raise ValueError(f"n0 (selection samples) must be <= n (estimation samples), got "
                         f"n0={n0} > n={n}")
    counts0 = _sample_counts(model, x, sigma=sigma, n=n0, batch_size=batch_size,
                             generator=generator, noise=noise)
    guess = counts0.argmax(1)
    counts = _sample_counts(model, x, sigma=sigma, n=n, batch_size=batch_size,
                            generator=generator, noise=noise)
    n_a = counts.gather(1, guess[:, None])[:, 0].cpu()
    return x, guess.cpu(), lower_confidence_bound(n_a, n, alpha), counts.shape[1]


@dataclass
class CertifiedAccuracy(Tabular):
    """Certified accuracy of a smoothed classifier at each radius in `radii`.

    ``accuracy[i]`` is the fraction of examples that CERTIFY classifies correctly with a
    certified radius >= ``radii[i]``. ``prediction`` (N,) long (-1 = abstain), ``radius`` (N,)
    and ``labels`` (N,) are the per-example results behind it, on the CPU.
    """

    sigma: float
    radii: list[float]
    accuracy: list[float]
    prediction: torch.Tensor
    radius: torch.Tensor
    labels: torch.Tensor

    @property
    def correct(self) -> torch.Tensor:
        """Which examples are certified with the right class (N,) bool (radius > 0 there)."""
        return self.prediction == self.labels

    @property
    def abstained(self) -> float:
        """The fraction of examples where CERTIFY abstained."""
        return (self.prediction == ABSTAIN).double().mean().item()

    def at(self, r: float) -> float:
        """Certified accuracy at radius `r`: correct with a certified radius >= r."""
        return (self.correct & (self.radius >= r)).double().mean().item()

    def table(self) -> str:
        return markdown_table(["radius", f"certified accuracy (sigma={self.sigma:g})"],
                              [[float(r), a] for r, a in zip(self.radii, self.accuracy)],
                              decimals=[None, 3])

    def plot(self, ax=None, *, label: str | None = None, **plot_kwargs):
        """Certified accuracy against radius on `ax` (a new figure if None): the full curve
        from the per-example radii, with the tabulated radii marked. Several sigmas can share
        one `ax`; each curve is labelled with its sigma unless `label` says otherwise."""
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(5, 3.5))
        top = max([*self.radii, self.radius.max().item()]) * 1.05 or 1.0
        grid = torch.linspace(0, top, 400)
        curve = [self.at(r) for r in grid.tolist()]
        line, = ax.plot(grid.numpy(), curve, label=label or f"sigma = {self.sigma:g}",
                        **plot_kwargs)
        ax.plot(self.radii, self.accuracy, "o", color=line.get_color())
        ax.set_xlabel("L2 radius")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend()
        return ax


def _check_radii(radii) -> list[float]:
    """One radius (a number or a 0-d tensor) or a 1-D sequence of them, as numbers >= 0."""
    if isinstance(radii, torch.Tensor):
        if radii.dim() > 1:
            raise ValueError(f"radii must be one radius or a 1-D list of them, got a tensor of "
                             f"shape {tuple(radii.shape)}")
        radii = radii.tolist()  # a 0-d tensor gives one number
    if isinstance(radii, (int, float, str)):  # one radius (a string is no list of them)
        return [check_nonnegative(radii, "radii")]
    try:
        radii = list(radii)
    except TypeError:
        raise TypeError(f"radii must be a number or a list of numbers, got "
                        f"{type(radii).__name__}") from None
    if not radii:
        raise ValueError("radii must hold at least one radius")
    return [check_nonnegative(r, f"radii[{i}]") for i, r in enumerate(radii)]


def certified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                       radii: float | Sequence[float] | torch.Tensor, n0: int = 100, n: int = 100_000,
                       alpha: float = 0.001, batch_size: int = 1000,
                       generator: torch.Generator | None = None) -> CertifiedAccuracy:
    """Certified accuracy of the smoothed `model` at each radius: runs ``certify`` on every
    example (same arguments) and counts those certified with the right class and a radius
    >= r (Cohen et al.'s "approximate certified test set accuracy"). `radii` is one radius (a
    number or 0-d tensor) or a 1-D sequence or tensor of them. Returns a
    ``CertifiedAccuracy`` that prints as a markdown table and plots with ``.plot(ax)``."""
    radii = _check_radii(radii)
    x = plain(check_images(x))
    y = check_labels(y, x)
    prediction, radius, k = _certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha,
                                     batch_size=batch_size, generator=generator)
    check_label_range(y, k)
    prediction, radius, y = prediction.cpu(), radius.cpu(), y.cpu()
    result = CertifiedAccuracy(sigma=float(sigma), radii=radii, accuracy=[], prediction=prediction,
                               radius=radius, labels=y)
    result.accuracy = [result.at(r) for r in radii]
    return result
