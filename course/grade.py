"""Grade a student's copy of a lesson: run it, and report a mark per exercise (`make grade`).

An exercise is a cell of the instructor's lesson with a ``### BEGIN SOLUTION`` region (the cell
`course/student.py` stubs out) and the code cells after it, up to the next heading or the next
exercise: those are its checks, which the student copy keeps. The student's notebook runs top to
bottom in the quick mode (``FAST = True``, papermill-style parameters) with errors allowed, so one
unsolved exercise does not stop the others from being graded. An exercise earns its marks when its
own cells and all its checks run without error.

Why not nbgrader or otter-grader: both grade from their own cell metadata (nbgrader's
``grade_id``/``points``, otter's ``# BEGIN QUESTION`` blocks and test files), which the lessons do
not carry; the lessons' checks are plain cells with ``assert``, so the exercises are found from
the solution markers that `course/student.py` already uses.

    python course/grade.py build/student/01-introduction.ipynb --lesson lessons/01-introduction.ipynb
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

# the course runner's fix for nbclient's Output-widget stall, loaded as slides.py loads site.py
_spec = importlib.util.spec_from_file_location("course_run", Path(__file__).resolve().parent / "run.py")
_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_run)

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = "### BEGIN SOLUTION"
EXERCISE = re.compile(r"Exercise\s+(\d+)\s*[—:.-]*\s*([^\n*]*)")


@dataclass
class Exercise:
    """One exercise: its name and the cells (indices in the lesson) that must run cleanly."""

    name: str
    solution: list[int]
    checks: list[int]
    points: int = 1


@dataclass
class Mark:
    name: str
    points: int
    earned: int
    error: str = ""


@dataclass
class Report:
    lesson: str
    marks: list[Mark] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(m.earned for m in self.marks)

    @property
    def possible(self) -> int:
        return sum(m.points for m in self.marks)

    def table(self) -> str:
        rows = ["| exercise | marks | note |", "|---|---|---|"]
        rows += [f"| {m.name} | {m.earned}/{m.points} | {m.error} |" for m in self.marks]
        rows.append(f"| **total** | **{self.total}/{self.possible}** | |")
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"lesson": self.lesson, "total": self.total, "possible": self.possible,
                "marks": [asdict(m) for m in self.marks]}


def _heading(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.lstrip().startswith("#")


def _name(nb, index: int, number: int) -> str:
    """The exercise's title from the markdown above its solution cell, else "Exercise <number>"."""
    for cell in reversed(nb.cells[:index]):
        if cell.cell_type == "markdown":
            found = EXERCISE.findall(cell.source)
            if found:
                n, title = found[-1]
                return f"Exercise {n}" + (f": {title.strip()}" if title.strip() else "")
            if _heading(cell):
                break
    return f"Exercise {number}"


def exercises(lesson) -> list[Exercise]:
    """The exercises of an instructor's lesson, in order, each with its solution and check cells."""
    found: list[Exercise] = []
    cells = lesson.cells
    starts = [i for i, c in enumerate(cells) if c.cell_type == "code" and SOLUTION in c.source]
    for number, start in enumerate(starts, start=1):
        checks = []
        for j in range(start + 1, len(cells)):
            if _heading(cells[j]) or j in starts:
                break
            if cells[j].cell_type == "code" and cells[j].source.strip():
                checks.append(j)
        if not checks:
            raise ValueError(f"exercise cell {start} of the lesson has no check cell after it")
        found.append(Exercise(_name(lesson, start, number), [start], checks))
    return found


def quick_mode(nb, parameters: dict) -> None:
    """Set the lesson's parameters (FAST = True, ...) in its `parameters` cell, in place."""
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            lines = [f"{k} = {v!r}" for k, v in parameters.items()]
            cell.source = cell.source + "\n" + "\n".join(lines)
            return
    raise ValueError("the notebook has no cell tagged 'parameters'")


def _error(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out['ename']}: {out['evalue']}"[:200]
    return ""


def grade(student_path: Path, lesson_path: Path, *, timeout: int = 600,
          parameters: dict | None = None) -> Report:
    """Run the student's notebook and mark each exercise of the lesson.

    The student copy must have the lesson's cells in the lesson's order (it is the lesson with
    solutions replaced); a copy with cells added or removed is refused with an error saying so.
    """
    from nbclient import NotebookClient

    lesson = nbformat.read(str(lesson_path), as_version=4)
    student = nbformat.read(str(student_path), as_version=4)
    if len(student.cells) != len(lesson.cells) or any(
            s.cell_type != c.cell_type for s, c in zip(student.cells, lesson.cells)):
        raise ValueError(f"{student_path.name}: its cells do not match {lesson_path.name}'s "
                         "(cells added, removed or retyped); grade a copy made by course/student.py")
    quick_mode(student, {"FAST": True, **(parameters or {})})
    _run.no_output_sync()  # else a cell with a widget can wait out `timeout` (nbclient#312)
    client = NotebookClient(student, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "lessons")}})
    client.execute()
    report = Report(lesson_path.stem)
    for ex in exercises(lesson):
        errors = [_error(student.cells[i]) for i in ex.solution + ex.checks]
        error = next((e for e in errors if e), "")
        report.marks.append(Mark(ex.name, ex.points, 0 if error else ex.points, error))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", type=Path, help="the student's notebook")
    ap.add_argument("--lesson", type=Path, help="the instructor's lesson (default: lessons/<same name>)")
    ap.add_argument("--json", type=Path, help="also write the marks as JSON to this file")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    lesson = args.lesson or ROOT / "lessons" / args.student.name
    for path, what in ((args.student, "student"), (lesson, "--lesson")):
        if not path.is_file():
            ap.error(f"{what}: no file {path}")
    try:
        report = grade(args.student, lesson, timeout=args.timeout)
    except ValueError as e:
        ap.error(str(e))
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
