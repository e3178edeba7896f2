"""Certified radii of randomized smoothing beside Cohen et al.'s: Laplace smoothing with an L1
certificate (Teng et al. 2020) and the differential-privacy bound of Lecuyer et al. (2019).

All three radii are functions of the same quantity, a lower bound p_A on the probability that
the base classifier returns the top class under noise (CERTIFY's Clopper-Pearson bound, with
the runner-up bounded by p_B <= 1 - p_A):

| function | paper | noise | radius (0 where p_A <= 1/2) |
| --- | --- | --- | --- |
| `cohen_radius` | Cohen et al. 2019, Thm. 1 | N(0, sigma^2 I) | L2: sigma Phi^-1(p_A) |
| `lecuyer_radius` | Lecuyer et al. 2019, Prop. 1 | N(0, sigma^2 I) | L2: sup over (eps, delta) |
| `laplace_radius` | Teng et al. 2020 | Laplace(0, b) per pixel | L1: -b ln(2 (1 - p_A)) |

`laplace_certify` is CERTIFY (`robustlab.defences.smoothing.certify`) with Laplace noise and
the L1 radius; `laplace_noise` is the matching training objective (Teng et al. train the base
classifier under the noise it will be smoothed with, as Cohen et al. do with Gaussian noise).
The radius functions are element-wise torch (float64); they read the host once, to check that
p_A holds probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_positive
from .._random import draw_device
from .smoothing import ABSTAIN, _lower_bound, _noise_objective

__all__ = ["cohen_radius", "laplace_certify", "laplace_noise", "laplace_radius", "lecuyer_radius"]

# eps grid of `lecuyer_radius`: the Gaussian mechanism's bound needs eps <= 1
_EPS_GRID = 2000


def _check_p(p_a) -> torch.Tensor:
    """p_A as a float64 tensor in [0, 1] (one read of the host to check it, as any argument)."""
    p = torch.as_tensor(p_a, dtype=torch.float64)
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):  # NaN fails too
        raise ValueError("p_a must be probabilities in [0, 1] (a lower bound on p_A)")
    return p


def cohen_radius(p_a, *, sigma: float) -> torch.Tensor:
    """Cohen, Rosenfeld and Kolter (ICML 2019), Theorem 1 with p_B = 1 - p_A: the L2 radius

        R = sigma Phi^-1(p_A)    (0 where p_A <= 1/2)

    of Gaussian smoothing with noise N(0, sigma^2 I), element-wise on `p_a` (a lower bound on the
    top class's probability). Returns float64 on p_a's device."""
    sigma = check_positive(sigma, "sigma")
    p = _check_p(p_a)
    return torch.where(p > 0.5, sigma * torch.special.ndtri(p.clamp(min=0.5)), 0.0)


def lecuyer_radius(p_a, *, sigma: float) -> torch.Tensor:
    """Lecuyer et al., "Certified robustness to adversarial examples with differential privacy"
    (IEEE S&P 2019): the largest L2 radius L that their bound certifies for Gaussian noise of
    standard deviation `sigma`, as Cohen et al. compare it (their appendix).

    The Gaussian mechanism with sigma = sqrt(2 ln(1.25 / delta)) L / eps is (eps, delta)-DP
    for L2 changes up to L (eps <= 1), and Proposition 1 certifies the top class when

        p_A > e^(2 eps) p_B + (1 + e^eps) delta,    p_B = 1 - p_A.

    For each eps in (0, 1] the largest delta allowed is delta = (p_A - e^(2 eps) (1 - p_A)) /
    (1 + e^eps), and then L = sigma eps / sqrt(2 ln(1.25 / delta)); the radius is the maximum
    over a grid of 2000 eps (each point a valid certificate, so the maximum is one too; 0 where
    no eps works). It is never above `cohen_radius`, which is tight. Float64 on p_a's device.
    """
    sigma = check_positive(sigma, "sigma")
    p = _check_p(p_a)
    eps = torch.linspace(1 / _EPS_GRID, 1.0, _EPS_GRID, dtype=torch.float64, device=p.device)
    pe = p[..., None]
    delta = (pe - torch.exp(2 * eps) * (1 - pe)) / (1 + torch.exp(eps))
    ok = delta > 0
    # where delta <= 0 no delta works: any stand-in keeps the log finite, masked out below
    radius = sigma * eps / torch.sqrt(2 * torch.log(1.25 / torch.where(ok, delta, 1.0)))
    return torch.where(ok, radius, 0.0).amax(-1) if p.numel() else p.clone()


def laplace_radius(p_a, *, scale: float) -> torch.Tensor:
    """The certified L1 radius of Laplace smoothing, Teng, Lee and Yuan,
    "l1 adversarial robustness certificates: a randomized smoothing approach" (2020), with
    p_B = 1 - p_A: with i.i.d. Laplace noise of scale b = `scale` (density
    exp(-|e| / b) / (2 b)) on every input, the smoothed classifier is constant on the L1 ball of

        R = -b ln(2 (1 - p_A))    (0 where p_A <= 1/2)

    It is tight: a classifier that thresholds one pixel at distance R has
    p_A = 1 - exp(-R / b) / 2, so the formula gives back R exactly
    (tests/defences/test_certificates.py checks this identity and the certified radius of such
    a classifier). Element-wise on `p_a`; float64 on its device."""
    scale = check_positive(scale, "scale")
    p = _check_p(p_a)
    return torch.where(p > 0.5, -scale * torch.log(2 * (1 - p).clamp(max=0.5)), 0.0)


def _laplace(shape, *, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Laplace noise (b = 1) by the inverse CDF: u ~ U(-1/2, 1/2),
    e = -sign(u) ln(1 - 2 |u|); drawn on the generator's device, moved to like's."""
    dev = draw_device(generator, like.device)
    u = torch.rand(shape, generator=generator, device=dev, dtype=like.dtype) - 0.5
    tiny = torch.finfo(like.dtype).tiny  # u = -1/2 exactly would give ln 0
    return (-u.sign() * torch.log((1 - 2 * u.abs()).clamp_min(tiny))).to(like.device)


def laplace_noise(*, scale: float, generator: torch.Generator | None = None):
    """An Objective for ``train.fit``: cross-entropy on ``x + e``, e i.i.d. Laplace(0, b) with
    b = `scale` per input, the training of Teng et al.'s Laplace-smoothed classifiers (Gaussian
    augmentation as in `smoothing.gaussian_noise`, with the noise `laplace_certify` smooths
    with). One fresh draw per example and step, from `generator` (on its device) when given;
    not clipped to [0, 1]. Returns ``objective(model, x, y) -> loss``."""
    scale = check_positive(scale, "scale")
    return _noise_objective(scale, generator, _laplace, f"laplace_noise(scale={scale:g})")


@torch.no_grad()
def laplace_certify(model: nn.Module, x: torch.Tensor, *, scale: float, n0: int = 100,
                    n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CERTIFY (Cohen et al.'s algorithm) with Laplace noise and Teng et al.'s L1 radius.

    Per example: guess the top class c_A from `n0` copies ``x + e``, e i.i.d. Laplace(0, b) with
    b = `scale`; bound its probability from below, p_A, by the one-sided (1 - alpha)
    Clopper-Pearson bound on `n` fresh copies; return c_A with L1 radius
    ``laplace_radius(p_A, scale=b) = -b ln(2 (1 - p_A))`` if p_A > 1/2, else abstain (-1, radius
    0). With probability at least 1 - alpha, g(x') = c_A for every ||x' - x||_1 < radius. The
    noisy copies are not clipped to [0, 1]. Arguments as `smoothing.certify` (its defaults);
    returns ``(prediction, radius)``, (N,) each on x's device, radius of x's dtype. The model is
    left as found (eval mode while sampling). Two host reads, one per sampling stage.
    """
    scale = check_positive(scale, "scale")
    x, guess, p_a, _ = _lower_bound(model, x, sigma=scale, n0=n0, n=n, alpha=alpha,
                                    batch_size=batch_size, generator=generator, noise=_laplace)
    radius = laplace_radius(p_a, scale=scale)
    prediction = torch.where(p_a > 0.5, guess, ABSTAIN)
    return prediction.to(x.device), radius.to(device=x.device, dtype=x.dtype)
