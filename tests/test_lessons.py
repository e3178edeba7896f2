"""The lessons: stored notebooks are clean, and each runs in fast mode (papermill).

The stored outputs themselves are re-checked by nbval (``--nbval-lax``, configured in
pyproject.toml), which re-runs each notebook and compares the cells marked NBVAL_CHECK_OUTPUT.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
FIGURES_MIME = "application/vnd.robustlab.figures+json"


def test_there_are_lessons():
    names = [p.name for p in LESSONS]
    assert "00-start-here.ipynb" in names and "01-introduction.ipynb" in names


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_stored_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    assert path.stat().st_size < 2_000_000, "notebook over 2 MB"
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c.get("execution_count") is not None for c in code), "unexecuted code cell"
    assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    tags = [t for c in cells for t in c.get("metadata", {}).get("tags", [])]
    assert "parameters" in tags
    src = ["".join(c["source"]) for c in code]
    params = next(s for c, s in zip(code, src) if "parameters" in c["metadata"].get("tags", []))
    assert re.search(r"^FAST\s*=\s*False", params, re.M), "stored notebooks keep the full mode"
    begins = sum(s.count("### BEGIN SOLUTION") for s in src)
    assert begins == sum(s.count("### END SOLUTION") for s in src)
    if path.stem != "00-start-here":
        assert begins >= 1, "every lesson has exercises with solution regions"
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in code for o in c.get("outputs", [])), "no interactive widget"
    assert any(len(s.splitlines()) > 0 for s in src)
    assert max(len(s.splitlines()) for s in src) <= 40, "a code cell longer than a screen"


@pytest.mark.lessons
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_fast_mode(path, tmp_path):
    import papermill as pm

    out = tmp_path / path.name
    nb = pm.execute_notebook(str(path), str(out), parameters={"FAST": True},
                             cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if path.stem != "00-start-here":
        figures = [o["data"][FIGURES_MIME] for c in nb.cells for o in c.get("outputs", [])
                   if FIGURES_MIME in o.get("data", {})]
        assert figures, "the lesson reports its key figures with robustlab.report"
