"""A stored lesson's code cells, run outside the notebook: the exercise-check tests
(tests/test_lesson*.py) run each check cell with the lesson's solution and with planted wrong
answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"


class Lesson:
    def __init__(self, name: str):
        self.path = LESSONS / name

    def cells(self) -> list[str]:
        """The sources of the lesson's code cells, in order."""
        nb = json.loads(self.path.read_text())
        return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]

    def exercise(self, marker: str, *, solution: bool = False) -> tuple[str, str]:
        """The first code cell holding `marker` (and a solution region, with `solution`) and the
        check cell that follows it."""
        cells = self.cells()
        i = next(k for k, s in enumerate(cells)
                 if marker in s and (not solution or "### BEGIN SOLUTION" in s))
        return cells[i], cells[i + 1]

    def run(self, source: str, namespace: dict) -> dict:
        """Execute `source` in `namespace` (tracebacks name the lesson); return the namespace."""
        exec(compile(source, str(self.path), "exec"), namespace)
        return namespace

    def check(self, marker: str, inputs: dict, answers: dict | None = None) -> None:
        """Run exercise `marker`'s solution on `inputs`, replace its answers by `answers` (if
        any), then run its check cell."""
        solution, check = self.exercise(marker, solution=True)
        namespace = self.run(solution, dict(inputs))
        namespace.update(answers or {})
        self.run(check, namespace)


def cell_starting(cells: list[str], head: str) -> str:
    """The one code cell whose source starts with `head`."""
    found = [s for s in cells if s.lstrip().startswith(head)]
    assert len(found) == 1, f"one code cell starts with {head!r}, found {len(found)}"
    return found[0]


def cell_after(cells: list[str], head: str) -> str:
    """The check: the code cell right after the one that starts with `head`."""
    return cells[cells.index(cell_starting(cells, head)) + 1]


def planted(solution: str, replacements: list[tuple[str, str]]) -> str:
    """The solution with a mistake planted: each (old, new) replaced, each old present."""
    for old, new in replacements:
        assert old in solution, f"the solution no longer contains {old!r}"
        solution = solution.replace(old, new)
    return solution


def written_exercise_tests(lesson: Lesson, written: dict, errors=(AssertionError,)):
    """The two tests of exercises whose solution cell starts with a head of `written` (head ->
    {mistake name: replacements}): each solution passes its check cell, and each planted mistake
    makes the check raise one of `errors`. A test module binds both names, e.g.
    ``test_exercises_accept_the_solution, test_exercises_reject_planted_mistakes = ...``; they read
    its `cells` and `lesson_state` fixtures."""

    @pytest.mark.parametrize("head", sorted(written))
    def test_exercises_accept_the_solution(cells, lesson_state, head):
        ns = dict(lesson_state)
        lesson.run(cell_starting(cells, head), ns)
        lesson.run(cell_after(cells, head), ns)

    @pytest.mark.parametrize("head, mistake", [(h, m) for h in sorted(written) for m in sorted(written[h])])
    def test_exercises_reject_planted_mistakes(cells, lesson_state, head, mistake):
        ns = dict(lesson_state)
        lesson.run(planted(cell_starting(cells, head), written[head][mistake]), ns)
        with pytest.raises(errors):
            lesson.run(cell_after(cells, head), ns)

    return test_exercises_accept_the_solution, test_exercises_reject_planted_mistakes
