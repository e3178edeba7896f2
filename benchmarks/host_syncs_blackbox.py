"""Host syncs of the black-box and search methods at a small and a large budget (issue 16).

    python benchmarks/host_syncs_blackbox.py [--only NAME ...]

Counts, on the CPU, the calls that would make a GPU wait for the host (``.item()``, ``bool(t)``,
``nonzero``, mask indexing, ...; tests/syncs.py) for each method of
tests/attacks/test_host_syncs_blackbox.py at the two budgets its test compares, and prints a
markdown table. A method whose loop is free of host syncs has equal counts; DeepGO, sequential
by design, makes one per evaluation, and UAP one per pass (its stopping rule; the count leaves
out what DeepFool does, deepfool.py's). Reads of torch.optim's step counters (CPU tensors even
beside a GPU) are left out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/ is there

from robustlab.tables import markdown_table  # noqa: E402
from tests.attacks.test_host_syncs_blackbox import RUNS, counted, deepgo_syncs, uap_syncs  # noqa: E402


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
    if not args.only or any(part.lower() in "uap (passes)" for part in args.only):
        a, b = uap_syncs(1), uap_syncs(3)  # one read per pass, by design; DeepFool left out
        rows.append(("UAP (passes; DeepFool's own left out)", 1, a.total, 3, b.total, "no: 1 per pass"))
    if not args.only or any(part.lower() in "deepgo (iterations)" for part in args.only):
        (a, ea), (b, eb) = deepgo_syncs(5), deepgo_syncs(40)  # sequential: one per evaluation
        rows.append((f"DeepGO (iterations; {ea} -> {eb} evaluations)", 5, a.total, 40, b.total,
                     f"no: {(b.total - a.total) / (eb - ea):g} per evaluation"))
    print(markdown_table(["method (budget)", "small", "syncs", "large", "syncs", "flat"], rows))


if __name__ == "__main__":
    main()
