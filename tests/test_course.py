"""The course runner behind `make course`."""

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("course_run", ROOT / "course" / "run.py")
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_runner_reports_figures_and_failing_cell(tmp_path):
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    nbformat.write(notebook("FAST = False", "import robustlab\nrobustlab.report(acc=0.98765, fast=FAST)"),
                   good)
    nbformat.write(notebook("FAST = False", "x = 1", "raise ValueError('boom')", "y = 2"), bad)
    out = tmp_path / "build"
    out.mkdir()
    row = run.run_lesson(good, out, fast=True, inplace=False)
    assert row["status"] == "ok" and row["figures"] == {"acc": 0.9877, "fast": True}
    assert (out / "good.html").exists() and (out / "good.ipynb").exists()
    row = run.run_lesson(bad, out, fast=True, inplace=False)
    assert row["status"] == "FAILED" and "ValueError: boom" in row["error"]
    assert "cell" in row["error"]
    table = run.table([row])
    assert "| bad | FAILED |" in table
