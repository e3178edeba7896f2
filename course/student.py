"""Make student copies of the lessons: solutions removed, outputs cleared (`make student`).

Code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers) is replaced
by a ``# YOUR CODE HERE`` line at the same indentation; the check cell after each exercise
stays, so students see their answer pass or fail. Writes build/student/*.ipynb.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$",
                      re.M | re.S)


def strip_solutions(source: str) -> str:
    """Replace each solution region of a cell's source by a placeholder comment."""
    out = SOLUTION.sub(lambda m: f"{m.group(1)}# YOUR CODE HERE", source)
    if "### BEGIN SOLUTION" in out or "### END SOLUTION" in out:
        raise ValueError("unbalanced ### BEGIN SOLUTION / ### END SOLUTION markers")
    return out


def student_copy(nb):
    """A copy of notebook `nb` with solutions stripped and every output cleared."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "student"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        nb = student_copy(nbformat.read(str(path), as_version=4))
        nbformat.write(nb, str(out / path.name))
        print(f"{path.name}: {sum('# YOUR CODE HERE' in c.source for c in nb.cells)} exercise cell(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
