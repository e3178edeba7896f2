"""Laplace smoothing's L1 certificate (Teng et al. 2020) and Lecuyer et al.'s bound beside
Cohen et al.'s radius: exact on a classifier whose true radius is known, never above the true
one, Lecuyer's never above Cohen's, seeded, hygienic, and clear errors."""

import math

import pytest
import torch
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.defences import (
    cohen_radius,
    laplace_certify,
    laplace_noise,
    laplace_radius,
    lecuyer_radius,
)
from robustlab.defences.smoothing import certify
from robustlab.train import fit

from ..conftest import seeded

B = 0.5  # Laplace scale


def threshold(pixel: int, t: float, w: torch.Tensor | None = None) -> nn.Module:
    """A two-class linear classifier on 8x8 images: class 1 where w . x > t (w = e_pixel by
    default). Laplace noise is symmetric, so the smoothed classifier equals it, and its exact
    L1 radius at x is |w . x - t| / ||w||_inf."""
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        if w is None:
            w = torch.zeros(64)
            w[pixel] = 1.0
        lin.weight.copy_(torch.stack([torch.zeros(64), w]))
        lin.bias.copy_(torch.tensor([0.0, -t]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_laplace_radius_is_tight_on_one_pixel():
    """p_A = 1 - exp(-R / b) / 2 for a one-pixel threshold at distance R: the radius is R."""
    r = torch.tensor([0.05, 0.3, 1.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(laplace_radius(1 - torch.exp(-r / B) / 2, scale=B), r)
    assert laplace_radius(torch.tensor([0.0, 0.3, 0.5]), scale=B).eq(0).all()


def test_laplace_certify_is_within_the_statistical_slack_of_the_exact_radius():
    """On the one-pixel classifier the certified L1 radius is below the exact one (the bound
    holds) and above the radius of p_A minus 5 standard errors (it is not loose)."""
    pixel, t, n = 10, 0.5, 20_000
    x = torch.full((4, 1, 8, 8), 0.3)
    x[:, 0, 1, 2] = torch.tensor([0.52, 0.65, 0.9, 1.0])  # pixel 10: 0.02 ... 0.5 above t
    exact = (x[:, 0, 1, 2] - t).double()
    pred, radius = laplace_certify(threshold(pixel, t), x, scale=B, n=n, generator=seeded())
    p = 1 - torch.exp(-exact / B) / 2
    low = laplace_radius((p - 5 * (p * (1 - p) / n).sqrt()).clamp(0, 1), scale=B)
    assert pred.eq(1).all()
    assert (radius.double() <= exact + 1e-6).all(), (radius, exact)
    assert (radius.double() >= low - 1e-6).all(), (radius, low)


def test_laplace_certificate_never_exceeds_the_exact_radius_of_a_dense_classifier():
    w = torch.linspace(-1, 1, 64)
    x = torch.rand(6, 1, 8, 8, generator=seeded(1))
    t = 0.0
    model = threshold(0, t, w)
    pred, radius = laplace_certify(model, x, scale=0.1, n=5000, generator=seeded(2))
    margin = (x.flatten(1) @ w - t)
    exact = margin.abs() / w.abs().max()
    assert (pred[radius > 0] == (margin > 0).long()[radius > 0]).all()
    assert (radius <= exact + 1e-6).all()
    assert (radius > 0).any()


def test_lecuyer_is_never_above_cohen():
    p = torch.linspace(0, 1, 2001, dtype=torch.float64)[:-1]
    for sigma in (0.12, 0.5, 1.0):
        lec, coh = lecuyer_radius(p, sigma=sigma), cohen_radius(p, sigma=sigma)
        assert (lec <= coh + 1e-12).all()
        assert (lec[p <= 0.5] == 0).all() and (coh[p <= 0.5] == 0).all()
        assert (lec[p >= 0.99] > 0).all()
        # it is a good deal weaker: at p_A = 0.99 less than half Cohen's
        i = int((p - 0.99).abs().argmin())
        assert lec[i] < 0.5 * coh[i]


def test_cohen_radius_matches_certify():
    """cohen_radius is the radius smoothing.certify returns, from the same counts."""
    model = threshold(10, 0.5)
    x = torch.full((2, 1, 8, 8), 0.8)
    _, radius = certify(model, x, sigma=0.25, n=2000, generator=seeded())
    from robustlab.defences.smoothing import lower_confidence_bound, sample_counts
    g = seeded()
    sample_counts(model, x, sigma=0.25, n=100, generator=g)  # certify's selection draws
    counts = sample_counts(model, x, sigma=0.25, n=2000, generator=g)
    p_a = lower_confidence_bound(counts[:, 1], 2000, 0.001)
    torch.testing.assert_close(radius.double(), cohen_radius(p_a, sigma=0.25), atol=1e-6,
                               rtol=1e-6)


def test_laplace_certify_is_seeded_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 3)).train()
    x = torch.rand(3, 1, 8, 8, generator=seeded(3))
    x0 = x.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = laplace_certify(model, x, scale=B, n0=10, n=200, generator=seeded())
    b = laplace_certify(model, x, scale=B, n0=10, n=200, generator=seeded())
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(x, x0) and model.training and model[1].training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_laplace_noise_has_the_laplace_distribution():
    from robustlab.defences.certificates import _laplace
    e = _laplace((200_000,), like=torch.zeros(1), generator=seeded())
    assert torch.isfinite(e).all()
    assert abs(e.mean()) < 0.02 and abs(e.abs().mean() - 1) < 0.02  # E|e| = b = 1
    assert abs((e.abs() > 1).double().mean() - math.exp(-1)) < 0.01


def test_laplace_noise_training_makes_the_smoothed_classifier_certify_l1_radii():
    """A few epochs under Laplace noise: the loss is CE at x + b e (seeded), and the trained
    MLP certifies most test digits correctly with a positive L1 radius."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = data.digits("test")
    e = torch.zeros(16, 1, 8, 8)
    from robustlab.defences.certificates import _laplace
    e = _laplace(e.shape, like=e, generator=seeded())
    torch.testing.assert_close(laplace_noise(scale=0.3, generator=seeded())(model, x[:16], y[:16]),
                               nn.functional.cross_entropy(model(x[:16] + 0.3 * e), y[:16]))
    seed_everything(0)
    net = models.MLP((1, 8, 8), (64,), 10)
    fit(net, data.digits("train"), epochs=5, lr=3e-3, progress=False,
        objective=laplace_noise(scale=0.2, generator=seeded()))
    pred, radius = laplace_certify(net, x[:50], scale=0.2, n=1000, generator=seeded())
    assert ((pred == y[:50]) & (radius > 0)).float().mean() > 0.6


@pytest.mark.parametrize("call, arg", [
    (lambda: laplace_noise(scale=-1.0), "scale"),
    (lambda: laplace_noise(scale=1.0, generator=3), "generator"),
    (lambda: laplace_radius(0.9, scale=0.0), "scale"),
    (lambda: laplace_radius(1.5, scale=1.0), "p_a"),
    (lambda: cohen_radius(float("nan"), sigma=1.0), "p_a"),
    (lambda: cohen_radius(0.9, sigma=-1.0), "sigma"),
    (lambda: lecuyer_radius(-0.1, sigma=1.0), "p_a"),
    (lambda: lecuyer_radius(0.9, sigma="a"), "sigma"),
    (lambda: laplace_certify(threshold(0, 0.5), torch.rand(2, 1, 8, 8), scale=0.0), "scale"),
    (lambda: laplace_certify(threshold(0, 0.5), torch.rand(2, 1, 8, 8), scale=1.0, n0=10, n=5),
     "n0"),
    (lambda: laplace_certify(threshold(0, 0.5), torch.rand(2, 1, 8, 8), scale=1.0, alpha=1.0),
     "alpha"),
    (lambda: laplace_certify(threshold(0, 0.5), torch.rand(2, 1, 8, 8) + 2, scale=1.0), "x"),
    (lambda: laplace_certify("model", torch.rand(2, 1, 8, 8), scale=1.0), "model"),
])
def test_bad_arguments_name_the_argument(call, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        call()
