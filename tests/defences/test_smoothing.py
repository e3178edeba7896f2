"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): PREDICT, CERTIFY, the
Gaussian-noise objective and certified accuracy, checked against cases with exact answers."""

import math
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats
from torch import nn

import robustlab
from robustlab import data, models, train
from robustlab.attacks import EOT, pgd
from robustlab.defences import smoothing
from robustlab.defences.smoothing import (
    certified_accuracy,
    certify,
    gaussian_noise,
    lower_confidence_bound,
    predict,
    sample_counts,
    two_sided_pvalue,
)

from ..conftest import leaves_as_found, messy_model, nested_modes, seeded


def linear_binary(d: int = 64, seed: int = 0):
    """f(x) = [w.x + b > 0] as a two-class model (logits 0 and w.x + b), with points x_i at
    signed distance c_i from its boundary: under N(0, sigma^2 I) noise the class-1 probability
    is Phi((w.x + b) / (sigma ||w||)), so g(x) = f(x) and g's exact radius is |w.x + b| / ||w||."""
    g = seeded(seed)
    w = torch.randn(d, generator=g)
    w_unit = w / w.norm()
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(d), w]))
        lin.bias.copy_(torch.tensor([0.0, -0.5 * w.sum().item()]))  # boundary through 0.5
    model = nn.Sequential(nn.Flatten(), lin).eval()
    c = torch.tensor([0.25, -0.25, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0])
    assert (c.abs().max() * w_unit.abs().max()) < 0.5  # the points stay inside [0, 1]
    x = (0.5 + c[:, None] * w_unit).view(-1, 1, 8, 8)
    return model, x, c


class Buckets(nn.Module):
    """Three classes by the value of pixel 0: < lo, between, > hi (one-hot logits)."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        u = x.flatten(1)[:, 0]
        cls = (u > self.lo).long() + (u > self.hi).long()
        return nn.functional.one_hot(cls, 3).to(x.dtype)


# ---------------------------------------------------------------- statistics against scipy

@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (7, 10), (10, 10), (980, 1000), (51, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    want = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    got = lower_confidence_bound(torch.tensor([k]), n, alpha)
    assert got.dtype == torch.float64 and got.shape == (1,)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_clopper_pearson_by_hand():
    # all n successes: P(Bin(n, p) >= n) = p^n = alpha gives p = alpha^(1/n)
    assert lower_confidence_bound(torch.tensor([100]), 100, 0.01).item() == pytest.approx(0.01 ** 0.01)
    # the bound p solves P(Bin(n, p) >= k) = alpha
    k, n, alpha = 70, 100, 0.001
    p = lower_confidence_bound(torch.tensor(k), n, alpha).item()
    assert stats.binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6)


@pytest.mark.parametrize("a,b", [(10, 0), (60, 40), (50, 50), (40, 60), (7, 3), (0, 0), (900, 20)])
def test_two_sided_pvalue_matches_binomtest(a, b):
    want = 1.0 if a + b == 0 else stats.binomtest(a, a + b, 0.5).pvalue
    got = two_sided_pvalue(torch.tensor([a]), torch.tensor([b]))
    assert got.item() == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------- the analytic linear case

def test_certify_linear_matches_analytic_radius():
    model, x, c = linear_binary()
    sigma = 0.5
    pred, radius = certify(model, x, sigma=sigma, n0=100, n=100_000, alpha=0.001,
                           batch_size=20_000, generator=seeded(1))
    truth = c.abs()
    assert pred.dtype == torch.long and pred.shape == (8,) and radius.shape == (8,)
    assert radius.dtype == x.dtype
    assert torch.equal(pred, (c > 0).long()), "g(x) = f(x) for an affine base classifier"
    assert (radius <= truth).all(), f"radius above the exact one: {radius} vs {truth}"
    rel = (truth - radius) / truth
    assert (rel < 0.05).all(), f"radius too loose with n = 100000: {rel}"


def test_certify_linear_lower_bound_is_sound_over_seeds():
    # A radius above the exact one happens with probability <= alpha per example (Clopper-Pearson
    # is conservative); a point estimate of p_A instead would overshoot about half the time.
    model, x, c = linear_binary()
    seeds, alpha = 50, 0.05
    above = 0
    for seed in range(seeds):
        _, radius = certify(model, x, sigma=0.5, n0=50, n=500, alpha=alpha, generator=seeded(seed))
        above += int((radius > c.abs()).sum())
    trials = seeds * len(x)
    assert above <= stats.binom.ppf(0.999, trials, alpha), f"{above} of {trials} above the truth"


def test_predict_linear_agrees_and_abstains_on_the_boundary():
    model, x, c = linear_binary()
    out = predict(model, x, sigma=0.5, n=10_000, alpha=0.001, generator=seeded(2))
    assert out.dtype == torch.long and torch.equal(out, (c > 0).long())
    on_boundary = torch.full((4, 1, 8, 8), 0.5)  # w.x + b = 0: both classes have probability 1/2
    assert (predict(model, on_boundary, sigma=0.5, n=2000, generator=seeded(3)) == -1).all()
    pred, radius = certify(model, on_boundary, sigma=0.5, n0=100, n=2000, generator=seeded(3))
    assert (pred == -1).all() and (radius == 0).all()


def test_exact_tie_abstains():
    model = Buckets(0.5, 2.0)  # pixel 0 at exactly 0.5: class 0 and 1 each with probability 1/2
    x = torch.full((3, 1, 8, 8), 0.5)
    assert (predict(model, x, sigma=0.3, n=1000, generator=seeded(0)) == -1).all()


def test_low_top_probability_certify_abstains_predict_may_answer():
    # pixel 0 = 0.5, sigma = 0.5: P(class 0) = Phi(-0.2) = 0.42, P(1) = 0.37, P(2) = 0.21.
    # CERTIFY needs p_A > 1/2 and abstains; PREDICT only needs c_A to beat c_B and answers 0.
    model = Buckets(0.4, 0.9)
    x = torch.full((2, 1, 8, 8), 0.5)
    pred, radius = certify(model, x, sigma=0.5, n0=100, n=20_000, generator=seeded(4))
    assert (pred == -1).all() and (radius == 0).all()
    assert (predict(model, x, sigma=0.5, n=20_000, generator=seeded(4)) == 0).all()


def test_sample_counts_are_per_example_and_sum_to_n():
    model = Buckets(0.5, 0.6)
    x = torch.zeros(3, 1, 8, 8)
    x[1], x[2] = 1.0, 0.55
    counts = sample_counts(model, x, sigma=1e-4, n=37, batch_size=10, generator=seeded(0))
    assert counts.dtype == torch.long and counts.shape == (3, 3)
    assert torch.equal(counts, torch.tensor([[37, 0, 0], [0, 0, 37], [0, 37, 0]]))


# ---------------------------------------------------------------- soundness on a real model

def test_certified_ball_holds_against_attacks_on_a_real_model(digits_mlp, digits_test):
    x, _ = digits_test
    x = x[:6]
    sigma = 0.25
    pred, radius = certify(digits_mlp, x, sigma=sigma, n0=100, n=5000, generator=seeded(0))
    ok = pred >= 0
    assert ok.sum() >= 3, "too few certified examples to test"
    x, pred, radius = x[ok], pred[ok], radius[ok]
    # random directions at 0.95 of the radius
    g = seeded(5)
    for _ in range(2):
        d = torch.randn(x.shape, generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * (0.95 * radius).view(-1, 1, 1, 1)
        out = predict(digits_mlp, (x + d).clamp(0, 1), sigma=sigma, n=5000, generator=g)
        assert ((out == pred) | (out == -1)).all()
    # PGD-L2 on the noisy classifier's expected log-probabilities (EOT), inside the ball
    noisy = nn.Sequential(_AddNoise(sigma), digits_mlp)
    adv = torch.stack([pgd(EOT(noisy, samples=32), xi[None], pi[None], eps=0.95 * ri.item(),
                           alpha=0.25 * ri.item(), steps=10, norm="l2")[0]
                       for xi, pi, ri in zip(x, pred, radius)])
    assert ((adv - x).flatten(1).norm(dim=1) <= radius).all()
    out = predict(digits_mlp, adv, sigma=sigma, n=5000, generator=seeded(6))
    assert ((out == pred) | (out == -1)).all(), "a point inside a certified ball changed class"


class _AddNoise(nn.Module):
    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x)


# ---------------------------------------------------------------- conventions

def test_determinism_with_a_seeded_generator(digits_mlp, eight):
    x, _ = eight
    a = certify(digits_mlp, x, sigma=0.25, n0=20, n=300, generator=seeded(7))
    b = certify(digits_mlp, x, sigma=0.25, n0=20, n=300, generator=seeded(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    p = predict(digits_mlp, x, sigma=0.25, n=300, generator=seeded(7))
    assert torch.equal(p, predict(digits_mlp, x, sigma=0.25, n=300, generator=seeded(7)))


@pytest.mark.parametrize("make", [messy_model, lambda: nested_modes()[0]], ids=["messy", "nested"])
def test_hygiene_messy_and_nested_models_under_no_grad(eight, make):
    x, y = eight
    model = make()
    with torch.no_grad():
        leaves_as_found(lambda: certify(model, x, sigma=0.25, n0=10, n=50, generator=seeded(0)),
                        model, x)
        leaves_as_found(lambda: predict(model, x, sigma=0.25, n=50, generator=seeded(0)), model, x)
        leaves_as_found(lambda: certified_accuracy(model, x, y, sigma=0.25, radii=[0, 0.1], n0=10,
                                                   n=50, generator=seeded(0)), model, x, y)


def test_eval_mode_while_sampling():
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.modes = nn.Linear(64, 10), set()

        def forward(self, x):
            self.modes.add(self.training)
            return self.lin(x.flatten(1))

    model = Recorder().train()
    certify(model, torch.rand(2, 1, 8, 8), sigma=0.1, n0=5, n=10)
    assert model.modes == {False} and model.training


def test_inference_mode_input_works(digits_mlp, eight):
    x, _ = eight
    with torch.inference_mode():
        xi = x.clone()
    pred, radius = certify(digits_mlp, xi, sigma=0.25, n0=10, n=100, generator=seeded(0))
    assert pred.shape == (8,)


@pytest.mark.parametrize("kw,name", [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": math.nan}, "sigma"),
    ({"n0": 200, "n": 100}, "n0"), ({"n0": 0}, "n0"), ({"n": 0}, "n"), ({"n": 10.5}, "n"),
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
    ({"batch_size": 0}, "batch_size"), ({"generator": 3}, "generator"),
])
def test_bad_arguments_name_themselves(digits_mlp, eight, kw, name):
    x, _ = eight
    args = {"sigma": 0.25, "n0": 10, "n": 20, **kw}
    with pytest.raises((ValueError, TypeError), match=name):
        certify(digits_mlp, x, **args)


def test_bad_inputs(digits_mlp, eight):
    x, y = eight
    with pytest.raises(ValueError, match="x"):
        certify(digits_mlp, x * 2, sigma=0.25, n0=5, n=10)
    with pytest.raises(ValueError, match="sigma"):
        predict(digits_mlp, x, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(sigma=0.0)
    with pytest.raises(ValueError, match="radii"):
        certified_accuracy(digits_mlp, x, y, sigma=0.25, radii=[-0.1], n0=5, n=10)
    with pytest.raises(ValueError, match="y"):
        certified_accuracy(digits_mlp, x, y + 10, sigma=0.25, radii=[0], n0=5, n=10)


def test_stable_name_and_exports():
    assert robustlab.defences.smoothing.certify is certify
    assert robustlab.defences.gaussian_noise is gaussian_noise
    assert robustlab.defences.certified_accuracy is certified_accuracy
    assert smoothing.ABSTAIN == -1
    assert robustlab.defences.bit_depth  # the earlier exports are kept


# ---------------------------------------------------------------- certified accuracy

def test_certified_accuracy_result(digits_mlp, digits_test):
    x, y = digits_test
    x, y = x[:20], y[:20]
    res = certified_accuracy(digits_mlp, x, y, sigma=0.25, radii=[0.0, 0.25, 0.5], n0=50, n=500,
                             generator=seeded(0))
    pred, radius = certify(digits_mlp, x, sigma=0.25, n0=50, n=500, generator=seeded(0))
    assert torch.equal(res.prediction, pred) and torch.equal(res.radius, radius)
    for r, acc in zip(res.radii, res.accuracy):
        assert acc == ((pred == y) & (radius >= r)).double().mean().item()
    assert res.accuracy == sorted(res.accuracy, reverse=True)
    table = res.table()
    assert table.startswith("| radius | certified accuracy (sigma=0.25) |") and "0.25" in table
    assert str(res) == table
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    assert res.plot(ax) is ax and len(ax.lines) == 2
    plt.close(fig)


# ---------------------------------------------------------------- Gaussian-noise training

def test_gaussian_noise_objective_draws_on_x_device_and_is_seeded():
    model = models.MLP()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    a = gaussian_noise(sigma=0.5, generator=seeded(0))(model, x, y)
    b = gaussian_noise(sigma=0.5, generator=seeded(0))(model, x, y)
    assert a.shape == () and torch.equal(a, b) and a.requires_grad
    assert not torch.equal(a, train.cross_entropy(model, x, y))


def _certified_at(seed: int, sigma: float = 0.25) -> tuple[float, float]:
    """(noise-trained, standard) certified accuracy at radius sigma on 120 test digits."""
    x_tr, y_tr = data.digits("train")
    x_te, y_te = data.digits("test")
    out = []
    for objective in (gaussian_noise(sigma=sigma, generator=seeded(seed)), train.cross_entropy):
        torch.manual_seed(seed)
        net = models.MLP(hidden=(128, 64))
        train.fit(net, (x_tr, y_tr), epochs=15, objective=objective, lr=3e-3, batch_size=64,
                  device="cpu", seed=seed, progress=False)
        res = certified_accuracy(net, x_te[:120], y_te[:120], sigma=sigma, radii=[sigma], n0=50,
                                 n=1000, batch_size=10_000, generator=seeded(seed))
        out.append(res.accuracy[0])
    return tuple(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_training_certifies_more_digits(seed):
    noisy, plain_ = _certified_at(seed)
    assert noisy >= plain_ + 0.1, f"noise-trained {noisy:.3f} vs standard {plain_:.3f}"


def test_noise_training_margin_on_generic_cpu():
    """The same margin with vectorised kernels off (ATEN_CPU_CAPABILITY=default)."""
    code = ("from tests.defences.test_smoothing import _certified_at; "
            "print(*_certified_at(0))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    noisy, plain_ = map(float, out.stdout.split())
    assert noisy >= plain_ + 0.1, f"noise-trained {noisy:.3f} vs standard {plain_:.3f}"


# issue 15: a 0-d tensor of radii failed with "iteration over a 0-d tensor"
def test_certified_accuracy_takes_one_radius_as_a_scalar(digits_mlp, eight):
    x, y = eight
    runs = [certified_accuracy(digits_mlp, x, y, sigma=0.25, radii=r, n0=5, n=20, generator=seeded(0))
            for r in (0.5, torch.tensor(0.5), torch.tensor([0.5]), [0.5])]
    assert all(run.radii == [0.5] and run.accuracy == runs[0].accuracy for run in runs)
    with pytest.raises(ValueError, match=r"radii must be one radius or a 1-D list of them, got a "
                                         r"tensor of shape \(2, 2\)"):
        certified_accuracy(digits_mlp, x, y, sigma=0.25, radii=torch.ones(2, 2), n0=5, n=20)
    with pytest.raises(TypeError, match="radii must be a number"):
        certified_accuracy(digits_mlp, x, y, sigma=0.25, radii="0.5", n0=5, n=20)
    with pytest.raises(TypeError, match="radii must be a number or a list of numbers, got NoneType"):
        certified_accuracy(digits_mlp, x, y, sigma=0.25, radii=None, n0=5, n=20)
