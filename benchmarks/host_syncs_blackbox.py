"""Host syncs of the black-box and search methods at a small and a large budget (issue 16).

    python benchmarks/host_syncs_blackbox.py [--only NAME ...]

Counts, on the CPU, the calls that would make a GPU wait for the host (``.item()``, ``bool(t)``,
``nonzero``, mask indexing, ...; tests/syncs.py) for each method of
tests/attacks/test_host_syncs_blackbox.py at the two budgets its test compares, and prints a
markdown table. A method whose loop is free of host syncs has equal counts; DeepGO, sequential
by design, makes one per evaluation. UAP's count leaves out the DeepFool runs (deepfool.py's).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/ is there

from robustlab.tables import markdown_table  # noqa: E402
from tests.attacks.test_host_syncs_blackbox import RUNS, counted  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="substrings of method names")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for name, (_, small, large) in RUNS.items():
        if args.only and not any(part.lower() in name.lower() for part in args.only):
            continue
        a, b = counted(name, small), counted(name, large)
        rows.append((name, small, a.total, large, b.total, "yes" if a.total == b.total else "no"))
    print(markdown_table(["method (budget)", "small", "syncs", "large", "syncs", "flat"], rows))


if __name__ == "__main__":
    main()
