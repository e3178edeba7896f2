"""benchmarks/gpu_check.py (`make gpu-check`): it refuses clearly where there is no CUDA, and its
report names the card and shows every part, failing ones with their output."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
_spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # its dataclass looks its module up there
_spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_at_once_and_says_why(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "gpu-check needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_report_names_the_card_and_every_part():
    parts = [gpu_check.Part("CUDA tests", ["python", "-m", "pytest"], 0, 12.0, "`9 passed`"),
             gpu_check.Part("lessons (full mode)", ["python", "course/run.py"], 0, 1000.0, "|a|"),
             gpu_check.Part("benchmarks/verify.py --device cuda", ["python", "b.py"], 1, 3.0,
                            "```\nTraceback\n```")]
    text = gpu_check.report("NVIDIA H100 80GB HBM3", parts)
    assert text.startswith("# GPU check: NVIDIA H100 80GB HBM3")
    assert "2 of 3 parts passed" in text
    assert "16.7 min: OVER the 15-minute target" in text
    assert "FAILED (exit 1) in 3 s" in text and "Traceback" in text


def test_a_part_reports_its_output_or_its_failure():
    ok = gpu_check.run_part("echo", [sys.executable, "-c", "print('1 passed in 0.1s')"],
                            body=gpu_check._pytest_summary)
    assert ok.returncode == 0 and ok.body == "`1 passed in 0.1s`"
    bad = gpu_check.run_part("fail", [sys.executable, "-c", "import sys; sys.exit('broken')"])
    assert bad.returncode == 1 and "broken" in bad.body
    slow = gpu_check.run_part("hang", [sys.executable, "-c", "import time; time.sleep(30)"],
                              timeout=1)
    assert slow.returncode == 124 and "timed out" in slow.body


def test_every_benchmark_that_takes_a_device_is_run():
    """A new benchmarks/*.py with --device joins the check by itself; one without is named."""
    names, others = gpu_check.benchmarks()
    assert {"attacks.py", "defences.py", "defence_methods.py", "verify.py"} <= set(names)
    assert "gpu_check.py" not in names + others
    text = gpu_check.report("card", [], notes=["not run (no --device option: CPU-only): x.py"])
    assert "- not run (no --device option: CPU-only): x.py" in text
