"""The environments learners get outside this repository's `.venv`, built fresh and used the way
they use them (marker `environments`, run by `make check`; they need the package index, and skip
when it cannot be reached):

- Binder: a virtual environment from `binder/requirements.txt`, then `binder/postBuild`, then
  lesson 00 executed in it;
- Colab: a bare environment, the lessons' install cell (`%pip install "git+<repository>"`, here
  with this clone's path in place of GitHub's address, the same pip code path), then lesson 00
  executed from a folder outside the repository, as Colab opens a lone notebook. This is also
  what `pip install` gives a practitioner: the package with its data (zoo weights, stored results).
"""

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "00-start-here.ipynb"
pytestmark = pytest.mark.environments


def index_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return True
    except Exception:
        # a mirror configured for pip (PIP_INDEX_URL or pip.conf) serves just as well
        out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d",
                              os.devnull + "-pip", "--quiet", "six"], capture_output=True)
        return out.returncode == 0


needs_index = pytest.mark.skipif(not index_reachable(), reason="no package index reachable")


def venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin"


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd[:4]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def execute_lesson(bin_dir: Path, notebook: Path, cwd: Path) -> str:
    """Lesson 00 in quick mode with the environment's own papermill and kernel."""
    out = cwd / f"out-{notebook.name}"
    run([str(bin_dir / "python"), "-m", "papermill", str(notebook), str(out), "-p", "FAST", "True",
         "-k", "python3", "--cwd", str(cwd)], cwd=cwd,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
             "JUPYTER_PATH": str(bin_dir.parent / "share" / "jupyter")})
    return out.read_text()


@needs_index
def test_binder_environment_runs_lesson_00(tmp_path):
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


@needs_index
def test_colab_install_cell_then_lesson_00_outside_the_repository(tmp_path):
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
