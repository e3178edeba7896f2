"""Lesson 01's exercise checks reject wrong answers and accept the solutions.

Each check cell runs here, outside the notebook, once with the lesson's own solution (it must
pass) and once with each planted wrong answer (it must fail with an AssertionError), so a check
that cannot fail is caught. Exercise 4 is predict-then-run: its check compares the learner's
predicted bands with the shares the experiment measured, which the tests supply.
"""

import pytest
import torch
import torch.nn.functional as F

from robustlab import attacks, data, models, train

from .lesson_cells import Lesson

LESSON = Lesson("01-introduction.ipynb")


# ---- exercise 4: predict, then run ------------------------------------------------------------

PREDICT = "predicted_colour = "
CHECK = "band(flip_colour"
# the shares measured in the stored run (colour digits: 0.33, 0.82, 0.99, 1.0; digits: 0.03 at 4)
MEASURED = {"flip_colour": {1: 0.33, 2: 0.82, 3: 0.99, 4: 1.0},
            "flip_digits": {1: 0.01, 2: 0.01, 3: 0.01, 4: 0.03, 25: 0.56, 51: 0.99}}


def run_prediction(answers: dict | None, measured: dict = MEASURED) -> None:
    solution, _ = LESSON.exercise(PREDICT, solution=True)
    namespace = LESSON.run(solution, {})
    namespace.update(answers or {})
    check = next(s for s in LESSON.cells() if CHECK in s)
    LESSON.run(check, {**namespace, **measured})


def test_prediction_solution_passes():
    run_prediction(None)


WRONG_PREDICTIONS = {
    "colour: the digits' band": {"predicted_colour": "under 10%"},
    "colour: the middle band": {"predicted_colour": "10-50%"},
    "digits: the colour band": {"predicted_digits": "over 50%"},
    "digits: the middle band": {"predicted_digits": "10-50%"},
    "both swapped": {"predicted_colour": "under 10%", "predicted_digits": "over 50%"},
    "a number, not a band": {"predicted_colour": 0.9},
    "a misspelt band": {"predicted_digits": "under 10 %"},
}


@pytest.mark.parametrize("answers", WRONG_PREDICTIONS.values(), ids=list(WRONG_PREDICTIONS))
def test_a_wrong_prediction_fails(answers):
    with pytest.raises(AssertionError):
        run_prediction(answers)


def test_the_prediction_check_follows_the_measurement():
    """Had the experiment measured other shares, the stored answers would be wrong: the check
    compares with what ran, not with fixed answers."""
    robust = {"flip_colour": {**MEASURED["flip_colour"], 4: 0.3}, "flip_digits": MEASURED["flip_digits"]}
    with pytest.raises(AssertionError, match="flips 30% of the correct colour digits"):
        run_prediction(None, robust)
    run_prediction({"predicted_colour": "10-50%"}, robust)


# ---- exercises 1-3: FGSM, the smallest fooling eps, the norms of a perturbation ---------------

@pytest.fixture(scope="module")
def digits_setup():
    x, y = data.digits("test")
    return {"torch": torch, "F": F, "attacks": attacks, "train": train,
            "cnn": models.pretrained("digits-cnn"), "x_test": x, "y_test": y}


def fgsm_without_clip(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).detach()


def fgsm_descending(model, x, y, eps):  # steps down the loss: makes the digit *more* certain
    return (fgsm_without_clip(model, x, y, -eps)).clamp(0, 1)


def fgsm_raw_gradient(model, x, y, eps):  # eps * gradient instead of eps * sign(gradient)
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad).clamp(0, 1).detach()


def fgsm_twice_eps(model, x, y, eps):
    return fgsm_descending(model, x, y, -2 * eps)


def test_fgsm_solution_passes(digits_setup):
    LESSON.check("def my_fgsm", digits_setup)


@pytest.mark.parametrize("wrong", [fgsm_without_clip, fgsm_descending, fgsm_raw_gradient,
                                   fgsm_twice_eps], ids=lambda f: f.__name__)
def test_a_wrong_fgsm_fails(digits_setup, wrong):
    with pytest.raises(AssertionError):
        LESSON.check("def my_fgsm", digits_setup, {"my_fgsm": wrong})


def test_smallest_fooling_eps(digits_setup):
    grid = [round(0.01 * k, 2) for k in range(51)]
    inputs = {**digits_setup, "grid": grid}
    LESSON.check("def smallest_fooling_eps", inputs)
    for wrong in (lambda *a: None, lambda m, x, y, g: g[-1], lambda m, x, y, g: g[0]):
        with pytest.raises(AssertionError):
            LESSON.check("def smallest_fooling_eps", inputs, {"smallest_fooling_eps": wrong})


def test_perturbation_norms(digits_setup):
    x_tl = data.traffic_lights("test", n=4)[0]
    x_one = x_tl[2:3].clone()
    x_one[0, :, 5, 7] = torch.tensor([1.0, 0.0, 1.0])       # one pixel, every channel recoloured
    x_adv = attacks.fgsm(digits_setup["cnn"], digits_setup["x_test"][:4],
                         digits_setup["y_test"][:4], eps=0.2)
    inputs = {"torch": torch, "x_tl": x_tl, "x_one": x_one, "i_tl": 2, "x_adv": x_adv,
              "x_test": digits_setup["x_test"][:4], "i_fgsm": 1}
    LESSON.check("def perturbation_norms", inputs)

    def per_coordinate_l0(delta):   # counts channels, so a recoloured pixel counts three times
        return int((delta != 0).sum()), delta.norm().item(), delta.abs().max().item()

    def squared_l2(delta):
        return int((delta != 0).any(0).sum()), delta.pow(2).sum().item(), delta.abs().max().item()

    def mean_linf(delta):
        return int((delta != 0).any(0).sum()), delta.norm().item(), delta.abs().mean().item()

    for wrong in (per_coordinate_l0, squared_l2, mean_linf):
        with pytest.raises(AssertionError):
            LESSON.check("def perturbation_norms", inputs, {"perturbation_norms": wrong})
