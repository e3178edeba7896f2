"""Make student copies of the lessons: solutions removed, outputs cleared (`make student`).

Code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers) is replaced by
nbgrader's stub, at the indentation of the ``### BEGIN SOLUTION`` line::

    # YOUR CODE HERE
    raise NotImplementedError()

so a solution that was a whole function body leaves a valid function, and running an exercise
that has not been done yet stops with a clear NotImplementedError rather than a SyntaxError or a
NameError further down. Every stripped code cell must still parse; a copy that would not is
refused with an error naming the lesson cell. The check cell after each exercise stays, so
students see their answer pass or fail. Writes build/student/*.ipynb.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$",
                      re.M | re.S)
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")  # nbgrader's default code stub


def strip_solutions(source: str) -> str:
    """Replace each solution region of a cell's source by nbgrader's stub, at the region's indentation."""
    out = SOLUTION.sub(lambda m: "\n".join(m.group(1) + line for line in STUB), source)
    if "### BEGIN SOLUTION" in out or "### END SOLUTION" in out:
        raise ValueError("unbalanced ### BEGIN SOLUTION / ### END SOLUTION markers")
    return out


def student_copy(nb, name: str = "notebook"):
    """A copy of notebook `nb` with solutions stripped and every output cleared.

    Raises ValueError naming `name` and the cell (0-based index) when a code cell's solution
    markers are unbalanced, or when a stripped code cell no longer parses as Python: students
    would get a SyntaxError instead of the exercise.
    """
    nb = nbformat.from_dict(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            try:
                stripped = strip_solutions(cell.source)
            except ValueError as e:  # the author needs to know which cell to fix
                raise ValueError(f"{name} cell {index}: {e}") from e
            if stripped != cell.source:
                try:
                    ast.parse(python_source(stripped))
                except SyntaxError as e:
                    raise ValueError(f"{name} cell {index}: the student copy of this exercise cell "
                                     f"does not parse (line {e.lineno}: {e.msg}); put the "
                                     f"### BEGIN SOLUTION / ### END SOLUTION markers around "
                                     f"whole statements") from e
            cell.source = stripped
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def solution_cells(nb) -> list[int]:
    """Indices of the code cells of an instructor's notebook that hold a solution region."""
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]


def python_source(source: str) -> str:
    """A cell's source as the kernel runs it: IPython syntax (%magic, !shell) turned into Python."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: check the source as plain Python
        return source
    return TransformerManager().transform_cell(source)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "student"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        lesson = nbformat.read(str(path), as_version=4)
        nbformat.write(student_copy(lesson, name=path.name), str(out / path.name))
        print(f"{path.name}: {len(solution_cells(lesson))} exercise cell(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
