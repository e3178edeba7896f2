"""The course runner behind `make course`."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

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


def test_runner_fails_a_cell_that_times_out(tmp_path):
    slow = tmp_path / "slow.ipynb"
    nbformat.write(notebook("FAST = False", "x = 1", "import time\ntime.sleep(60)", "y = 2"), slow)
    out = tmp_path / "build"
    out.mkdir()
    row = run.run_lesson(slow, out, fast=True, inplace=False, timeout=2)
    assert row["status"] == "FAILED" and row["seconds"] < 50
    # index 3: papermill's injected-parameters cell comes after the parameters cell
    assert row["error"] == "cell index 3 ('import time') timed out after 2 s (--timeout)"
    assert "| slow | FAILED |" in run.table([row])


def test_a_cell_that_hangs_once_is_run_again(tmp_path):
    """nbclient can lose a kernel reply and wait forever (jupyter/nbclient#312): execute()
    reruns a lesson whose cell timed out, once; the first run here hangs, the second does not."""
    marker = tmp_path / "first-run-done"
    flaky = tmp_path / "flaky.ipynb"
    nbformat.write(notebook("FAST = False", f"import pathlib, time\nm = pathlib.Path({str(marker)!r})\n"
                            "if not m.exists():\n    m.touch()\n    time.sleep(60)\nprint('ran')"), flaky)
    nb = run.execute(flaky, tmp_path / "out.ipynb", {"FAST": True}, timeout=3)
    assert nb.cells[-1].outputs[0]["text"] == "ran\n"


def test_output_widgets_are_stored_without_an_echo_to_the_kernel(tmp_path):
    """nbclient echoed each output a cell displays into an ipywidgets.Output back to the kernel,
    on the shell channel where it was awaiting the cell's reply; now and then that reply was then
    missed until the timeout ran out (jupyter/nbclient#312: 3 of 4 runs of 02d's audio widget
    waited 20 s of 20, one full run of 02d 600 s). After execute(), the client's Output-widget
    mimic stores outputs in the widget state and sends nothing; a real run still stores them."""
    import nbclient.client
    from nbformat.v4 import new_output

    lesson = tmp_path / "widgets.ipynb"
    nbformat.write(notebook("FAST = False", "import ipywidgets as W\nfrom IPython.display import HTML, "
                            "display\nout = W.Output()\nwith out:\n    display(HTML('<p>shown</p>'))\nout"),
                   lesson)
    nb = run.execute(lesson, tmp_path / "out.ipynb", {"FAST": True}, timeout=20)
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    stored = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert [[o["data"]["text/html"] for o in outs] for outs in stored] == [["<p>shown</p>"]]

    sent = []

    class Channel:
        def send(self, msg):
            sent.append(msg)

    class Session:
        def msg(self, msg_type, **parts):
            return {"msg_type": msg_type, **parts}

    class Client:
        shell_channel, session = Channel(), Session()

    class Executor:
        widget_state = {"c1": {"outputs": []}}

    widget = nbclient.client.OutputWidget("c1", {"outputs": []}, Client(), Executor())
    display = new_output("display_data", data={"text/plain": "x"})
    msg = {"header": {"msg_type": "display_data"}, "parent_header": {"msg_id": "m"},
           "content": {"data": display.data, "metadata": {}}}
    widget.output([], msg, None, 0)
    widget.clear_output([], {"parent_header": {}, "content": {}}, 0)
    assert sent == [] and Executor.widget_state["c1"]["outputs"] == []
    widget.output([], msg, None, 0)
    assert [o["data"] for o in Executor.widget_state["c1"]["outputs"]] == [{"text/plain": "x"}]


def test_runner_timeout_option(capsys):
    for bad in ("0", "-5", "1.5", "soon"):
        with pytest.raises(SystemExit) as exit_info:
            run.main(["--timeout", bad, "--only", "no-such-lesson"])
        assert exit_info.value.code == 2
        assert f"--timeout must be a whole number of seconds > 0, got '{bad}'" in capsys.readouterr().err
    assert run.positive_seconds("30") == 30


# issue 15: --seed -1 was accepted and failed deep in a lesson cell (numpy takes [0, 2**32))
def test_runner_seed_option(capsys):
    for bad in ("-1", str(2**32), "1.5", "one"):
        with pytest.raises(SystemExit) as exit_info:
            run.main(["--seed", bad, "--only", "no-such-lesson"])
        assert exit_info.value.code == 2
        assert f"--seed must be a whole number from 0 to 2**32 - 1, got '{bad}'" in capsys.readouterr().err
    assert run.seed_value("0") == 0 and run.seed_value(str(2**32 - 1)) == 2**32 - 1


spec_s = importlib.util.spec_from_file_location("course_student", ROOT / "course" / "student.py")
student = importlib.util.module_from_spec(spec_s)
spec_s.loader.exec_module(student)


def test_student_copy_strips_solutions_and_outputs():
    nb = notebook("FAST = False",
                  "def f(x):\n    ### BEGIN SOLUTION\n    y = x * 2\n    return y\n    ### END SOLUTION\n",
                  "assert f(2) == 4")
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[1].execution_count = 3
    copy = student.student_copy(nb)
    # nbgrader's stub at the indentation of the BEGIN marker: the function stays valid
    assert copy.cells[1].source == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert copy.cells[1].outputs == [] and copy.cells[1].execution_count is None
    assert copy.cells[2].source == "assert f(2) == 4"
    assert "y = x * 2" in nb.cells[1].source  # the instructor's notebook is untouched


def test_stripped_function_bodies_are_valid_and_raise_not_implemented():
    method = ("import math\n\nclass Straight:\n    def forward(self, x):\n"
              "        ### BEGIN SOLUTION\n        return x + 1\n        ### END SOLUTION\n\n"
              "def norms(d):\n    ### BEGIN SOLUTION\n    a = 1\n    ### END SOLUTION\n    return a\n")
    out = student.strip_solutions(method)
    assert out == ("import math\n\nclass Straight:\n    def forward(self, x):\n"
                   "        # YOUR CODE HERE\n        raise NotImplementedError()\n\n"
                   "def norms(d):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n    return a\n")
    namespace = {}
    exec(compile(out, "<student>", "exec"), namespace)  # defining the functions works
    with pytest.raises(NotImplementedError):
        namespace["Straight"]().forward(1)
    with pytest.raises(NotImplementedError):
        namespace["norms"](0)
    # a top-level region: the cell itself stops at the stub, before any line that would need it
    top = "x = 2\n### BEGIN SOLUTION\ny = x * 2\n### END SOLUTION\nprint(y)"
    assert student.strip_solutions(top) == "x = 2\n# YOUR CODE HERE\nraise NotImplementedError()\nprint(y)"
    with pytest.raises(NotImplementedError):
        exec(compile(student.strip_solutions(top), "<student>", "exec"), {})


def test_student_copy_rejects_a_cell_that_would_not_parse():
    nb = notebook("FAST = False", "x = 1", "values = [\n    ### BEGIN SOLUTION\n    1, 2,\n"
                                           "    ### END SOLUTION\n]")
    with pytest.raises(ValueError, match=r"lesson\.ipynb cell 2: .*does not parse"):
        student.student_copy(nb, name="lesson.ipynb")


def test_student_copy_rejects_unbalanced_markers():
    with pytest.raises(ValueError, match="unbalanced"):
        student.strip_solutions("### BEGIN SOLUTION\nx = 1\n")
    # issue 15: the error named neither the notebook nor the cell
    nb = notebook("FAST = False", "x = 1", "### BEGIN SOLUTION\ny = 2\n")
    with pytest.raises(ValueError, match=r"lesson\.ipynb cell 2: unbalanced ### BEGIN SOLUTION / "
                                         r"### END SOLUTION markers"):
        student.student_copy(nb, name="lesson.ipynb")


LESSON_PATHS = sorted((ROOT / "lessons").glob("*.ipynb"))


def test_real_lessons_student_copies_parse_and_keep_no_solution():
    import ast

    assert LESSON_PATHS
    for path in LESSON_PATHS:
        lesson = nbformat.read(str(path), as_version=4)
        copy = student.student_copy(lesson, name=path.name)
        code = [c.source for c in copy.cells if c.cell_type == "code"]
        assert "SOLUTION" not in "\n".join(code), path.name
        for index in student.solution_cells(lesson):
            assert "raise NotImplementedError()" in copy.cells[index].source, (path.name, index)
        for index, cell in enumerate(copy.cells):
            if cell.cell_type == "code":
                try:
                    ast.parse(student.python_source(cell.source))
                except SyntaxError as e:
                    raise AssertionError(f"{path.name} cell {index} does not parse: {e}") from e


def expected_stop(copy, first: int) -> int:
    """Where a student copy must stop: the exercise cell itself when its stub is at top level,
    otherwise (a function body) the next code cell, the check that calls it."""
    if any(line == "raise NotImplementedError()" for line in copy.cells[first].source.splitlines()):
        return first
    return next(i for i in range(first + 1, len(copy.cells)) if copy.cells[i].cell_type == "code")


# each lesson's run up to its first exercise: part of the matrix (`make check`); `make test`
# runs every lesson once through nbval, and student copies parse (test_student_copy_*)
@pytest.mark.lessons
@pytest.mark.matrix
@pytest.mark.parametrize("path", LESSON_PATHS, ids=[p.stem for p in LESSON_PATHS])
def test_student_copy_runs_to_its_first_exercise(path, tmp_path):
    """Fast mode, from the top: every cell runs until the first exercise, which stops with
    NotImplementedError (never a SyntaxError or NameError) in the exercise or its check cell."""
    import papermill as pm

    lesson = nbformat.read(str(path), as_version=4)
    first = student.solution_cells(lesson)[0]
    copy = student.student_copy(lesson, name=path.name)
    source, target = tmp_path / path.name, tmp_path / f"out-{path.name}"
    nbformat.write(copy, str(source))
    with pytest.raises(pm.PapermillExecutionError) as info:
        run.execute(source, target, {"FAST": True}, timeout=300)
    error = info.value
    # the executed copy without papermill's own cells (injected parameters, error banner)
    executed = nbformat.read(str(target), as_version=4)
    cells = [c for c in executed.cells
             if not {"injected-parameters", "papermill-error-cell-tag"} & set(c.metadata.get("tags", []))]
    assert [c.source for c in cells] == [c.source for c in copy.cells]
    errored = [i for i, c in enumerate(cells)
               if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    stop = expected_stop(copy, first)
    assert errored and errored[0] >= first, (
        f"{path.name}: cell {errored[:1]} fails before the first exercise (cell {first}) with "
        f"{error.ename}: {error.evalue}; the lesson itself does not run that far in fast mode")
    assert error.ename == "NotImplementedError", f"cell {errored}: {error.ename}: {error.evalue}"
    assert errored == [stop], f"{path.name}: cells {errored} errored, expected only cell {stop}"
