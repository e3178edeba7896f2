"""Lesson 05a's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.query_curves`) follows its controls over the stored query-budget table.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in place of the solution (its own source with one mistake
planted) and expects the check to fail.
"""

import matplotlib
import pytest

matplotlib.use("Agg")

from robustlab import data, tables, widgets  # noqa: E402

from .lesson_cells import Lesson, written_exercise_tests  # noqa: E402

LESSON = Lesson("05a-future-attacks.ipynb")


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


run = LESSON.run


@pytest.fixture(scope="module")
def lesson_state():
    """What the checks read: a few test digits and the stored query table."""
    ns: dict = {}
    exec("import math\nimport torch\nfrom robustlab import perceptual", ns)
    ns.update(x1=data.digits("test")[0][:8],
              stored=widgets.decision_curves(tables.stored_result("decision_attacks")))
    return ns


SSIM_MISTAKES = {
    "no stabilising constants": [("c1, c2 = 0.01 ** 2, 0.03 ** 2", "c1, c2 = 0.0, 0.0")],
    "C1 and C2 swapped": [("c1, c2 = 0.01 ** 2, 0.03 ** 2", "c1, c2 = 0.03 ** 2, 0.01 ** 2")],
    "covariance not doubled": [("(2 * cov + c2)", "(cov + c2)")],
    "standard deviations for variances": [("(va + vb + c2)", "(va.sqrt() + vb.sqrt() + c2)")],
    "unbiased variances": [("va, vb = ((a - ma) ** 2).mean(), ((b - mb) ** 2).mean()",
                            "va, vb = (a - ma).pow(2).sum() / (a.numel() - 1), "
                            "(b - mb).pow(2).sum() / (b.numel() - 1)")],
    "C1 and C2 not squared": [("c1, c2 = 0.01 ** 2, 0.03 ** 2", "c1, c2 = 0.01, 0.03")],
    "covariance without centring": [("cov = ((a - ma) * (b - mb)).mean()", "cov = (a * b).mean()")],
    "luminance term only": [("* (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))",
                             ") / (ma ** 2 + mb ** 2 + c1)")],
}

CHEAPEST_MISTAKES = {
    "strictly above the level": [('by_q[q]["success"] >= level', 'by_q[q]["success"] > level')],
    "the largest budget that reaches it": [("out[name] = reached[0]", "out[name] = reached[-1]")],
    "budgets in stored order, not sorted": [("for q in sorted(by_q)", "for q in by_q")],
    "the last budget when none reaches it": [("if reached else None", "if reached else max(by_q)")],
    "attacks that never reach it left out": [("out[name] = reached[0] if reached else None",
                                               "if reached:\n            out[name] = reached[0]")],
    "the success at the cheapest budget, not the budget": [("out[name] = reached[0]",
                                                             'out[name] = by_q[reached[0]]["success"]')],
    "the best budget, whatever the level": [
        ('reached = [q for q in sorted(by_q) if by_q[q]["success"] >= level]',
         'reached = [max(by_q, key=lambda q: by_q[q]["success"])]')],
}

WRITTEN = {"def global_ssim": SSIM_MISTAKES, "def cheapest": CHEAPEST_MISTAKES}


test_exercises_accept_the_solution, test_exercises_reject_planted_mistakes = \
    written_exercise_tests(LESSON, WRITTEN)


# --- the stored table and the widget ---------------------------------------------------------------

def test_stored_table_has_every_attack_and_budget():
    curves = widgets.decision_curves(tables.stored_result("decision_attacks"))
    assert set(curves) == {"HopSkipJump L2", "HopSkipJump L-inf", "RayS", "Sign-OPT"}
    for name, by_q in curves.items():
        assert sorted(by_q) == [100, 300, 1000, 3000, 10_000], name
        assert all(0 <= row["success"] <= 1 and row["distortion"] > 0 for row in by_q.values())


def test_decision_curves_refuses_other_text():
    with pytest.raises(ValueError, match="markdown table"):
        widgets.decision_curves("| a | b |\n|---|---|\n| 1 | 2 |")


CURVES = {"A": {100: {"norm": "l2", "eps": 0.5, "success": 0.1, "distortion": 2.0},
                1000: {"norm": "l2", "eps": 0.5, "success": 0.8, "distortion": 0.4}},
          "B": {100: {"norm": "linf", "eps": 0.1, "success": 0.3, "distortion": 0.2},
                1000: {"norm": "linf", "eps": 0.1, "success": 0.6, "distortion": 0.09}}}


def test_query_curves_follows_its_controls():
    w = widgets.query_curves(CURVES)
    assert w.state["attack"] == "A" and w.state["budget"] == 1000 and w.state["success"] == 0.8
    w.budget.value = 100
    assert w.state["budget"] == 100 and w.state["distortion"] == 2.0
    w.attack.value = "B"  # the budget stays, the row is B's
    assert w.state == {"attack": "B", "budget": 100, **CURVES["B"][100]}
    w.budget.value = 1000
    assert w.state["success"] == 0.6 and w.state["norm"] == "linf"


def test_query_curves_refuses_unknown_choices():
    with pytest.raises(ValueError, match="attack must be one of"):
        widgets.query_curves(CURVES, attack="C")
    with pytest.raises(ValueError, match="budget must be one of"):
        widgets.query_curves(CURVES, attack="A", budget=300)
    with pytest.raises(ValueError, match="the same budgets"):
        widgets.query_curves({**CURVES, "C": {100: CURVES["A"][100]}})
    with pytest.raises(ValueError, match="non-empty"):
        widgets.query_curves({})
