"""Hard-label attacks at a query budget: HopSkipJump, RayS and Sign-OPT on the digits CNN.

    python benchmarks/decision_attacks.py [--device cpu|cuda] [--n N] [--budgets 100 1000 10000]
                                          [--quick] [--results decision_attacks]

The three decision-based attacks (the model's top-1 label only) on the first N test digits the
digits CNN classifies correctly, each at each budget of queries per example, in its own norm:
HopSkipJump in L2 and L-inf, RayS in L-inf, Sign-OPT in L2. Every attack minimises the
distortion within its budget; the table gives the success rate at eps (a wrong label within
eps: --eps-linf, --eps-l2), the median distortion of the examples it fooled, the mean queries
spent and the seconds taken. Issue 21's lesson plots these curves. --quick: 4 digits and
budgets 100 and 300, the smoke run of tests/test_benchmarks.py. --results NAME also writes the
table to robustlab/results/NAME.md, where lessons read it (`robustlab.tables.stored_result`)
instead of spending minutes on the 10,000-query runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from robustlab import data, models
from robustlab.attacks import hop_skip_jump, rays, sign_opt
from robustlab.evaluate import distortion_stats, markdown_table, query_stats
from robustlab.norms import flat_norm

RESULTS = Path(__file__).resolve().parent.parent / "robustlab" / "results"


def _hsj(norm: str):
    return lambda m, x, y, q, g: hop_skip_jump(m, x, y, norm=norm, max_queries=q, generator=g)


# name -> (norm, run(model, x, y, budget, generator))
ATTACKS = {
    "HopSkipJump L2": ("l2", _hsj("l2")),
    "HopSkipJump L-inf": ("linf", _hsj("linf")),
    "RayS": ("linf", lambda m, x, y, q, g: rays(m, x, y, max_queries=q, generator=g)),
    "Sign-OPT": ("l2", lambda m, x, y, q, g: sign_opt(m, x, y, max_queries=q, generator=g)),
}


def correct_digits(model: torch.nn.Module, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test digits the model labels correctly: an attack on a digit already wrong
    costs nothing and says nothing."""
    x, y = data.digits("test")
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return x[right][:n], y[right][:n]


def run(model, x, y, norm: str, attack, budget: int, eps: float, seed: int) -> list:
    """One row of the table: success at eps, median distortion, mean queries, seconds."""
    start = time.perf_counter()
    adv, queries = attack(model, x, y, budget, torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    success = fooled & (flat_norm(adv - x, norm) <= eps)
    dist = distortion_stats(x, adv, fooled)[f"{norm}_median"]
    return [norm, budget, eps, query_stats(queries, success)["success_rate"], dist,
            queries.double().mean().item(), seconds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=30, help="test digits attacked")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--eps-linf", type=float, default=0.1)
    parser.add_argument("--eps-l2", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 digits, budgets 100 and 300")
    parser.add_argument("--results", default="", help="also write robustlab/results/NAME.md")
    args = parser.parse_args()
    if args.quick:
        args.n, args.budgets = 4, [100, 300]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = models.pretrained("digits-cnn").to(args.device).eval()
    x, y = correct_digits(model, args.n, args.device)
    eps = {"linf": args.eps_linf, "l2": args.eps_l2}
    rows = []
    for name, (norm, attack) in ATTACKS.items():
        for budget in args.budgets:
            rows.append([name, *run(model, x, y, norm, attack, budget, eps[norm], args.seed)])
    text = (f"### Hard-label attacks on digits-cnn, {len(x)} test digits, {args.device}, "
            f"seed {args.seed}\n\n"
            + markdown_table(["attack", "norm", "queries", "eps", "success at eps",
                              "median distortion", "mean queries", "seconds"], rows,
                             decimals=[None, None, 0, 2, 3, 3, 0, 1]))
    print(text)
    if args.results:
        (RESULTS / f"{args.results}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
