"""Colab, as a learner meets it: a bare environment, the lessons' install cell, lesson 00 from a
folder outside the repository (see tests/test_environment_binder.py for both environments)."""

import shutil

import pytest

from .environments import LESSON, ROOT, execute_lesson, require_index, run, venv

pytestmark = pytest.mark.environments


def test_colab_install_cell_then_lesson_00_outside_the_repository(tmp_path):
    require_index()
    bin_dir = venv(tmp_path / "env")
    # what `%pip install "git+https://github.com/robustlab/robustlab"` does, from this clone
    # (committed state), plus what Colab already has: a kernel and papermill to run the lesson
    run([str(bin_dir / "pip"), "install", "--quiet", f"git+file://{ROOT}",
         "-c", str(ROOT / "requirements" / "constraints.txt"), "ipykernel", "papermill"])
    alone = tmp_path / "colab"
    alone.mkdir()
    shutil.copy(LESSON, alone / LESSON.name)
    executed = execute_lesson(bin_dir, alone / LESSON.name, alone)
    assert '"output_type": "error"' not in executed
    # the package brought its data: the zoo's weights and the stored results load from anywhere
    check = ("from robustlab import models, tables; models.pretrained('digits-cnn'); "
             "tables.stored_result('defence_methods'); print('ok')")
    assert run([str(bin_dir / "python"), "-c", check], cwd=alone).stdout.strip() == "ok"
