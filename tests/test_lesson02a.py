"""Lesson 02a's exercises 4-6: each check rejects wrong answers and accepts the solution.

The check cell of exercise 4 runs here, outside the notebook, on C&W statistics shaped like those
of section 5: once with the lesson's own solution where it is right (it must pass), and with
planted wrong answers or statistics where the solution is wrong (it must fail with an
AssertionError), so a check that cannot fail is caught. Exercise 5 (the easiest target) runs on
the zoo's CNN with planted wrong choices of target; exercise 6 (predict, then run) on planted
predictions and runs, and once with its real experiment.
"""

import pytest
import torch

from robustlab.train import predict

from .lesson_cells import Lesson

LESSON = Lesson("02a-white-box.ipynb")


def stats(l0, linf):
    """cw_stats as section 5 builds it: norm -> success rate and mean distortions."""
    return {norm: {"success_rate": 1.0, "l0_mean": a, "l2_mean": 0.6, "linf_mean": b}
            for norm, a, b in zip(("l2", "linf", "l0"), l0, linf)}


STORED = stats(l0=(46.8, 49.1, 2.6), linf=(0.216, 0.112, 0.719))


def run_check(answers: dict | None, cw_stats: dict) -> None:
    LESSON.check("fewest_pixels_norm = ", {"cw_stats": cw_stats}, answers)


def test_the_solution_passes():
    run_check(None, STORED)


WRONG = {
    "fewest pixels: the L2 variant": {"fewest_pixels_norm": "l2"},
    "fewest pixels: not a key": {"fewest_pixels_norm": "L0"},
    "largest pixel change: the L0 variant": {"largest_pixel_change_norm": "l0"},
    "largest pixel change: the L2 variant": {"largest_pixel_change_norm": "l2"},
    "the two answers swapped": {"fewest_pixels_norm": "linf", "largest_pixel_change_norm": "l0"},
}


@pytest.mark.parametrize("answers", WRONG.values(), ids=list(WRONG))
def test_a_wrong_answer_fails(answers):
    with pytest.raises(AssertionError):
        run_check(answers, STORED)


def test_the_check_reads_the_statistics_not_a_fixed_answer():
    with pytest.raises(AssertionError):
        run_check(None, stats(l0=(2.0, 49.1, 46.8), linf=(0.216, 0.112, 0.719)))
    with pytest.raises(AssertionError):
        run_check(None, stats(l0=(46.8, 49.1, 2.6), linf=(0.1, 0.2, 0.719)))


# Exercise 5: the easiest target of a targeted attack. Its check runs targeted PGD towards the
# learner's targets and towards each of the nine other classes, so it runs here on the zoo's CNN
# and the first 100 test digits (the fast mode's x_eval).

@pytest.fixture(scope="module")
def digits_cnn():
    import robustlab
    from robustlab import attacks, data, models, train

    x_test, y_test = data.digits("test")
    return {"robustlab": robustlab, "attacks": attacks, "train": train, "torch": torch,
            "cnn": models.pretrained("digits-cnn"), "device": torch.device("cpu"), "SEED": 0,
            "x_test": x_test, "y_test": y_test, "x_eval": x_test[:100], "y_eval": y_test[:100]}


def least_likely(model, x, y):
    z = predict(model, x)
    z[torch.arange(len(y)), y] = float("inf")
    return z.argmin(1)


def top_class(model, x, y):
    return predict(model, x).argmax(1)


def random_other(model, x, y):
    return (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(3))) % 10


def runner_up(model, x, y):
    z = predict(model, x)
    z[torch.arange(len(y)), y] = -float("inf")
    return z.argmax(1)


WRONG_TARGETS = {
    "the least likely class": least_likely,
    "a random other class": random_other,
    "the next class, y + 1": lambda model, x, y: (y + 1) % 10,
    "the true class itself": lambda model, x, y: y,
    "the model's own top class (the true class on correct digits)": top_class,
    "the runner-up as floats": lambda model, x, y: runner_up(model, x, y).float(),
}


def test_easiest_target_solution_passes(digits_cnn):
    LESSON.check("def easiest_target", digits_cnn)


@pytest.mark.parametrize("fn", WRONG_TARGETS.values(), ids=list(WRONG_TARGETS))
def test_easiest_target_rejects_a_wrong_choice(digits_cnn, fn):
    with pytest.raises(AssertionError):
        LESSON.check("def easiest_target", digits_cnn, {"easiest_target": fn})


# Exercise 6: predict, then run. The check cell (the one that builds `measured`) compares the two
# predictions with the directions of the run; it is exec'd here on planted measurements.

def cell_with(marker: str) -> str:
    return next(s for s in LESSON.cells() if marker in s)


RUN = {"success": {0.03: 0.408, 10.0: 1.0}, "l2_on_both": {0.03: 0.312, 10.0: 0.548}}  # the stored run
RIGHT = {"success_with_large_c": "higher", "distortion_with_large_c": "larger"}


def run_prediction_check(predictions: dict, experiment: dict) -> None:
    LESSON.run(cell_with("measured = {"), {**predictions, "c_experiment": experiment})


def test_the_solution_predictions_are_the_stored_ones():
    solution = LESSON.run(LESSON.exercise("success_with_large_c = ", solution=True)[0], {})
    assert {k: solution[k] for k in RIGHT} == RIGHT
    run_prediction_check(RIGHT, RUN)


WRONG_PREDICTIONS = {
    "success lower": {"success_with_large_c": "lower"},
    "success the same": {"success_with_large_c": "same"},
    "distortion smaller": {"distortion_with_large_c": "smaller"},
    "distortion the same": {"distortion_with_large_c": "same"},
    "both reversed": {"success_with_large_c": "lower", "distortion_with_large_c": "smaller"},
    "not one of the words": {"success_with_large_c": "up"},
    "capitalised": {"distortion_with_large_c": "Larger"},
}


@pytest.mark.parametrize("wrong", WRONG_PREDICTIONS.values(), ids=list(WRONG_PREDICTIONS))
def test_a_wrong_prediction_fails(wrong):
    with pytest.raises(AssertionError):
        run_prediction_check({**RIGHT, **wrong}, RUN)


def test_the_prediction_check_reads_the_run():
    """On runs with other outcomes the stored predictions are wrong and the matching ones pass."""
    reversed_run = {"success": {0.03: 1.0, 10.0: 0.4}, "l2_on_both": {0.03: 0.55, 10.0: 0.31}}
    with pytest.raises(AssertionError):
        run_prediction_check(RIGHT, reversed_run)
    run_prediction_check({"success_with_large_c": "lower", "distortion_with_large_c": "smaller"},
                         reversed_run)
    # changes within the check's dead band (0.05 in success, 5 % in distortion) count as none
    flat_run = {"success": {0.03: 0.95, 10.0: 0.99}, "l2_on_both": {0.03: 0.5, 10.0: 0.51}}
    with pytest.raises(AssertionError):
        run_prediction_check(RIGHT, flat_run)
    run_prediction_check({"success_with_large_c": "same", "distortion_with_large_c": "same"}, flat_run)


def test_the_experiment_confirms_the_solution(digits_cnn):
    """The lesson's experiment cell, run for real on the first 100 test digits, then its check."""
    ns = dict(digits_cnn, N_EVAL=100)
    ns["correct"] = digits_cnn["train"].predict(ns["cnn"], ns["x_test"]).argmax(1) == ns["y_test"]
    LESSON.run(LESSON.exercise("success_with_large_c = ", solution=True)[0], ns)
    LESSON.run(cell_with("c_experiment = {"), ns)
    LESSON.run(cell_with("measured = {"), ns)
    s = ns["c_experiment"]["success"]
    assert s[10.0] - s[0.03] >= 0.3, "the effect is far beyond the dead band of the check"
