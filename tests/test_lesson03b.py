"""Lesson 03b's exercise checks reject wrong answers and accept the solution.

Each check cell of lessons/03b-transformations-smoothing.ipynb runs here, outside the notebook,
once with the lesson's own solution (it must pass) and once with each planted wrong answer (it
must fail with an AssertionError), so a check that cannot fail is caught.
"""

from functools import partial

import pytest
import torch
from scipy import stats

import robustlab
from robustlab import attacks, data, models, train
from robustlab.defences import Defended, bit_depth, smoothing

from .lesson_cells import Lesson

LESSON = Lesson("03b-transformations-smoothing.ipynb")
code_cells, exercise, run = LESSON.cells, LESSON.exercise, LESSON.run


@pytest.fixture(scope="module")
def lesson_namespace():
    """The lesson's parameters (fast mode) and its data cell (cnn, pgd40, accuracy, the digits)."""
    cells = code_cells()
    ns = {"torch": torch, "stats": stats, "partial": partial, "attacks": attacks, "data": data,
          "models": models, "train": train, "smoothing": smoothing, "bit_depth": bit_depth,
          "Defended": Defended, "device": torch.device("cpu"),
          "robustlab": robustlab}
    run(next(s for s in cells if s.startswith("FAST = False")), ns)
    ns["SAMPLES"] = 1000
    run(next(s for s in cells if 'models.pretrained("digits-cnn"' in s), ns)
    ns["noisy_cnn"] = models.pretrained("digits-cnn-noise")
    return ns


def wrong_bpdas():
    def zero_gradient(x, bits):             # the defence itself: autograd's gradient is 0
        return bit_depth(x, bits)

    def identity(x, bits):                  # the right gradient, the wrong value
        return x * 1.0

    def not_detached(x, bits):              # x + (t(x) - x) is t(x), gradient and all
        return x + (bit_depth(x, bits) - x)

    def doubled(x, bits):                   # the value is right, the gradient twice the identity's
        return 2 * x + (bit_depth(x, bits) - 2 * x).detach()

    def detached(x, bits):                  # no gradient at all
        return bit_depth(x, bits).detach()

    def wrong_levels(x, bits):              # straight through, but one bit too many
        return x + (bit_depth(x, bits + 1) - x).detach()

    return {"zero gradient": zero_gradient, "identity": identity, "not detached": not_detached,
            "doubled gradient": doubled, "detached": detached, "wrong levels": wrong_levels}


def test_exercise1_accepts_the_solution(lesson_namespace):
    solution, check = exercise("def bpda_bit_depth")
    run(check, run(solution, dict(lesson_namespace)))


@pytest.mark.parametrize("name", list(wrong_bpdas()))
def test_exercise1_rejects_a_wrong_bpda(lesson_namespace, name):
    _, check = exercise("def bpda_bit_depth")
    with pytest.raises(AssertionError):
        run(check, dict(lesson_namespace, bpda_bit_depth=wrong_bpdas()[name]))


def wrong_radii():
    def point_estimate(n_a, n, sigma, alpha):       # p_A = n_A / n, no confidence bound
        p = n_a / n
        return float(sigma * stats.norm.ppf(p)) if p > 0.5 else 0.0

    def two_sided(n_a, n, sigma, alpha):            # the two-sided interval's lower end at 1 - alpha
        p = stats.beta.ppf(alpha / 2, n_a, n - n_a + 1) if n_a > 0 else 0.0
        return float(sigma * stats.norm.ppf(p)) if p > 0.5 else 0.0

    def wald(n_a, n, sigma, alpha):                 # normal approximation of the bound
        p = n_a / n - stats.norm.ppf(1 - alpha) * (n_a / n * (1 - n_a / n) / n) ** 0.5
        return float(sigma * stats.norm.ppf(p)) if p > 0.5 else 0.0

    def no_abstain(n_a, n, sigma, alpha):           # a negative (or -inf) radius instead of 0
        p = stats.beta.ppf(alpha, max(n_a, 1), n - n_a + 1)
        return float(sigma * stats.norm.ppf(p))

    def halved(n_a, n, sigma, alpha):               # sigma / 2 * Phi^-1(p_A), forgetting p_B
        p = stats.beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
        return float(sigma / 2 * stats.norm.ppf(p)) if p > 0.5 else 0.0

    def no_sigma(n_a, n, sigma, alpha):
        p = stats.beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
        return float(stats.norm.ppf(p)) if p > 0.5 else 0.0

    return {"point estimate": point_estimate, "two-sided": two_sided, "Wald": wald,
            "no abstain": no_abstain, "halved": halved, "no sigma": no_sigma}


def test_exercise2_accepts_the_solution(lesson_namespace):
    solution, check = exercise("def certified_radius")
    ns = run(check, run(solution, dict(lesson_namespace)))
    # and the solution agrees with the library's CERTIFY arithmetic
    assert ns["certified_radius"](1000, 1000, 0.25, 0.001) == pytest.approx(
        0.25 * stats.norm.ppf(0.001 ** (1 / 1000)))


@pytest.mark.parametrize("name", list(wrong_radii()))
def test_exercise2_rejects_a_wrong_radius(lesson_namespace, name):
    _, check = exercise("def certified_radius")
    with pytest.raises(AssertionError):
        run(check, dict(lesson_namespace, certified_radius=wrong_radii()[name]))


def test_exercise3_prediction_is_checked_against_the_measurement():
    prediction_cell = next(s for s in code_cells() if "prediction = " in s and "### BEGIN SOLUTION" in s)
    check = next(s for s in code_cells() if "prediction ==" in s)
    measured = run(prediction_cell, {})["prediction"]
    run(check, {"prediction": measured, "noise_gain": 0.17})          # the lesson's own answer
    for wrong, gain in [(not measured, 0.17), ("yes", 0.17), (1, 0.17), (measured, 0.01)]:
        with pytest.raises(AssertionError):
            run(check, {"prediction": wrong, "noise_gain": gain})
