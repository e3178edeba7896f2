"""Lesson 05b's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.schmidt_explorer`) follows its controls.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in the solution's source and expects the check to fail.
"""

import json
import re

import matplotlib
import pytest

matplotlib.use("Agg")

from robustlab import tables, widgets  # noqa: E402

from .lesson_cells import Lesson, cell_starting, written_exercise_tests  # noqa: E402

LESSON = Lesson("05b-future-defence.ipynb")
run = LESSON.run


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


@pytest.fixture(scope="module")
def lesson_state(cells):
    """What the checks read: section 1's exact classifiers and section 5's client splits."""
    ns: dict = {}
    exec("import math\nimport torch\nimport matplotlib.pyplot as plt\nimport robustlab\n"
         "from robustlab import data, defences\nfrom robustlab import evaluate as E", ns)
    ns.update(SEED=0, D_TSIPRAS=100, ALPHAS=[0.1, 1.0, 100.0])
    ns["x_train"], ns["y_train"] = ns["data"].digits("train")
    run(cell_starting(cells, "P = 0.95"), ns)
    run(cell_starting(cells, "CLIENTS = 5"), ns)
    return ns


BOUND_MISTAKES = {
    "(1 - p) / p": [("p / (1.0 - p) * delta", "(1.0 - p) / p * delta")],
    "the accuracy, not the error": [("delta = 1.0 - standard_accuracy", "delta = standard_accuracy")],
    "no cap at 1": [("return min(1.0, p / (1.0 - p) * delta)", "return p / (1.0 - p) * delta")],
    "the ratio alone": [("p / (1.0 - p) * delta)", "p / (1.0 - p))")],
}

GAUSSIAN_MISTAKES = {
    "an L2 adversary": [("eps * w.abs().sum()", "eps * w.norm()")],
    "no adversary": [("w @ theta - eps * w.abs().sum()", "w @ theta")],
    "the adversary helps": [("w @ theta - eps", "w @ theta + eps")],
    "sigma forgotten": [("spread = sigma * w.norm().item()", "spread = w.norm().item()")],
    "the L1 norm in the spread": [("spread = sigma * w.norm().item()",
                                   "spread = sigma * w.abs().sum().item()")],
    "Phi without the sqrt(2)": [("(spread * math.sqrt(2.0))", "spread")],
}

SKEW_MISTAKES = {
    "every client weighs the same": [("skew += len(p) / total * 0.5", "skew += 1 / len(parts) * 0.5")],
    "no 1/2": [("0.5 * (local", "(local")],
    "against the uniform distribution": [
        ("overall = torch.bincount(y, minlength=num_classes).double() / len(y)",
         "overall = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)")],
    "counts, not proportions": [
        ("local = torch.bincount(y[p], minlength=num_classes).double() / len(p)",
         "local = torch.bincount(y[p], minlength=num_classes).double()")],
    "empty clients divide by zero": [("        if len(p):\n", "        if True:\n")],
    "the largest difference, not half the sum": [("0.5 * (local - overall).abs().sum()",
                                                  "(local - overall).abs().max()")],
}

WRITTEN = {"def robust_accuracy_bound": BOUND_MISTAKES,
           "def gaussian_robust_accuracy": GAUSSIAN_MISTAKES,
           "def label_skew": SKEW_MISTAKES}


test_exercises_accept_the_solution, test_exercises_reject_planted_mistakes = \
    written_exercise_tests(LESSON, WRITTEN, errors=(AssertionError, ValueError, ZeroDivisionError))


# --- the stored TRADES sweep ---------------------------------------------------------------------


def test_stored_trades_sweep_is_what_lesson_03a_printed():
    """robustlab/results/trades_beta_sweep.md (read by section 1, shipped with the package) holds
    the numbers of 03a's stored full run: when 03a is re-executed, this fails until it is updated."""
    nb = json.loads(Lesson("03a-adversarial-training.ipynb").path.read_text(encoding="utf-8"))
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    sweep = re.findall(r"β = *([\d.]+): clean accuracy ([\d.]+), PGD-20 accuracy ([\d.]+)", printed)
    stored = tables.read_markdown_table(tables.stored_result("trades_beta_sweep"))
    assert len(sweep) == 6
    assert [(float(b), c, r) for b, c, r in sweep] == [(float(r["beta"]), r["clean"], r["PGD-20"])
                                                       for r in stored]


# --- the widget ------------------------------------------------------------------------------------

CURVES = {64: {"n": [1, 2, 4], "standard": [0.8, 0.9, 0.95], "robust": [0.3, 0.5, 0.7]},
          256: {"n": [1, 2, 4], "standard": [0.85, 0.92, 0.97], "robust": [0.1, 0.2, 0.4]}}


def test_schmidt_explorer_follows_its_controls():
    w = widgets.schmidt_explorer(CURVES, d=64, n=2)
    assert w.state == {"d": 64, "n": 2, "standard": 0.9, "robust": 0.5, "gap": pytest.approx(0.4)}
    w.d.value = 256
    assert w.state["d"] == 256 and w.state["robust"] == 0.2 and w.state["n"] == 2
    w.n.value = 4
    assert (w.state["standard"], w.state["robust"]) == (0.97, 0.4)
    assert w.state["gap"] == pytest.approx(0.57)
    default = widgets.schmidt_explorer(CURVES)
    assert default.state["d"] == 256 and default.state["n"] == 1   # the middle d, the smallest n


def test_schmidt_explorer_refuses_bad_curves():
    with pytest.raises(ValueError, match="curves"):
        widgets.schmidt_explorer({})
    with pytest.raises(ValueError, match="same sample sizes"):
        widgets.schmidt_explorer({64: CURVES[64], 256: {"n": [1, 3], "standard": [0.5, 0.6],
                                                        "robust": [0.1, 0.2]}})
    with pytest.raises(ValueError, match="increasing"):
        widgets.schmidt_explorer({64: {"n": [2, 1], "standard": [0.5, 0.6], "robust": [0.1, 0.2]}})
    with pytest.raises(ValueError, match="d must be one of"):
        widgets.schmidt_explorer(CURVES, d=128)
    with pytest.raises(ValueError, match="n must be one of"):
        widgets.schmidt_explorer(CURVES, n=3)
