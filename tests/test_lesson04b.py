"""Lesson 04b's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.clever_explorer`) reacts to its controls.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in place of the solution (a wrong function, or the
solution's own source with one mistake planted) and expects the check to fail.
"""

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from robustlab import data, models, widgets  # noqa: E402

from .lesson_cells import Lesson, cell_after, cell_starting, planted, written_exercise_tests  # noqa: E402

LESSON = Lesson("04b-statistical-evaluation.ipynb")


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


run = LESSON.run


@pytest.fixture(scope="module")
def lesson_state(cells):
    """What the checks read: section 2's network builder and settings, Table 2, the digits."""
    ns: dict = {}
    exec("import math\nimport torch\nfrom torch import nn\nimport robustlab\n"
         "from robustlab import data, models, stats", ns)
    ns["SEED"] = 0
    sec2 = cell_starting(cells, "K_PIX, N_MC")
    run(sec2[:sec2.index("rare = []")], ns)  # the builder and settings, not the table
    table2 = cell_starting(cells, "TABLE2 = {")
    run(table2[:table2.index("theirs =")], ns)
    x, y = data.digits("test")
    ns.update(mlp=models.pretrained("digits-mlp"), x1=x[:12])
    return ns


# --- exercise 1: the Irwin-Hall tail ---------------------------------------------------------------

IRWIN_HALL_MISTAKES = {
    "the corner formula everywhere": [("for j in range(math.floor(s) + 1)", "for j in range(1)")],
    "the CDF, not the tail": [("s = k - t ", "s = t ")],
    "signs not alternating": [("(-1) ** j * ", "")],
    "one term too few": [("range(math.floor(s) + 1)", "range(math.floor(s))")],
    "one term too many": [("range(math.floor(s) + 1)", "range(math.floor(s) + 2)")],
    "1 - F(t), which loses the small tails": [
        ("s = k - t ", "s = t "),
        ("return sum(", "return 1.0 - sum(")],
}


def test_exercise_1_mistakes_swap_the_ends_too(cells, lesson_state):
    # the "1 - F(t)" variant with its ends in the right place is still caught by precision alone
    ns = dict(lesson_state)
    source = planted(cell_starting(cells, "def irwin_hall_tail"),
                     IRWIN_HALL_MISTAKES["1 - F(t), which loses the small tails"]
                     + [("if s <= 0:\n        return 0.0", "if s <= 0:\n        return 1.0"),
                        ("if s >= k:\n        return 1.0", "if s >= k:\n        return 0.0")])
    run(source, ns)
    assert math.isclose(ns["irwin_hall_tail"](3, 1.5), 0.5)  # right in the middle
    with pytest.raises(AssertionError):
        run(cell_after(cells, "def irwin_hall_tail"), ns)


# --- exercise 2: counting pairs --------------------------------------------------------------------

PAIR_MISTAKES = {
    "ties counted as concordant": [("if s > 0:", "if s >= 0:")],
    "every pair counted twice": [("for j in range(i + 1, len(measure)):",
                                  "for j in range(len(measure)):\n            if i == j:\n"
                                  "                continue")],
    "concordant and discordant swapped": [("return concordant, discordant, ties",
                                           "return discordant, concordant, ties")],
    "ties counted only when tied in both": [
        ("            else:\n                ties += 1",
         "            elif measure[i] == measure[j] and gap[i] == gap[j]:\n                ties += 1")],
    "ties in the gap missed": [("s = (measure[i] - measure[j]) * (gap[i] - gap[j])",
                                "s = (measure[i] - measure[j]) * ((gap[i] > gap[j]) * 2 - 1)")],
}


# --- exercise 3: neuron coverage by hand -----------------------------------------------------------

COVERAGE_MISTAKES = {
    "covered by every input, not one": [("(h > threshold).any(0)", "(h > threshold).all(0)")],
    ">= instead of >": [("(h > threshold)", "(h >= threshold)")],
    "the mean activation against the threshold": [("(h > threshold).any(0)",
                                                    "(h.mean(0) > threshold)")],
    "the logits counted as neurons": [("if isinstance(layer, nn.ReLU):",
                                       "if isinstance(layer, (nn.ReLU, nn.Linear)):")],
    "a count, not a fraction": [(".double().mean().item()", ".double().sum().item()")],
    "the mean of the layers' fractions": [("covered.append((h > threshold).any(0))",
                                           "covered.append((h > threshold).any(0).double().mean().view(1))")],
}


# exercise 1 (Irwin-Hall), 2 (pairs) and 3 (coverage): the solution cell starts with `head`
WRITTEN = {"def irwin_hall_tail": IRWIN_HALL_MISTAKES, "def count_pairs": PAIR_MISTAKES,
           "def my_neuron_coverage": COVERAGE_MISTAKES}


test_exercises_accept_the_solution, test_exercises_reject_planted_mistakes = \
    written_exercise_tests(LESSON, WRITTEN)


# --- the widget ------------------------------------------------------------------------------------

def test_clever_explorer_follows_its_controls():
    torch.manual_seed(0)
    net = models.MLP(hidden=(8,)).eval()
    x = data.digits("test")[0][:3]
    w = widgets.clever_explorer(net, x, n_batches=10, batch_size=8, seed=1)
    first = dict(w.state)
    assert first["index"] == 0 and first["norm"] == "l2" and first["radius"] == 2.0
    assert 0 < first["score"] <= first["radius"] and first["maxima"].shape == (10,)
    assert math.isclose(first["score"], min(first["margin"] / first["lipschitz"], first["radius"]))
    w.index.value = 2
    assert w.state["index"] == 2 and w.state["margin"] != first["margin"]
    w.index.value = 0  # the same setting draws the same samples: the same picture
    assert w.state["score"] == first["score"] and torch.equal(w.state["maxima"], first["maxima"])
    w.norm.value = "linf"  # the radius follows the norm, and the dual norm changes the maxima
    assert w.state["norm"] == "linf" and w.state["radius"] == widgets.stats.RADII["linf"]
    assert w.state["lipschitz"] > first["lipschitz"]  # ||g||_1 >= ||g||_2
    w.radius.value = w.radius.min  # the smallest ball: the score is at most R
    state = w.state
    assert state["radius"] == w.radius.min and state["score"] <= w.radius.min
    assert math.isclose(state["score"], min(state["margin"] / state["lipschitz"], state["radius"]))


def test_clever_explorer_radius_stays_on_its_grid():
    """Every norm's default radius is a point of the slider's grid (see test_widgets)."""
    from .test_widgets import _on_grid

    w = widgets.clever_explorer(models.MLP(hidden=(4,)), data.digits("test")[0][:1],
                                n_batches=10, batch_size=4)
    for norm in ("linf", "l1", "l2"):
        w.norm.value = norm
        assert _on_grid(w.radius) and w.radius.value == widgets.stats.RADII[norm], norm


def test_clever_explorer_refuses_an_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        widgets.clever_explorer(models.MLP(hidden=(4,)), data.digits("test")[0][:1], norm="l3")


# --- section 4: the MNIST rows of Table 2, with a fake loader in place of torchvision ------------

def _mnist_namespace(cells) -> dict:
    """What the MNIST cell reads: the lesson's imports and settings, its `archs`, and the digits'
    results it prints beside its own."""
    ns: dict = {}
    exec("import torch\nimport robustlab\nfrom IPython.display import Markdown, display\n"
         "from robustlab import data, models, stats", ns)
    digits = cell_starting(cells, "def archs")
    run(digits[:digits.index("x_train, y_train =")], ns)
    ns.update(SEED=0, EPOCHS=1, N_MNIST=40, KEYS=["PFN", "PSN", "NoP", "SoSP", "PB", "PBC", "WC"],
              best="PSN", taus={"PSN": 0.9})
    return ns


def _fake_mnist(name, split="train", root=None, *, download=True):
    """28 x 28 images whose class k is a bright bar on row 2k + 4, over noise; 10 classes."""
    n = 80 if split == "train" else 100
    y = torch.arange(n) % 10
    x = 0.2 * torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
    x[torch.arange(n), 0, 2 * y + 4, 4:24] = 0.9
    return x, y


def test_mnist_rows_are_computed_where_mnist_loads(cells, monkeypatch, capsys):
    calls = []

    def load(name, split="train", root=None, *, download=True):
        calls.append((name, split, download))
        return _fake_mnist(name, split)

    monkeypatch.setattr(data, "load", load)
    ns = _mnist_namespace(cells)
    run(cell_starting(cells, "try:\n    mnist_train"), ns)
    assert calls == [("mnist", "train", False), ("mnist", "test", False)], "never a download"
    result = ns["mnist_table2"]
    assert list(result.values) == list(ns["archs"](28)) and len(result.values) == 9
    for k in ns["KEYS"]:
        r = result.kendall[k]
        assert r.concordant + r.discordant + r.ties == 36
    # the networks were built for 28 x 28 inputs: NoP of "MLP 16" is 784 * 16 + 16 + 16 * 10 + 10
    assert result.values["MLP 16"]["NoP"] == 784 * 16 + 16 + 16 * 10 + 10
    out = capsys.readouterr().out
    assert "best-ranked measure on MNIST" in out and "on the digits: PSN" in out


def test_lesson_says_in_one_line_when_mnist_does_not_load(cells, monkeypatch, capsys):
    def load(name, split="train", root=None, *, download=True):
        raise RuntimeError(f"load({name!r}) needs torchvision, which could not be imported "
                           "(ModuleNotFoundError: No module named 'torchvision'). Install it.")

    monkeypatch.setattr(data, "load", load)
    ns = _mnist_namespace(cells)
    run(cell_starting(cells, "try:\n    mnist_train"), ns)
    out = capsys.readouterr().out
    assert ns["mnist_table2"] is None
    assert out.count("\n") == 1 and out.startswith("MNIST not loaded") and "needs torchvision" in out
    # a learner's expected message, not an error: JupyterLab users (and the browser test) read
    # "...Error:" in an output as a failed cell
    assert "Error:" not in out and "Install it" not in out
