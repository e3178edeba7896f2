"""Shared by the environment tests (tests/test_environment_*.py): fresh virtual environments,
and lesson 00 executed in one with its own papermill and kernel."""

import functools
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "00-start-here.ipynb"


@functools.cache
def index_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return True
    except Exception:
        # a mirror configured for pip (PIP_INDEX_URL or pip.conf) serves just as well
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d",
                                  folder, "--quiet", "six"], capture_output=True)
        return out.returncode == 0


def require_index() -> None:
    """Skip the calling test where no package index is reachable (asked when a test needs it, not
    at collection: `make test` collects these files too)."""
    if not index_reachable():
        pytest.skip("no package index reachable")


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


