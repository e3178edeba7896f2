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

    def ascend(model, x, y, eps, alpha, steps, sign=1.0, project="each", clip="each",
               reduction="mean"):
        # project / clip: onto the ball / into [0, 1] after each step ("each"), once after the
        # loop ("end") or never (None)
        def ball(z):
            return torch.min(torch.max(z, x - eps), x + eps)

        x_adv = x.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
            x_adv = x_adv.detach() + sign * alpha * g.sign()
            x_adv = ball(x_adv) if project == "each" else x_adv
            x_adv = x_adv.clamp(0, 1) if clip == "each" else x_adv
        x_adv = ball(x_adv) if project == "end" else x_adv
        x_adv = x_adv.clamp(0, 1) if clip == "end" else x_adv
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
        "no projection onto the ball": lambda *a: ascend(*a, project=None),
        "projects onto the ball only after the loop": lambda *a: ascend(*a, project="end"),
        "projects and clips only after the loop": lambda *a: ascend(*a, project="end", clip="end"),
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


# section 8's logs as the check cell receives them: {name: ([(FGSM acc, PGD acc) per epoch], eps)}
SINGLE_STEP = {"no collapse": ([(0.2, 0.1), (0.35, 0.25), (0.4, 0.3), (0.45, 0.33)], 0.2),
               "no robustness": ([(0.09, 0.01), (0.15, 0.06), (0.2, 0.05), (0.3, 0.07)], 0.3)}


def wrong_collapse_epochs():
    def fell(p, t, window, drop):
        return p[t] <= max(p[max(0, t - window):t]) - drop

    def gap_only(f, p, drop=0.2, window=3):
        # the weak-attack gap: FGSM far above PGD, with no fall at all
        return next((t + 1 for t in range(len(p)) if f[t] - p[t] >= drop), None)

    def fall_only(f, p, drop=0.2, window=3):
        # any sudden fall of PGD accuracy, even when training diverges and FGSM falls too
        return next((t + 1 for t in range(1, len(p)) if fell(p, t, window, drop)), None)

    def best_so_far(f, p, drop=0.2, window=3):
        # compares with the best of all earlier epochs: a slow decline counts as a collapse
        return next((t + 1 for t in range(1, len(p))
                     if fell(p, t, t, drop) and f[t] - p[t] >= drop), None)

    def previous_epoch(f, p, drop=0.2, window=3):
        # compares with the previous epoch only (the simpler rule of Wong et al.'s early stopping, not
        # the one the exercise asks for): a fall spread over a few epochs is missed
        return next((t + 1 for t in range(1, len(p))
                     if fell(p, t, 1, drop) and f[t] - p[t] >= drop), None)

    def counts_from_zero(f, p, drop=0.2, window=3):
        return next((t for t in range(1, len(p))
                     if fell(p, t, window, drop) and f[t] - p[t] >= drop), None)

    def window_of_four(f, p, drop=0.2, window=3):
        # one epoch too many in the window: a fall spread over four epochs counts as a collapse
        return next((t + 1 for t in range(1, len(p))
                     if fell(p, t, window + 1, drop) and f[t] - p[t] >= drop), None)

    def fgsm_absolute(f, p, drop=0.2, window=3):
        # FGSM accuracy at least `drop`, not at least `drop` above PGD's
        return next((t + 1 for t in range(1, len(p)) if fell(p, t, window, drop) and f[t] >= drop), None)

    def fgsm_near_its_best(f, p, drop=0.2, window=3):
        # FGSM accuracy within `drop` of its own recent best instead of `drop` above PGD's
        return next((t + 1 for t in range(1, len(p))
                     if fell(p, t, window, drop) and f[t] >= max(f[max(0, t - window):t]) - drop), None)

    return {"FGSM-PGD gap alone": gap_only, "window of four epochs": window_of_four,
            "FGSM accuracy above drop": fgsm_absolute, "FGSM near its recent best": fgsm_near_its_best,
            "PGD fall alone": fall_only,
            "fall from the best of all earlier epochs": best_so_far,
            "fall from the previous epoch only": previous_epoch, "epochs counted from 0": counts_from_zero}


def test_exercise2_accepts_the_solution():
    LESSON.check("def collapse_epoch", {"single_step": SINGLE_STEP})


@pytest.mark.parametrize("name", list(wrong_collapse_epochs()))
def test_exercise2_rejects_a_wrong_detector(name):
    _, check = exercise("def collapse_epoch")
    ns = {"single_step": SINGLE_STEP, "collapse_epoch": wrong_collapse_epochs()[name]}
    with pytest.raises(AssertionError):
        run(check, ns)


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
