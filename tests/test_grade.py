"""The autograder (course/grade.py): full marks for the solutions, none for the blank student copy,
exactly the solved exercises for a partly done copy, and a planted wrong answer loses its marks."""

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(f"course_{name}", ROOT / "course" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


grade, student = load("grade"), load("student")


def lesson(path: Path) -> Path:
    """A two-exercise lesson in the course's shape: parameters, exercises, checks, more lesson."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("FAST = False\nN = 10")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A lesson"), params,
        nbformat.v4.new_code_cell("data = list(range(N if FAST else 1000))"),
        nbformat.v4.new_markdown_cell("### Exercise 1 — the sum\n\nWrite `total(xs)`."),
        nbformat.v4.new_code_cell("def total(xs):\n    ### BEGIN SOLUTION\n    return sum(xs)\n"
                                  "    ### END SOLUTION"),
        nbformat.v4.new_code_cell("assert total(data) == len(data) * (len(data) - 1) // 2\nprint('ok')"),
        nbformat.v4.new_markdown_cell("### Exercise 2 — predict\n\nSet `answer`."),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\nanswer = 'small'\n### END SOLUTION"),
        nbformat.v4.new_code_cell("assert FAST and len(data) == N, 'the grader runs the quick mode'"),
        nbformat.v4.new_code_cell("assert answer == 'small'"),
        nbformat.v4.new_markdown_cell("## Next section"),
        nbformat.v4.new_code_cell("print('the lesson goes on')"),
    ]
    nbformat.write(nb, str(path))
    return path


def write(nb, path: Path) -> Path:
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def toy(tmp_path):
    return lesson(tmp_path / "toy.ipynb")


def marks(report) -> list[int]:
    return [m.earned for m in report.marks]


def test_exercises_are_found_with_their_checks(toy):
    found = grade.exercises(nbformat.read(str(toy), as_version=4))
    assert [(e.name, e.solution, e.checks) for e in found] == [
        ("Exercise 1: the sum", [4], [5]), ("Exercise 2: predict", [7], [8, 9])]


def test_the_solutions_score_full_marks_and_the_blank_copy_none(toy, tmp_path):
    full = grade.grade(toy, toy)
    assert marks(full) == [1, 1] and (full.total, full.possible) == (2, 2)
    blank = write(student.student_copy(nbformat.read(str(toy), as_version=4)), tmp_path / "s.ipynb")
    report = grade.grade(blank, toy)
    assert marks(report) == [0, 0]
    assert "NotImplementedError" in report.marks[0].error


def test_one_solved_exercise_earns_exactly_its_marks(toy, tmp_path):
    nb = student.student_copy(nbformat.read(str(toy), as_version=4))
    nb.cells[7].source = "answer = 'small'"
    assert marks(grade.grade(write(nb, tmp_path / "s.ipynb"), toy)) == [0, 1]


def test_a_wrong_answer_loses_that_exercise(toy, tmp_path):
    nb = nbformat.read(str(toy), as_version=4)
    nb.cells[4].source = "def total(xs):\n    return sum(xs) + 1"
    report = grade.grade(write(nb, tmp_path / "s.ipynb"), toy)
    assert marks(report) == [0, 1] and "AssertionError" in report.marks[0].error
    assert "0/1" in report.table() and "**1/2**" in report.table()


def test_a_copy_with_other_cells_is_refused(toy, tmp_path):
    nb = nbformat.read(str(toy), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    with pytest.raises(ValueError, match="cells do not match"):
        grade.grade(write(nb, tmp_path / "s.ipynb"), toy)


def test_command_line_writes_a_table_and_json(toy, tmp_path, capsys):
    out = tmp_path / "marks.json"
    assert grade.main([str(toy), "--lesson", str(toy), "--json", str(out)]) == 0
    assert "| **total** | **2/2** | |" in capsys.readouterr().out
    assert json.loads(out.read_text())["total"] == 2
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path / "absent.ipynb"), "--lesson", str(toy)])


def test_every_lesson_exercise_has_a_check():
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        found = grade.exercises(nbformat.read(str(path), as_version=4))
        assert found and all(e.checks for e in found), path.name


def test_a_real_lesson_full_and_blank(tmp_path):
    path = ROOT / "lessons" / "00-start-here.ipynb"
    assert grade.grade(path, path).total == len(grade.exercises(nbformat.read(str(path), as_version=4)))
    blank = write(student.student_copy(nbformat.read(str(path), as_version=4)), tmp_path / path.name)
    assert grade.grade(blank, path).total == 0


def _lab_plan() -> dict[str, str]:
    """Lesson number ("02a") -> the lab plan's "graded exercises" cell of its week (course/README.md)."""
    text = (ROOT / "course" / "README.md").read_text()
    plan = text[text.index("## A multi-week lab"):]
    rows = [line.split("|")[1:-1] for line in plan.splitlines()
            if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0]]
    graded = header.index("graded exercises (points)")
    cells: dict[str, str] = {}
    for row in rows[1:]:
        for part in row[graded].split("·"):
            if ":" in part:
                lesson, points = part.split(":")
                cells[lesson.strip()] = points.strip()
    return cells


def test_lab_plan_grades_every_exercise_of_every_lesson():
    """The lab plan gives each lesson the points `make grade` can award: one per exercise found."""
    plan = _lab_plan()
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        number = path.stem.split("-")[0]
        found = len(grade.exercises(nbformat.read(str(path), as_version=4)))
        assert plan.get(number) == str(found), \
            f"the lab plan gives {number} {plan.get(number)} points; the lesson has {found} exercises"


def test_instructor_notes_have_a_section_per_lesson():
    notes = (ROOT / "course" / "instructor-notes.md").read_text()
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        number = path.stem.split("-")[0]
        heading = next((line for line in notes.splitlines() if line.startswith(f"## {number} ·")), None)
        assert heading is not None, f"no instructor notes for {path.stem}"
        assert "coming" not in heading, f"{path.stem} exists: its notes must not say coming"
