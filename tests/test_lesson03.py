"""Lesson 03a's exercise checks reject wrong answers and accept the solution.

Each check cell of lessons/03a-adversarial-training.ipynb runs here, outside the notebook, once
with the lesson's own solution (it must pass) and once with each planted wrong answer (it must
fail with an AssertionError), so a check that cannot fail is caught.
"""

import pytest
import torch
import torch.nn.functional as F

import robustlab
from robustlab import attacks, data, models, train
from robustlab.defences import pgd_at

from .lesson_cells import Lesson

LESSON = Lesson("03a-adversarial-training.ipynb")
code_cells, exercise, run = LESSON.cells, LESSON.exercise, LESSON.run


@pytest.fixture(scope="module")
def lesson_namespace():
    """The lesson's parameters and its data cell (fresh_mlp, pgd_accuracy, the digits)."""
    cells = code_cells()
    ns = {"torch": torch, "F": F, "attacks": attacks, "data": data, "models": models,
          "train": train, "pgd_at": pgd_at, "device": torch.device("cpu"),
          "robustlab": robustlab}
    run(next(s for s in cells if s.startswith("FAST = False")), ns)
    run(next(s for s in cells if "def fresh_mlp" in s), ns)
    return ns


def wrong_pgd_at_losses():
    def clean(model, x, y, eps, alpha, steps):
        return F.cross_entropy(model(x), y)

    def ascend(model, x, y, eps, alpha, steps, sign=1.0, project=True, reduction="mean"):
        x_adv = x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
            x_adv = x_adv.detach() + sign * alpha * g.sign()
            if project:
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
            x_adv = x_adv.clamp(0, 1)
        return F.cross_entropy(model(x_adv), y, reduction=reduction)

    def through_backward(model, x, y, eps, alpha, steps):
        # the input gradient from loss.backward(): it also writes the weights' .grad
        x_adv = x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            F.cross_entropy(model(x_adv), y, reduction="sum").backward()
            x_adv = x_adv.detach() + alpha * x_adv.grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
        return F.cross_entropy(model(x_adv), y)

    return {
        "clean loss": clean,
        "descends instead of ascending": lambda *a: ascend(*a, sign=-1.0),
        "no projection onto the ball": lambda *a: ascend(*a, project=False),
        "summed instead of mean loss": lambda *a: ascend(*a, reduction="sum"),
        "attack writes the weights' .grad": through_backward,
    }


def test_exercise1_accepts_the_solution(lesson_namespace):
    solution, check = exercise("def pgd_at_loss")
    run(check, run(solution, dict(lesson_namespace)))


@pytest.mark.parametrize("name", list(wrong_pgd_at_losses()))
def test_exercise1_rejects_a_wrong_pgd_at_loss(lesson_namespace, name):
    _, check = exercise("def pgd_at_loss")
    ns = dict(lesson_namespace, pgd_at_loss=wrong_pgd_at_losses()[name])
    with pytest.raises(AssertionError):
        run(check, ns)


def test_exercise2_prediction_is_checked_against_the_measurement():
    prediction_cell = next(s for s in code_cells() if "prediction = " in s and "### BEGIN SOLUTION" in s)
    check = next(s for s in code_cells() if "prediction ==" in s)
    measured = run(prediction_cell, {})["prediction"]
    run(check, {"prediction": measured, "gap": 0.25})          # the lesson's own answer
    for wrong, gap in [(not measured, 0.25), ("yes", 0.25), (1, 0.25), (measured, 0.02)]:
        with pytest.raises(AssertionError):
            run(check, {"prediction": wrong, "gap": gap})


def wrong_cheapest():
    def most_robust(results, seconds, tolerance):
        return max(results, key=lambda n: results[n]["worst"])

    def fastest(results, seconds, tolerance):
        return min(results, key=lambda n: seconds[n])

    def ignores_tolerance(results, seconds, tolerance):
        best = max(r["worst"] for r in results.values())
        return min((n for n, r in results.items() if r["worst"] >= best - 0.05), key=seconds.get)

    return {"most robust": most_robust, "fastest": fastest, "fixed tolerance": ignores_tolerance}


TABLE = {"standard": {"worst": 0.01}, "PGD-AT": {"worst": 0.30}, "Fast-AT": {"worst": 0.28},
         "Free-AT": {"worst": 0.15}}
SECONDS = {"standard": 1.0, "PGD-AT": 5.0, "Fast-AT": 2.0, "Free-AT": 1.2}


def test_exercise3_accepts_the_solution():
    solution, check = exercise("def cheapest_robust")
    ns = run(solution, {"results": TABLE, "seconds": SECONDS})
    run(check, ns)
    assert ns["cheapest_robust"](TABLE, SECONDS, 0.05) == "Fast-AT"


@pytest.mark.parametrize("name", list(wrong_cheapest()))
def test_exercise3_rejects_a_wrong_rule(name):
    _, check = exercise("def cheapest_robust")
    with pytest.raises(AssertionError):
        run(check, {"results": TABLE, "seconds": SECONDS, "cheapest_robust": wrong_cheapest()[name]})
