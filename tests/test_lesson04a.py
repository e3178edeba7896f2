"""Lesson 04a's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.reach_explorer`) reacts to its controls and stays sound.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in place of the solution (a wrong function, or the
solution's own source with one mistake planted) and expects the check to fail.
"""

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from robustlab import models, widgets  # noqa: E402

from .lesson_cells import Lesson, cell_after, cell_starting, planted  # noqa: E402

LESSON = Lesson("04a-verification.ipynb")


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


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


# --- exercise 2: CROWN's back-substitution --------------------------------------------------------

@pytest.fixture(scope="module")
def lesson_models(cells):
    """The lesson's toy, its digits data and models: what the checks of exercises 2, 4 and 5 read."""
    ns = namespace()
    ns["N_GAP"] = 4
    exec("from robustlab.verify.crown import relu_relaxation\nimport numpy as np", ns)
    run(cell_starting(cells, "def toy_network"), ns)
    run(cell_starting(cells, "x_test, y_test = data.digits"), ns)
    ns["robust"] = models.pretrained("digits-mlp-ibp")
    return ns


CROWN_MISTAKES = {
    "lines swapped": [("d = d + neg @ b_u", "d = d + pos @ b_u"),
                      ("lam = pos * a_l + neg * a_u", "lam = pos * a_u + neg * a_l")],
    "intercept of the upper line dropped": [("d = d + neg @ b_u", "d = d")],
    "lower slope always 0 (sound, looser)": [("lam = pos * a_l + neg * a_u", "lam = neg * a_u")],
    "bias dropped": [("d = d + lam @ biases[k]", "d = d")],
    "concretised at the centre": [("return d + lam.clamp(min=0) @ lo + lam.clamp(max=0) @ up",
                                   "return d + lam @ ((lo + up) / 2)")],
    "concretised at the wrong ends": [("return d + lam.clamp(min=0) @ lo + lam.clamp(max=0) @ up",
                                       "return d + lam.clamp(min=0) @ up + lam.clamp(max=0) @ lo")],
}


# --- exercise 3: the big-M constraints ---------------------------------------------------------

def big_m_swapped(z, a, delta, l, u):
    tol = 1e-9
    return (a >= z - tol) & (a >= -tol) & (a <= u * (1 - delta) + tol) & (a <= z - l * delta + tol)


def big_m_without_a_ge_z(z, a, delta, l, u):
    tol = 1e-9
    return (a >= -tol) & (a <= u * delta + tol) & (a <= z - l * (1 - delta) + tol)


def big_m_without_a_ge_0(z, a, delta, l, u):
    tol = 1e-9
    return (a >= z - tol) & (a <= u * delta + tol) & (a <= z - l * (1 - delta) + tol)


def big_m_relu_itself(z, a, delta, l, u):
    # a == ReLU(z) instead of the four constraints (issue 17, item 17)
    return (a - z.clamp(min=0)).abs() < 1e-9


def big_m_relu_and_phase(z, a, delta, l, u):
    # a == ReLU(z), and delta the phase of z: right at binary delta away from z = 0, but not a
    # linear encoding (nothing is feasible for a fractional delta)
    return ((a - z.clamp(min=0)).abs() < 1e-9) & (delta == (z > 0).to(z.dtype))


def big_m_upper_line_only(z, a, delta, l, u):
    # the triangle itself: right when relaxed, but it ignores delta
    tol = 1e-9
    return (a >= z - tol) & (a >= -tol) & (a <= u / (u - l) * (z - l) + tol) & (delta == delta)


def test_exercise_3_accepts_the_solution(cells):
    ns = namespace()
    run(cell_starting(cells, "def big_m_feasible"), ns)
    run(cell_after(cells, "def big_m_feasible"), ns)


@pytest.mark.parametrize("wrong", [big_m_swapped, big_m_without_a_ge_z, big_m_without_a_ge_0,
                                   big_m_relu_itself, big_m_relu_and_phase, big_m_upper_line_only])
def test_exercise_3_rejects_wrong_answers(cells, wrong):
    ns = namespace()
    ns["big_m_feasible"] = wrong
    with pytest.raises(AssertionError):
        run(cell_after(cells, "def big_m_feasible"), ns)


# --- exercise 4: the MILP with HiGHS -----------------------------------------------------------

MILP_MISTAKES = {
    "LP relaxation (no integer delta)": [("integer += [0] * k + [1] * k", "integer += [0] * k + [0] * k")],
    "a <= z - l (1 - delta) left out": [("(-1, -l, -np.inf, b - l)]", "]")],
    "a <= u delta left out": [("(0, -u, -np.inf, 0),", "")],
    "the box not clipped to [0, 1]": [(".clamp(0, 1).numpy()", ".numpy()")],
    "the margin's sign reversed": [("c[v] = Ws[-1][y] - Ws[-1][j]", "c[v] = Ws[-1][j] - Ws[-1][y]")],
    "the output bias forgotten": [("res.fun + bs[-1][y] - bs[-1][j]", "res.fun")],
}


# exercise 2 (CROWN) and exercise 4 (MILP): the solution cell starts with `head`
WRITTEN = {"def back_substitute": CROWN_MISTAKES, "from scipy.optimize import": MILP_MISTAKES}


@pytest.mark.parametrize("head", sorted(WRITTEN))
def test_exercises_2_and_4_accept_the_solution(cells, lesson_models, head):
    ns = dict(lesson_models)
    run(cell_starting(cells, head), ns)
    run(cell_after(cells, head), ns)


@pytest.mark.parametrize("head, mistake", [(h, m) for h in sorted(WRITTEN) for m in sorted(WRITTEN[h])])
def test_exercises_2_and_4_reject_planted_mistakes(cells, lesson_models, head, mistake):
    ns = dict(lesson_models)
    run(planted(cell_starting(cells, head), WRITTEN[head][mistake]), ns)
    with pytest.raises(AssertionError):
        run(cell_after(cells, head), ns)


# --- exercise 5: predict, then run ---------------------------------------------------------------

@pytest.mark.parametrize("ibp_trained, standard", [(True, False), (True, True), (False, False),
                                                   (False, True)])
def test_exercise_5_accepts_only_the_measured_answer(cells, lesson_models, ibp_trained, standard):
    head = "### BEGIN SOLUTION\ncombined_wins_on_ibp_trained"
    ns = dict(lesson_models)
    run(cell_starting(cells, head), ns)
    assert (ns["combined_wins_on_ibp_trained"], ns["combined_wins_on_standard"]) == (True, False)
    ns.update(combined_wins_on_ibp_trained=ibp_trained, combined_wins_on_standard=standard)
    if (ibp_trained, standard) == (True, False):
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
