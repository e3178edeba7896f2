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
from robustlab.defences import Defended, RandomResizePad, bit_depth, smoothing

from .lesson_cells import Lesson

LESSON = Lesson("03b-transformations-smoothing.ipynb")
code_cells, exercise, run = LESSON.cells, LESSON.exercise, LESSON.run


@pytest.fixture(scope="module")
def lesson_namespace():
    """The lesson's parameters (fast mode) and its data cell (cnn, pgd40, accuracy, the digits)."""
    cells = code_cells()
    ns = {"torch": torch, "stats": stats, "partial": partial, "attacks": attacks, "data": data,
          "models": models, "train": train, "smoothing": smoothing, "bit_depth": bit_depth,
          "Defended": Defended, "RandomResizePad": RandomResizePad, "device": torch.device("cpu"),
          "robustlab": robustlab}
    run(next(s for s in cells if s.startswith("FAST = False")), ns)
    ns["SAMPLES"] = 1000
    run(next(s for s in cells if 'models.pretrained("digits-cnn"' in s), ns)
    ns["noisy_cnn"] = models.pretrained("digits-cnn-noise")
    return ns


def wrong_eots():
    def logits_mean(model, x, samples):         # averages logits, not log-probabilities
        return model(x.repeat(samples, 1, 1, 1)).view(samples, len(x), -1).mean(0)

    def logits_mean_normalised(model, x, samples):  # log_softmax of the mean logits: a log-probability,
        logits = model(x.repeat(samples, 1, 1, 1)).view(samples, len(x), -1)  # not the mean of them
        return logits.mean(0).log_softmax(1)

    def probabilities(model, x, samples):       # averages probabilities, not their logarithms
        return model(x.repeat(samples, 1, 1, 1)).softmax(1).view(samples, len(x), -1).mean(0)

    def summed(model, x, samples):              # the sum, S times the mean
        return model(x.repeat(samples, 1, 1, 1)).log_softmax(1).view(samples, len(x), -1).sum(0)

    def mixed_rows(model, x, samples):          # groups S consecutive rows: averages different images
        return model(x.repeat(samples, 1, 1, 1)).log_softmax(1).view(len(x), samples, -1).mean(1)

    def one_draw(model, x, samples):            # a single draw, whatever S
        return model(x).log_softmax(1)

    def one_draw_repeated(model, x, samples):   # one draw copied S times: no averaging at all
        log_p = model(x).log_softmax(1)
        return log_p.repeat(samples, 1).view(samples, len(x), -1).mean(0)

    def detached(model, x, samples):            # right value, no gradient for PGD
        with torch.no_grad():
            return model(x.repeat(samples, 1, 1, 1)).log_softmax(1).view(samples, len(x), -1).mean(0)

    return {"logits mean": logits_mean, "log_softmax of the mean logits": logits_mean_normalised,
            "probabilities": probabilities, "summed": summed,
            "mixed rows": mixed_rows, "one draw": one_draw, "one draw repeated": one_draw_repeated,
            "detached": detached}


def test_exercise1_accepts_the_solution(lesson_namespace):
    solution, check = exercise("def eot_logits")
    run(check, run(solution, dict(lesson_namespace)))


@pytest.mark.parametrize("name", list(wrong_eots()))
def test_exercise1_rejects_a_wrong_eot(lesson_namespace, name):
    _, check = exercise("def eot_logits")
    with pytest.raises(AssertionError):
        run(check, dict(lesson_namespace, eot_logits=wrong_eots()[name]))


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
    check = next(s for s in code_cells() if "abs(prediction - measured)" in s)
    solution = run(prediction_cell, {})["prediction"]
    # the lesson's measurements over modes and seeds are 0.68 to 0.75 (fast mode, 60 digits, SEED
    # 0, 1, 2: 0.68, 0.75, 0.72; full mode, 100 digits: 0.72, 0.71, 0.72), with a digit to spare
    for measured in [0.65, 0.68, 0.72, 0.75, 0.78]:
        run(check, {"prediction": solution, "measured": measured})
    # "a model never trained on noise certifies nothing", "about half", the noise-trained
    # model's figure (0.87 in section 5), the clean accuracy, and answers of the wrong type or range
    for wrong in [0.0, 0.1, 0.4, 0.5, 0.87, 0.95, 1.2, -0.1, True, "0.7", None]:
        with pytest.raises(AssertionError):
            run(check, {"prediction": wrong, "measured": 0.68})
