"""Lesson 02a's C&W exercise: its check rejects wrong answers and accepts the solution.

The check cell of exercise 4 runs here, outside the notebook, on C&W statistics shaped like those
of section 5: once with the lesson's own solution where it is right (it must pass), and with
planted wrong answers or statistics where the solution is wrong (it must fail with an
AssertionError), so a check that cannot fail is caught.
"""

import pytest

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
