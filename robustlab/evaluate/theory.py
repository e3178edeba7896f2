"""Two distributions on which what robustness costs is known exactly, and linear classifiers
measured on them without sampling error.

- Tsipras et al., "Robustness may be at odds with accuracy" (ICLR 2019), section 2: one feature
  that agrees with the label with probability p, and d weak Gaussian features. Accuracy needs the
  weak features; an L-inf adversary with eps >= 2 eta turns them against the label, so any
  classifier accurate to 1 - delta is robust on at most p / (1 - p) * delta (their Theorem 2.1).
- Schmidt et al., "Adversarially robust generalization requires more data" (NeurIPS 2018),
  section 4: two Gaussians at +-theta. One sample suffices to classify well when sigma is at most
  about d^(1/4); L-inf robust classification needs about eps^2 sqrt(d) samples (their Theorems 4-6).

Labels are 0/1 like the rest of the library; the papers' signs are s = 2y - 1. Features are not
images (they are unbounded), so a linear classifier ``f(x) = w.x + b`` (class 1 when positive) is
measured in closed form: against an L-inf adversary of budget eps its margin s(w.x + b) falls by
exactly eps ||w||_1 (L2: eps ||w||_2), and its margin is Gaussian given the label.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_eps, check_generator, check_in_range, check_norm, check_positive
from .._random import draw_device
from ..norms import dual_norm, flat_norm

__all__ = ["linear_accuracy_schmidt", "linear_accuracy_tsipras", "linear_robust_fit", "mean_classifier",
           "schmidt_data", "tsipras_bayes", "tsipras_bound", "tsipras_data"]


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-z / math.sqrt(2.0))


def _labels(n: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    where = draw_device(generator, device)
    y = torch.randint(0, 2, (n,), generator=generator, device=where).to(device)
    return y, (2 * y - 1).double()


def tsipras_data(n: int, *, d: int, p: float = 0.95, eta: float | None = None,
                 generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of Tsipras et al.'s distribution (2019, eq. 2): s uniform in {-1, +1},

        x_1 = s with probability p, else -s;   x_2, ..., x_{d+1} ~ N(eta s, 1) independently.

    Returns float64 features (n, d + 1) and labels y = (s + 1) / 2 (long). `eta` defaults to
    3 / sqrt(d), the paper's choice that makes averaging the weak features over 99 % accurate.
    """
    check_positive(n, "n", integer=True)
    check_positive(d, "d", integer=True)
    check_in_range(p, "p", 0.5, 1.0, low_open=True, high_open=True)
    eta = 3.0 / math.sqrt(d) if eta is None else check_eps(eta, "eta")
    generator = check_generator(generator)
    y, s = _labels(n, generator, device)
    where = draw_device(generator, device)
    agree = torch.rand(n, generator=generator, device=where, dtype=torch.float64).to(device) < p
    x1 = torch.where(agree, s, -s)
    weak = torch.randn(n, d, generator=generator, device=where, dtype=torch.float64).to(device)
    return torch.cat([x1[:, None], eta * s[:, None] + weak], 1), y


def _gaussian_accuracy(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """P(N(mean, std^2) > 0), with std = 0 read as a point mass (ties count as errors)."""
    safe = torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(std > 0, _normal_cdf(mean / safe), (mean > 0).to(mean.dtype))


def _linear(w, b) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.as_tensor(w, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64, device=w.device).reshape(())
    if not torch.isfinite(w).all() or not torch.isfinite(b):
        raise ValueError("w and b must be finite")
    return w, b


def linear_accuracy_tsipras(w, b=0.0, *, p: float, eta: float, eps: float = 0.0,
                            norm: str = "linf") -> float:
    """Exact accuracy of ``sign(w.x + b)`` on Tsipras et al.'s distribution under an adversary of
    budget `eps` (0: standard accuracy). Given s, the margin s(w.x + b) - eps ||w||_* is
    w_1 (s x_1) + N(eta sum(w_2..), ||w_2..||^2) + s b - eps ||w||_*, with s x_1 = +1 w.p. p, -1
    otherwise; the accuracy averages P(margin > 0) over s and x_1. Features are unbounded, so the
    adversary's shift -eps s sign(w) (L-inf) is always available and optimal.
    """
    w, b = _linear(w, b)
    check_in_range(p, "p", 0.5, 1.0, low_open=True, high_open=True)
    eta, eps, norm = check_eps(eta, "eta"), check_eps(eps), check_norm(norm)
    drop = eps * flat_norm(w[None], dual_norm(norm))[0]
    mean_weak, std_weak = eta * w[1:].sum(), w[1:].norm()
    total = torch.zeros((), dtype=torch.float64, device=w.device)
    for s in (-1.0, 1.0):
        for first, prob in ((w[0], p), (-w[0], 1 - p)):
            total = total + 0.5 * prob * _gaussian_accuracy(first + mean_weak + s * b - drop, std_weak)
    return float(total)


def tsipras_bayes(*, d: int, p: float, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Bayes-optimal (standard) linear classifier of Tsipras et al.'s distribution: the
    log-likelihood ratio log(p / (1 - p)) x_1 + 2 eta sum_j x_j, as (w, b = 0)."""
    check_positive(d, "d", integer=True)
    check_in_range(p, "p", 0.5, 1.0, low_open=True, high_open=True)
    eta = check_eps(eta, "eta")
    w = torch.full((d + 1,), 2 * eta, dtype=torch.float64)
    w[0] = math.log(p / (1 - p))
    return w, torch.zeros((), dtype=torch.float64)


def tsipras_bound(standard_accuracy: float, *, p: float) -> float:
    """Tsipras et al.'s Theorem 2.1: a classifier with standard accuracy 1 - delta has robust
    accuracy at most p / (1 - p) * delta against an L-inf adversary with eps >= 2 eta."""
    check_in_range(standard_accuracy, "standard_accuracy", 0.0, 1.0)
    check_in_range(p, "p", 0.5, 1.0, low_open=True, high_open=True)
    return min(1.0, p / (1 - p) * (1 - standard_accuracy))


def schmidt_data(n: int, *, d: int, sigma: float, theta: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of Schmidt et al.'s Gaussian model (2018, Definition 1): s uniform in {-1, +1},
    x ~ N(s theta, sigma^2 I). `theta` defaults to the all-ones vector (||theta||_2 = sqrt(d), as
    in the paper). Returns float64 features (n, d) and labels y = (s + 1) / 2 (long)."""
    check_positive(n, "n", integer=True)
    check_positive(d, "d", integer=True)
    check_positive(sigma, "sigma")
    theta = _theta(theta, d, device)
    generator = check_generator(generator)
    y, s = _labels(n, generator, device)
    where = draw_device(generator, device)
    noise = torch.randn(n, d, generator=generator, device=where, dtype=torch.float64).to(device)
    return s[:, None] * theta + sigma * noise, y


def _theta(theta, d: int, device) -> torch.Tensor:
    if theta is None:
        return torch.ones(d, dtype=torch.float64, device=device)
    theta = torch.as_tensor(theta, dtype=torch.float64, device=device)
    if theta.shape != (d,) or not torch.isfinite(theta).all():
        raise ValueError(f"theta must be a finite vector of shape ({d},), got {tuple(theta.shape)}")
    return theta


def linear_accuracy_schmidt(w, b=0.0, *, theta: torch.Tensor, sigma: float, eps: float = 0.0,
                            norm: str = "linf") -> float:
    """Exact accuracy of ``sign(w.x + b)`` on Schmidt et al.'s model under an adversary of budget
    `eps` (0: standard accuracy): given s, the margin is N(w.theta + s b, sigma^2 ||w||^2) less
    eps ||w||_*, so the accuracy is the mean over s of Phi((w.theta + s b - eps ||w||_*) /
    (sigma ||w||_2)); 1 minus it is the paper's (robust) classification error."""
    w, b = _linear(w, b)
    theta = _theta(theta, w.numel(), w.device)
    check_positive(sigma, "sigma")
    eps, norm = check_eps(eps), check_norm(norm)
    drop = eps * flat_norm(w[None], dual_norm(norm))[0]
    std = sigma * w.norm()
    return float(sum(0.5 * _gaussian_accuracy(w @ theta + s * b - drop, std) for s in (-1.0, 1.0)))


def _signed(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError("x must be a floating tensor of shape (n, d)")
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),):
        raise ValueError(f"y must be a tensor of shape ({len(x)},)")
    if ((y != 0) & (y != 1)).any():
        raise ValueError("y must hold labels 0 and 1 only")
    return x.double(), (2 * y - 1).double()


def mean_classifier(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Schmidt et al.'s estimator: w = (1/n) sum_i s_i x_i (b = 0), the classifier their upper
    bounds (Theorems 4 and 5) are proved for."""
    x, s = _signed(x, y)
    return (s[:, None] * x).mean(0)


def linear_robust_fit(x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
                      steps: int = 500, lr: float = 0.05,
                      l2: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial training of a linear classifier with the exact inner maximum: minimise

        mean_i softplus(eps ||w||_* - s_i (w.x_i + b)) + l2 ||w||^2 / 2,

    the logistic loss at the worst point of each eps-ball (for a linear model the inner problem of
    Madry et al.'s min-max has this closed form; Goodfellow et al. 2015, section 5). eps = 0 is
    plain logistic regression. Full-batch Adam from zero: deterministic, no generator.
    Returns (w, b) as float64 tensors.
    """
    x, s = _signed(x, y)
    eps, norm = check_eps(eps), check_norm(norm)
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    l2 = check_eps(l2, "l2")
    params = [torch.zeros(x.shape[1], dtype=torch.float64, device=x.device),
              torch.zeros((), dtype=torch.float64, device=x.device)]
    moments = [(torch.zeros_like(q), torch.zeros_like(q)) for q in params]
    beta1, beta2 = 0.9, 0.999
    with torch.enable_grad():
        for t in range(1, steps + 1):
            w, b = (q.requires_grad_(True) for q in params)
            worst = s * (x @ w + b) - eps * flat_norm(w[None], dual_norm(norm))[0]
            loss = F.softplus(-worst).mean() + 0.5 * l2 * w.square().sum()
            grads = torch.autograd.grad(loss, [w, b])
            # Adam (Kingma and Ba 2015) written out: torch.optim's first step costs seconds of setup
            for i, (g, (m, v)) in enumerate(zip(grads, moments)):
                m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
                moments[i] = (m, v)
                step = lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + 1e-8)
                params[i] = (params[i] - step).detach()
    return params[0], params[1]
