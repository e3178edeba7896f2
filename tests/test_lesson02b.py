"""Lesson 02b's transfer-matrix exercise: its check rejects wrong answers and accepts the solution.

The check cell of exercise 4 runs here, outside the notebook, on transfer matrices with the zoo's
three models: once with the lesson's own solution on a matrix where it is right (it must pass),
and with planted wrong answers or a matrix where the solution is wrong (it must fail with an
AssertionError), so a check that cannot fail is caught.
"""

import pytest
import torch

from robustlab.evaluate import TransferResult

from .lesson_cells import Lesson

LESSON = Lesson("02b-spatial-universal.ipynb")
NAMES = ["digits-cnn", "digits-mlp", "digits-resnet"]
# rows: source; columns: target. The stored run's shape: resnet hardest from the CNN, the MLP
# the best source for it.
STORED = [[0.995, 0.687, 0.596], [0.765, 0.995, 0.621], [0.617, 0.605, 0.995]]


def matrix(rate) -> TransferResult:
    n = len(rate)
    return TransferResult(list(NAMES), [list(r) for r in rate], torch.zeros(n, n, 1, dtype=torch.bool),
                          torch.ones(n, 1, dtype=torch.bool), "pgd")


def run_check(answers: dict | None, transfer: TransferResult) -> None:
    LESSON.check("hardest_from_cnn = ", {"transfer": transfer}, answers)


def test_the_solution_passes():
    run_check(None, matrix(STORED))


WRONG = {
    "hardest: the easiest target": {"hardest_from_cnn": "digits-mlp"},
    "hardest: the source itself": {"hardest_from_cnn": "digits-cnn"},
    "hardest: not a zoo name": {"hardest_from_cnn": "resnet"},
    "best source: the weaker one": {"best_source_for_cnn": "digits-resnet"},
    "best source: the CNN itself": {"best_source_for_cnn": "digits-cnn"},
}


@pytest.mark.parametrize("answers", WRONG.values(), ids=list(WRONG))
def test_a_wrong_answer_fails(answers):
    with pytest.raises(AssertionError):
        run_check(answers, matrix(STORED))


@pytest.mark.parametrize("swap", ["row", "column"])
def test_the_check_reads_the_matrix_not_a_fixed_answer(swap):
    """On a matrix whose row (or column) of the CNN is swapped, the stored solution is wrong."""
    rate = [list(r) for r in STORED]
    if swap == "row":
        rate[0][1], rate[0][2] = rate[0][2], rate[0][1]
    else:
        rate[1][0], rate[2][0] = rate[2][0], rate[1][0]
    with pytest.raises(AssertionError):
        run_check(None, matrix(rate))
