"""The presenter's dashboard (course/dashboard.ipynb, `make dashboard`): it runs headless in seconds,
builds its three widgets from the zoo, and its attack explorer's first digit falls one ε step up."""

import importlib.util
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "course" / "dashboard.ipynb"
spec = importlib.util.spec_from_file_location("course_run", ROOT / "course" / "run.py")
course_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_run)

CHECK = """
import json
boxes = {"epsilon": epsilon, "explorer": explorer, "smoothing": smoothing}
before = dict(explorer.state), verdict.value
explorer.eps.value = round(explorer.eps.value + explorer.eps.step, 3)   # what one arrow key does
print(json.dumps({"widgets": {k: type(v).__name__ for k, v in boxes.items()},
                  "epsilon": epsilon.state["fooled"], "smoothing": smoothing.state["sigma"],
                  "before": before, "after": [explorer.state, verdict.value]}, default=str))
"""


def test_dashboard_runs_headless_and_builds_three_widgets(tmp_path):
    nb = nbformat.read(DASHBOARD, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "store the dashboard without outputs: Voilà runs it afresh"
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    course_run.no_output_sync()  # else a widget's cell can wait out the timeout (nbclient#312)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(DASHBOARD.parent)}}).execute()
    got = json.loads(nb.cells[-1].outputs[-1]["text"])
    assert got["widgets"] == {"epsilon": "VBox", "explorer": "VBox", "smoothing": "VBox"}
    assert got["smoothing"] == 0.25
    (state, verdict), (after, verdict_after) = got["before"], got["after"]
    assert state["eps"] == 0.08 and state["pred_adv"] == state["label"] == 7, state
    assert after["fooled"] and after["pred_adv"] != 7, after
    assert "clean 7 → adversarial 7, holds" in verdict and "fooled" in verdict_after, (verdict, verdict_after)
