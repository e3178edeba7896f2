"""Lesson 04a's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.reach_explorer`) reacts to its controls and stays sound.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in place of the solution and expects the check to fail.
"""

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from robustlab import models, widgets  # noqa: E402

from .lesson_cells import Lesson  # noqa: E402

LESSON = Lesson("04a-verification.ipynb")


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


def cell_starting(cells, head: str) -> str:
    found = [s for s in cells if s.lstrip().startswith(head)]
    assert len(found) == 1, f"one code cell starts with {head!r}, found {len(found)}"
    return found[0]


def cell_after(cells, head: str) -> str:
    """The check: the code cell right after the one that starts with `head`."""
    return cells[cells.index(cell_starting(cells, head)) + 1]


def namespace() -> dict:
    ns: dict = {}
    exec("import torch\nfrom torch import nn\nfrom robustlab import data, models, train, verify", ns)
    return ns


run = LESSON.run


# --- exercise 1: interval propagation through Linear + ReLU --------------------------------------

def interval_weight_not_abs(W, b, lower, upper):
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    mid, spread = centre @ W.T + b, radius @ W.T  # W instead of |W|
    return (mid - spread).relu(), (mid + spread).relu()


def interval_no_relu(W, b, lower, upper):
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    mid, spread = centre @ W.T + b, radius @ W.abs().T
    return mid - spread, mid + spread


def interval_corners(W, b, lower, upper):
    # the image of the two corners is not a bound when W has mixed signs
    return (lower @ W.T + b).relu(), (upper @ W.T + b).relu()


def test_exercise_1_accepts_the_solution(cells):
    ns = namespace()
    run(cell_starting(cells, "def interval_layer"), ns)
    run(cell_after(cells, "def interval_layer"), ns)


@pytest.mark.parametrize("wrong", [interval_weight_not_abs, interval_no_relu, interval_corners])
def test_exercise_1_rejects_wrong_answers(cells, wrong):
    ns = namespace()
    ns["interval_layer"] = wrong
    with pytest.raises(AssertionError):
        run(cell_after(cells, "def interval_layer"), ns)


# --- exercise 2: the big-M constraints ---------------------------------------------------------

def big_m_swapped(z, a, delta, l, u):
    tol = 1e-9
    return (a >= z - tol) & (a >= -tol) & (a <= u * (1 - delta) + tol) & (a <= z - l * delta + tol)


def big_m_without_a_ge_z(z, a, delta, l, u):
    tol = 1e-9
    return (a >= -tol) & (a <= u * delta + tol) & (a <= z - l * (1 - delta) + tol)


def big_m_without_a_ge_0(z, a, delta, l, u):
    tol = 1e-9
    return (a >= z - tol) & (a <= u * delta + tol) & (a <= z - l * (1 - delta) + tol)


def test_exercise_2_accepts_the_solution(cells):
    ns = namespace()
    run(cell_starting(cells, "def big_m_feasible"), ns)
    run(cell_after(cells, "def big_m_feasible"), ns)


@pytest.mark.parametrize("wrong", [big_m_swapped, big_m_without_a_ge_z, big_m_without_a_ge_0])
def test_exercise_2_rejects_wrong_answers(cells, wrong):
    ns = namespace()
    ns["big_m_feasible"] = wrong
    with pytest.raises(AssertionError):
        run(cell_after(cells, "def big_m_feasible"), ns)


# --- exercise 3: predict, then run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def exercise_3(cells):
    """The namespace the check of exercise 3 needs: the lesson's own helper, models and data."""
    ns = namespace()
    ns["N_GAP"] = 4
    run(cell_starting(cells, "x_test, y_test = data.digits"), ns)
    ns["robust"] = models.pretrained("digits-mlp-ibp")
    return ns


@pytest.mark.parametrize("standard, ibp_trained", [(True, False), (True, True), (False, False),
                                                   (False, True)])
def test_exercise_3_accepts_only_the_measured_answer(cells, exercise_3, standard, ibp_trained):
    head = "### BEGIN SOLUTION\ncrown_wins_on_standard"
    ns = dict(exercise_3)
    run(cell_starting(cells, head), ns)
    assert (ns["crown_wins_on_standard"], ns["crown_wins_on_ibp_trained"]) == (True, False)
    ns.update(crown_wins_on_standard=standard, crown_wins_on_ibp_trained=ibp_trained)
    if (standard, ibp_trained) == (True, False):
        run(cell_after(cells, head), ns)
    else:
        with pytest.raises(AssertionError):
            run(cell_after(cells, head), ns)


# --- the widget ------------------------------------------------------------------------------------

def toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def test_reach_explorer_follows_its_controls_and_stays_sound():
    net, x0 = toy(), torch.tensor([[[[0.4, 0.6]]]])
    w = widgets.reach_explorer(net, x0, eps=0.1, samples=500)
    assert w.state["eps"] == 0.1 and all(w.state["inside"].values())
    widths = w.state["widths"]
    # Xiang's sub-boxes are never looser than one box (IBP)
    assert (widths["reach"] <= widths["interval"] + 1e-6).all()
    w.eps.value = 0.0  # a point: every box shrinks to the model's float32 rounding bound
    assert all(float(v.abs().max()) < 1e-4 for v in w.state["widths"].values())
    w.eps.value = 0.3
    assert (w.state["widths"]["interval"] > widths["interval"]).all()
    w.partitions.value = 1  # one box: Xiang's rule is IBP's
    assert torch.allclose(w.state["widths"]["reach"], w.state["widths"]["interval"], atol=1e-6)
    assert all(w.state["inside"].values())


def test_draw_output_bounds_refuses_other_shapes():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="x must be one input with two entries"):
        widgets.draw_output_bounds(axes, toy(), torch.full((1, 1, 1, 3), 0.5), 0.1)
    three_out = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(ValueError, match="model must have two outputs"):
        widgets.draw_output_bounds(axes, three_out, torch.full((1, 1, 1, 2), 0.5), 0.1)
    plt.close(fig)
