"""The environments learners get outside this repository's `.venv`, built fresh and used the way
they use them (marker `environments`, run by `make check`, one file each so that its two workers
build both at once; they need the package index, and skip when it cannot be reached):

- Binder: a virtual environment from `binder/requirements.txt`, then `binder/postBuild`, then
  lesson 00 executed in it;
- Colab (tests/test_environment_colab.py): a bare environment, the lessons' install cell
  (`%pip install "git+<repository>"`, here with this clone's path in place of GitHub's address,
  the same pip code path), then lesson 00
  executed from a folder outside the repository, as Colab opens a lone notebook. This is also
  what `pip install` gives a practitioner: the package with its data (zoo weights, stored results).
"""

import os
import shutil

import pytest

from .environments import LESSON, ROOT, execute_lesson, require_index, run, venv

pytestmark = pytest.mark.environments


def test_binder_environment_runs_lesson_00(tmp_path):
    require_index()
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", "build", ".git", "__pycache__"))
    bin_dir = venv(tmp_path / "env")
    # binder/requirements.txt names PyTorch's CPU index; where only PyPI is reachable, pip must
    # give up on that index quickly (the same pins are on PyPI)
    run([str(bin_dir / "pip"), "install", "--quiet", "--timeout", "10", "--retries", "1",
         "-r", "binder/requirements.txt"], cwd=repo)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run(["bash", "binder/postBuild"], cwd=repo, env=env)
    settings = bin_dir.parent / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert settings.read_text() == (ROOT / "binder" / "overrides.json").read_text()
    executed = execute_lesson(bin_dir, repo / "lessons" / LESSON.name, repo / "lessons")
    assert '"output_type": "error"' not in executed
