"""Lesson 02c's table-reading exercise: its check rejects wrong answers and accepts the solution.

The check cell of exercise 4 runs here, outside the notebook, on a table shaped like the one of
section 7 (the same rows; means chosen so that the solution's answers are the right ones), once
with the lesson's own solution (it must pass) and once with each planted wrong answer (it must
fail with an AssertionError), so a check that cannot fail is caught.
"""

import math

import pytest

from robustlab.evaluate import Comparison

from .lesson_cells import Lesson

LESSON = Lesson("02c-black-box.ipynb")
MARKER = "fewest_queries = "


def row(name, l0, queries=None, n_success=5):
    r = {"attack": name, "success_rate": n_success / 8, "n_success": n_success, "l0_mean": l0,
         "l2_mean": 0.5, "linf_mean": 0.2, "seconds": 1.0}
    if queries is not None:
        r["queries_mean"] = queries
    return r


def table(one_pixel_success=2):
    """The rows of section 7; a row with no success has NaN means, as compare_attacks gives."""
    nan = math.nan
    return Comparison([
        row("FGSM Linf 0.2", 46.3), row("PGD Linf 0.2", 51.1), row("C&W L2", 46.5),
        row("DeepFool L2", 46.2), row("L-BFGS", 48.3), row("ZOO-ADAM", 47.7, 2967),
        row("Square Linf 0.2", 44.1, 21), row("HopSkipJump L2", 52.9, 2705),
        row("one-pixel (DE)", 1.0 if one_pixel_success else nan,
            100 if one_pixel_success else nan, n_success=one_pixel_success)])


def run_check(answers: dict | None, comparison: Comparison) -> None:
    LESSON.check(MARKER, {"comparison": comparison}, answers)


def test_the_solution_passes():
    run_check(None, table())


BUDGETED = {"FGSM Linf 0.2", "PGD Linf 0.2", "Square Linf 0.2", "one-pixel (DE)"}
WRONG = {
    "fewest queries: the one-pixel attack": {"fewest_queries": "one-pixel (DE)"},
    "fewest queries: a white-box row (no queries)": {"fewest_queries": "FGSM Linf 0.2"},
    "fewest queries: not a row": {"fewest_queries": "Square"},
    "fewest pixels: C&W": {"fewest_pixels": "C&W L2"},
    "fewest pixels: Square": {"fewest_pixels": "Square Linf 0.2"},
    "other threat model: one missing": {"other_threat_model": BUDGETED - {"one-pixel (DE)"}},
    "other threat model: a minimum-norm row added": {"other_threat_model": BUDGETED | {"ZOO-ADAM"}},
    "other threat model: a list, not a set": {"other_threat_model": sorted(BUDGETED)},
    "other threat model: misspelt row": {"other_threat_model": BUDGETED - {"PGD Linf 0.2"} | {"PGD"}},
}


@pytest.mark.parametrize("answers", WRONG.values(), ids=list(WRONG))
def test_a_wrong_answer_fails(answers):
    with pytest.raises(AssertionError):
        run_check(answers, table())


def test_a_row_without_success_is_left_out_of_the_means():
    """With no one-pixel success its NaN means must not decide the minimum (NaN compares False)."""
    with pytest.raises(AssertionError):   # the solution's one-pixel answer is then wrong
        run_check(None, table(one_pixel_success=0))
    run_check({"fewest_pixels": "Square Linf 0.2"}, table(one_pixel_success=0))


# Exercise 5: HopSkipJump's binary search to the boundary. The check runs on an affine model, where
# the boundary on the segment is known exactly, then on three digits of the CNN.
HSJ_MARKER = "def boundary_search("


@pytest.fixture(scope="module")
def hsj_inputs():
    """What the check cell reads from the lesson: its setting, the CNN and digits, the helpers."""
    import torch

    import robustlab
    from robustlab import data, models, train
    from robustlab.attacks import Oracle

    namespace = {"torch": torch, "robustlab": robustlab, "train": train, "models": models, "data": data,
                 "Oracle": Oracle, "device": "cpu", "SEED": 0}
    helpers = next(s for s in LESSON.cells() if "def fooled(" in s)   # fooled, dist, cnn, xs, ys
    return LESSON.run(helpers, namespace)


def _segment(x0, x_adv, alpha):
    return (1 - alpha) * x0 + alpha * x_adv


def _bisect(oracle, start, end, y, theta):
    """A correct bisection between `start` and `end`: the last (low, high) bracket."""
    low, high = 0.0, 1.0
    while high - low > theta:
        mid = (low + high) / 2
        low, high = (low, mid) if oracle(_segment(start, end, mid)).item() != y else (mid, high)
    return low, high


def returns_the_clean_end(oracle, x0, x_adv, y, theta=1e-3):
    return _segment(x0, x_adv, _bisect(oracle, x0, x_adv, y, theta)[0])


def no_search(oracle, x0, x_adv, y, theta=1e-3):
    return x_adv.clone()


def four_halvings(oracle, x0, x_adv, y, theta=1e-3):
    low, high = 0.0, 1.0
    for _ in range(4):   # ignores theta
        mid = (low + high) / 2
        low, high = (low, mid) if oracle(_segment(x0, x_adv, mid)).item() != y else (mid, high)
    return _segment(x0, x_adv, high)


def linear_scan(oracle, x0, x_adv, y, theta=1e-3):
    alpha = 0.0
    while oracle(_segment(x0, x_adv, alpha)).item() == y:   # exact, but costs 1 / theta queries
        alpha += theta
    return _segment(x0, x_adv, alpha)


def swapped_ends(oracle, x0, x_adv, y, theta=1e-3):
    return _segment(x_adv, x0, _bisect(oracle, x_adv, x0, y, theta)[1])


def off_the_segment(oracle, x0, x_adv, y, theta=1e-3):
    high = _bisect(oracle, x0, x_adv, y, theta)[1]
    return (_segment(x0, x_adv, high) + 0.05).clamp(0, 1)   # pushed off the line toward white


def test_the_binary_search_solution_passes(hsj_inputs):
    LESSON.check(HSJ_MARKER, dict(hsj_inputs))


HSJ_WRONG = {f.__name__: f for f in (returns_the_clean_end, no_search, four_halvings, linear_scan,
                                     swapped_ends, off_the_segment)}


@pytest.mark.parametrize("wrong", HSJ_WRONG.values(), ids=list(HSJ_WRONG))
def test_a_wrong_binary_search_fails(hsj_inputs, wrong):
    with pytest.raises(AssertionError):
        LESSON.check(HSJ_MARKER, dict(hsj_inputs), {"boundary_search": wrong})
