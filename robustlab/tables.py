"""One way to print results: markdown tables, for result objects, the command line and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], *, digits: int = 4) -> str:
    """A markdown table; floats get `digits` significant digits, NaN and None print as '-'."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Tabular:
    """A result object that prints as its ``table()`` (defined by the subclass), in a terminal
    and in a notebook."""

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:
        return self.table()
