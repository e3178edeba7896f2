"""Naive Monte Carlo and adaptive multi-level splitting (robustlab.stats.splitting) against
probabilities known exactly: a linear classifier whose margin is the sum of d uniform pixels
(the Irwin-Hall tail) or a single pixel; the input distribution, bad input, hygiene, syncs."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from robustlab.stats import monte_carlo, splitting
from tests.conftest import leaves_as_found, messy_model, seeded
from tests.syncs import count, explain, grows

D = 8


def sum_classifier(threshold: float, weights=None) -> nn.Module:
    """Two classes on (N, 1, 1, D) inputs: z_0 = 0, z_1 = w . x' - threshold (w = ones), so
    class 0 is misclassified exactly when w . x' >= threshold."""
    lin = nn.Linear(D, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = torch.ones(D) if weights is None else weights
        lin.bias.copy_(torch.tensor([0.0, -threshold]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def irwin_hall_tail(t: Fraction, d: int = D) -> float:
    """P(U_1 + ... + U_d >= t) for independent U_i uniform on [0, 1], exactly: by symmetry
    F(d - t), F(s) = sum_{k <= s} (-1)^k C(d, k) (s - k)^d / d!."""
    s = d - t
    total = sum((-1) ** k * math.comb(d, k) * (s - k) ** d for k in range(math.floor(s) + 1))
    return float(total / math.factorial(d))


def centre(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """x = 0.5 everywhere: with eps = 0.5 the noise box is [0, 1]^D, x' uniform on it."""
    return torch.full((n, 1, 1, D), 0.5), torch.zeros(n, dtype=torch.long)


def test_irwin_hall_reference():
    assert irwin_hall_tail(Fraction(D, 2)) == pytest.approx(0.5)
    assert irwin_hall_tail(Fraction(15, 2)) == pytest.approx(0.5 ** D / math.factorial(D))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("threshold", [Fraction(15, 2), Fraction(38, 5)])
def test_splitting_within_a_factor_2_of_a_rare_exact_probability(threshold, seed):
    exact = irwin_hall_tail(threshold)  # 9.7e-8 and 1.6e-8
    assert exact < 1e-6
    x, y = centre()
    out = splitting(sum_classifier(float(threshold)), x, y, eps=0.5, n_particles=4000,
                    mh_steps=30, generator=seeded(seed))
    ratio = out.probability / exact
    assert ((ratio > 0.5) & (ratio < 2)).all(), ratio
    assert not out.stopped.any() and all(lv[-1] == 0 for lv in out.levels)
    assert all(7 <= len(lv) <= 9 for lv in out.levels)  # log(1e-7) / log(0.1), about
    assert ((out.acceptance > 0.05) & (out.acceptance < 0.9)).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_monte_carlo_and_splitting_agree_on_a_common_event(seed):
    exact = irwin_hall_tail(Fraction(6))  # 248 / 8! = 6.2e-3
    x, y = centre()
    model = sum_classifier(6.0)
    naive = monte_carlo(model, x, y, eps=0.5, n=40_000, generator=seeded(seed))
    # 40,000 draws: the standard deviation of the estimate is 4e-4, 6.5 % of it
    assert ((naive.probability - exact).abs() < 0.25 * exact).all(), naive.probability
    assert (naive.upper > naive.probability).all()
    split = splitting(model, x, y, eps=0.5, n_particles=2000, mh_steps=20, generator=seeded(seed))
    assert ((split.probability / exact > 0.5) & (split.probability / exact < 2)).all()


def test_monte_carlo_sees_nothing_of_a_rare_event():
    x, y = centre()
    out = monte_carlo(sum_classifier(7.6), x, y, eps=0.5, n=50_000, generator=seeded(0))
    assert (out.hits == 0).all() and (out.log_prob == -math.inf).all()
    # at 0 hits the 95 % upper bound is 1 - 0.05^(1/n), about 3 / n
    assert torch.allclose(out.upper, torch.full((2,), 1 - 0.05 ** (1 / 50_000), dtype=torch.float64))


def test_the_noise_is_uniform_on_the_ball_within_the_box():
    # one pixel decides, its interval [0.1 - 0.3, 0.1 + 0.3] cut to [0, 0.4]: P(x'_0 >= 0.3) is
    # 0.1 / 0.4 = 0.25 (noise clipped to the box instead would put an atom at 0 and give 1/6)
    weights = torch.zeros(D)
    weights[0] = 1.0
    x, y = torch.full((1, 1, 1, D), 0.1), torch.zeros(1, dtype=torch.long)
    model = sum_classifier(0.3, weights)
    naive = monte_carlo(model, x, y, eps=0.3, n=20_000, generator=seeded(0))
    assert abs(naive.probability.item() - 0.25) < 0.015
    split = splitting(model, x, y, eps=0.3, n_particles=1000, mh_steps=10, generator=seeded(0))
    assert abs(split.probability.item() - 0.25) < 0.05 and len(split.levels[0]) == 1


def test_stops_early_with_the_bound_it_reached():
    x, y = centre()
    out = splitting(sum_classifier(7.6), x, y, eps=0.5, n_particles=500, mh_steps=5,
                    max_levels=3, generator=seeded(0))
    assert out.stopped.all() and (out.log_prob == -math.inf).all()
    assert all(len(lv) == 3 and lv[-1] < 0 for lv in out.levels)
    # three levels that keep a tenth each: P(s >= L_3) is estimated at about 1e-3
    assert ((out.log_bound > math.log(3e-4)) & (out.log_bound < math.log(3e-3))).all()
    assert "log10 bound" in out.table()


def test_misclassified_centre_has_probability_near_one():
    x, y = centre(1)
    out = splitting(sum_classifier(1.0), x, y, eps=0.5, n_particles=200, mh_steps=2,
                    generator=seeded(0))
    assert out.log_prob.item() == 0.0 and out.levels == [[0.0]]


def test_bad_input_names_the_argument():
    x, y = centre()
    model = sum_classifier(7.0)
    for bad, name in [(dict(eps=0.0), "eps"), (dict(eps=-1.0), "eps"), (dict(rho=0.0), "rho"),
                      (dict(rho=1.0), "rho"), (dict(n_particles=10), "n_particles"),
                      (dict(mh_steps=0), "mh_steps"), (dict(max_levels=0), "max_levels"),
                      (dict(generator="seed"), "generator")]:
        with pytest.raises((ValueError, TypeError), match=name):
            splitting(model, x, y, **{"eps": 0.5, **bad})
    with pytest.raises(ValueError, match="y"):
        splitting(model, x, torch.tensor([0, 2]), eps=0.5)
    with pytest.raises(ValueError, match="y"):
        monte_carlo(model, x, y[:1], eps=0.5, n=10)
    for bad, name in [(dict(n=0), "n"), (dict(batch_size=0), "batch_size"), (dict(eps=0), "eps")]:
        with pytest.raises(ValueError, match=name):
            monte_carlo(model, x, y, **{"eps": 0.5, "n": 10, **bad})


def test_leaves_the_model_and_input_as_found(digits_test):
    model = messy_model()
    x, y = digits_test[0][:2].clone(), digits_test[1][:2].clone()
    with torch.no_grad():
        leaves_as_found(lambda: splitting(model, x, y, eps=0.1, n_particles=50, rho=0.2,
                                          mh_steps=2, max_levels=2), model, x, y)
    leaves_as_found(lambda: monte_carlo(model, x, y, eps=0.1, n=100), model, x, y)


def test_host_syncs_one_per_level_none_per_move():
    x, y = centre()
    model = sum_classifier(7.9)  # too rare for 2 to 4 levels: every run stops at max_levels

    def run(levels, steps=2):
        return splitting(model, x, y, eps=0.5, n_particles=100, mh_steps=steps,
                         max_levels=levels, generator=seeded(0))

    a, b = grows(lambda steps: run(3, steps), 2, 6)
    assert a.total == b.total, explain(a, b)
    two, three, four = (count(lambda n=n: run(n)).total for n in (2, 3, 4))
    assert three - two == four - three == 1
    a, b = grows(lambda n: monte_carlo(model, x, y, eps=0.5, n=n, batch_size=20), 100, 400)
    assert a.total == b.total, explain(a, b)
