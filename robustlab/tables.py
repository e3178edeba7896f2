"""One way to print results: markdown tables, for result objects, the command line and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], *, digits: int = 4,
                   decimals: int | Sequence[int | None] | None = None) -> str:
    """A markdown table; NaN and None print as '-'.

    Floats get `digits` significant digits, or a fixed number of `decimals`: one int for every
    column, or one entry per column (None there keeps significant digits). Fixed decimals keep
    a printed table the same on every machine once the numbers agree to that rounding.
    """
    per_column = decimals if isinstance(decimals, Sequence) else [decimals] * len(headers)
    if len(per_column) != len(headers):
        raise ValueError(f"decimals has {len(per_column)} entries for {len(headers)} columns")

    def cell(v, places) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if not isinstance(v, float):
            return str(v)
        return f"{v:.{digits}g}" if places is None else f"{v:.{places}f}"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v, p) for v, p in zip(row, per_column)) + " |" for row in rows]
    return "\n".join(lines)


def timing_table(names: Sequence[str], seconds: Sequence[float], *, what: str = "attack") -> str:
    """Wall-clock seconds per row, kept apart from result tables: timings differ on every
    machine and every run, the results need not."""
    return markdown_table([what, "seconds"], list(zip(names, seconds)), decimals=[None, 2])


class Tabular:
    """A result object that prints as its ``table()`` (defined by the subclass), in a terminal
    and in a notebook."""

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:
        return self.table()


def read_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first markdown table in `text` (as `markdown_table` writes them), each a
    dict from the header's names to the cells' text, stripped."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines[:-1]) if ln.startswith("|")
                  and set(lines[i + 1].replace("|", "").strip()) <= set("-: ")
                  and lines[i + 1].startswith("|")), None)
    if start is None:
        raise ValueError("no markdown table in text")

    def cells(ln: str) -> list[str]:
        return [c.strip() for c in ln.strip("|").split("|")]

    head, rows = cells(lines[start]), []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, cells(ln))))
    return rows


def stored_result(name: str) -> str:
    """The text of a result the project stores with the package (``robustlab/results/<name>.md``).

    Long runs a lesson reads instead of repeating, e.g. ``"defence_methods"``: the every-method
    table of ``benchmarks/defence_methods.py``. Shipped in the package, so a lesson finds it from
    any working directory, on Colab, and after ``pip install``.
    """
    from importlib import resources

    folder = resources.files("robustlab") / "results"
    available = sorted(p.name.removesuffix(".md") for p in folder.iterdir() if p.name.endswith(".md"))
    if name not in available:
        raise ValueError(f"name: no stored result {name!r}; stored: {', '.join(available)}")
    return (folder / f"{name}.md").read_text(encoding="utf-8")
