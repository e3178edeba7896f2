"""Every lesson's fast mode on another kind of CPU: torch's generic kernels (no AVX), with oneDNN
and MKL held to their oldest code paths, so that no lesson claim is fitted to one machine's
floating point. The native runs and the reasons behind nbval's comparisons are in
test_lessons.py.
"""

import pytest

from .test_lessons import GENERIC_CPU, LESSONS, course_run, run_fast_mode, seeds


@pytest.mark.lessons
@pytest.mark.parametrize("seed", seeds("generic"))
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_in_fast_mode_on_a_generic_cpu(path, seed, tmp_path, monkeypatch):
    run_fast_mode(path, "generic", seed, tmp_path, monkeypatch)


def test_generic_cpu_reaches_the_kernel(tmp_path, monkeypatch):
    """ATEN_CPU_CAPABILITY set here really changes the kernels a lesson's kernel runs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("SEED = 0"),
                nbformat.v4.new_code_cell("import torch\nprint(torch.backends.cpu.get_cpu_capability())")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "probe.ipynb"
    nbformat.write(nb, src)
    for key, value in GENERIC_CPU.items():
        monkeypatch.setenv(key, value)
    out = course_run.execute(src, tmp_path / "out.ipynb", {"SEED": 1})
    assert out.cells[-1].outputs[0]["text"].strip() == "DEFAULT"
