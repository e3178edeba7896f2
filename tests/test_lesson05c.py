"""Lesson 05c's exercise checks accept the solutions and reject wrong answers, and its widget
(`robustlab.widgets.region_explorer`) follows its slider over stored verdicts.

Each exercise test runs the lesson's own cells (the solution, then the check) in a fresh
namespace, then plants wrong answers in place of the solution (the solution's own source with
one mistake planted) and expects the check to fail.
"""

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from robustlab import verify, widgets  # noqa: E402

from .lesson_cells import Lesson, cell_after, cell_starting, planted  # noqa: E402

LESSON = Lesson("05c-future-verification.ipynb")
run = LESSON.run


@pytest.fixture(scope="module")
def cells():
    return LESSON.cells()


@pytest.fixture(scope="module")
def lesson_state(cells):
    """What the checks read: section 3's fine-tuned digits network and its verdicts, on 6 digits."""
    ns: dict = {}
    exec("import copy\nimport time\nfrom collections import Counter\nimport torch\nfrom torch import nn\n"
         "from IPython.display import Markdown, display\nimport robustlab\n"
         "from robustlab import data, models, train, verify", ns)
    ns.update(SEED=0, N_REVERIFY=6)
    run(cell_starting(cells, "old_net = models.pretrained"), ns)
    return ns


NEVER_MISTAKES = {
    "signs swapped": [("eye[[i for i in range(k) if i != j]] - eye[j]",
                       "eye[j] - eye[[i for i in range(k) if i != j]]")],
    "row j kept (a zero row)": [("if i != j]]", "]]")],
    "another class subtracted": [("- eye[j]", "- eye[(j + 1) % k]")],
}

MERGED_MISTAKES = {
    "outgoing weights without |S|": [("size * cols.amin(1), size * cols.amax(1)",
                                      "cols.amin(1), cols.amax(1)")],
    "incoming weights scaled by |S|": [("rows.amin(0), rows.amax(0)",
                                        "size * rows.amin(0), size * rows.amax(0)")],
    "the mean bias as its lower end": [("b_in[members].min()", "b_in[members].mean()")],
    "min and max over the members' inputs": [("rows.amin(0), rows.amax(0)", "rows.amin(1), rows.amax(1)")],
    "lower and upper swapped": [("size * cols.amin(1), size * cols.amax(1)",
                                 "size * cols.amax(1), size * cols.amin(1)")],
}

FOOLS_MISTAKES = {
    "no ball check": [("return inside and in_box and", "return in_box and")],
    "no image-box check": [("return inside and in_box and", "return inside and")],
    "fooled when the label is predicted": [("!= y", "== y")],
    "L2 distance for the L-inf ball": [("(p - x).abs().max().item()", "(p - x).norm().item()")],
    "mean distance for the L-inf ball": [("(p - x).abs().max().item()", "(p - x).abs().mean().item()")],
    "the model run on the clean image": [("train.predict(model, p[None])", "train.predict(model, x[None])")],
}

# exercise 1 (never class j), 2 (a merged neuron), 3 (the warm start's check)
WRITTEN = {"def never_rows": NEVER_MISTAKES, "def merged": MERGED_MISTAKES, "def still_fools": FOOLS_MISTAKES}


CASES = [(h, None) for h in sorted(WRITTEN)] + [(h, m) for h in sorted(WRITTEN) for m in sorted(WRITTEN[h])]


@pytest.mark.parametrize("head, mistake", CASES, ids=[f"{h[4:]}-{m or 'solution'}" for h, m in CASES])
def test_check_accepts_the_solution_and_rejects_each_mistake(cells, lesson_state, head, mistake):
    """The solution (mistake None) passes its check cell; each planted mistake fails it."""
    ns = dict(lesson_state)
    solution = cell_starting(cells, head)
    run(solution if mistake is None else planted(solution, WRITTEN[head][mistake]), ns)
    if mistake is None:
        run(cell_after(cells, head), ns)
        return
    with pytest.raises(AssertionError):
        run(cell_after(cells, head), ns)


# --- the widget ------------------------------------------------------------------------------------

def two_pixel_net() -> nn.Module:
    """Logits (x0 - x1, x1 - x0, 0) on (1, 1, 2) images: class 1 wins where x1 > x0."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]))
        net[1].bias.zero_()
    return net


def stored_verdicts(net, image, radii):
    return {r: verify.verify_property(net, (image - r).clamp(0, 1), (image + r).clamp(0, 1),
                                      **verify.never_class(1, 3)) for r in radii}


def test_region_explorer_follows_its_slider():
    net, image = two_pixel_net(), torch.tensor([[[0.6, 0.4]]])
    verdicts = stored_verdicts(net, image, [0.05, 0.08, 0.15, 0.3])  # class 1 needs r > 0.1
    assert [v.status for v in verdicts.values()] == ["verified"] * 2 + ["falsified"] * 2
    w = widgets.region_explorer(image, verdicts, model=net, names=["a", "b", "c"])
    assert w.state["radius"] == 0.05 and w.state["status"] == "verified" and w.state["predicted"] is None
    w.radius.value = 0.15
    assert w.state["status"] == "falsified" and w.state["predicted"] == 1
    assert 0.1 <= w.state["distance"] <= 0.15 + 1e-6
    assert w.state["seconds"] == verdicts[0.15].seconds
    w.radius.value = 0.08
    assert w.state["status"] == "verified" and w.state["distance"] is None


def test_region_explorer_refuses_bad_input():
    net, image = two_pixel_net(), torch.tensor([[[0.6, 0.4]]])
    verdicts = stored_verdicts(net, image, [0.05])
    with pytest.raises(ValueError, match="image must be one"):
        widgets.region_explorer(image[None], verdicts, model=net)
    with pytest.raises(ValueError, match="verdicts must be a non-empty dict"):
        widgets.region_explorer(image, {}, model=net)
    with pytest.raises(ValueError, match=r"verdicts\[0.1\] must be a Verdict"):
        widgets.region_explorer(image, {0.1: "verified"}, model=net)
    with pytest.raises(ValueError, match="radius must be one of the stored radii"):
        widgets.region_explorer(image, verdicts, model=net, radius=0.2)
    with pytest.raises(ValueError, match="names must hold one name per class"):
        widgets.region_explorer(image, verdicts, model=net, names=["a", "b"])
