"""Benchmark robustlab's attacks against the reference library torchattacks.

    python benchmarks/attacks.py [--device cpu|cuda] [--n N] [--models digits-cnn digits-mlp]

For each attack both libraries get the same model, the same batch of digits test images and
the same hyperparameters; the script prints one markdown table per model and device with the
robust accuracy (eps-bounded attacks) or success rate (minimum-norm and pixel attacks), the
mean distortion of the successful examples, and the time ratio robustlab / torchattacks,
measured in this one process after a warm-up, best of --repeats runs taken in turn. A verdict
column checks the targets of benchmarks/README.md.

torchattacks comes from the `bench` extra; without it the script says so, skips the comparison
and runs robustlab's attacks alone (accuracy or success, distortion and time; no verdict).
torchattacks 3.5 never imports torchvision, so it works beside a CPU-only torch with
`pip install --no-deps torchattacks` (its declared torchvision dependency is not needed here).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from robustlab import data, models
from robustlab.attacks import cw, deepfool, fgsm, one_pixel, pgd, square
from robustlab.evaluate import distortion_stats, markdown_table
from robustlab.train import predict

# Digits are 8x8 in [0, 1]: budgets are larger than CIFAR's 8/255.
EPS_LINF, EPS_L2 = 0.1, 0.75
PP = 0.005                      # 0.5 percentage points
CW_DIST_TOL = 0.05              # our mean C&W L2 may exceed torchattacks' by at most 5 %
TIME_NOISE = 0.03               # best-of-N timings on a shared CPU still wobble by a few percent


@dataclass
class Case:
    """One attack: how each library runs it and how it is scored."""

    name: str
    ours: Callable              # (model, x, y, seed) -> x_adv
    theirs: Callable            # (torchattacks module, model) -> a torchattacks attack
    kind: str                   # "acc": eps-bounded, robust accuracy; "success": success rate
    norm: str                   # the distortion reported
    n: int | None = None        # cap on the batch, for attacks that run one image at a time
    repeats: int | None = None  # timed runs, if not --repeats (more for fast, 1 for slow ones)
    match_acc: bool = False     # PGD: robust accuracy must agree within 0.5 pp
    match_dist: bool = False    # C&W: mean distortion within CW_DIST_TOL


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cases(args) -> list[Case]:
    steps, cw_steps, queries = args.steps, args.cw_steps, args.queries
    alpha_inf, alpha_l2 = 2.5 * EPS_LINF / steps, 2.5 * EPS_L2 / steps

    return [
        Case("FGSM (Linf)", lambda m, x, y, seed: fgsm(m, x, y, eps=EPS_LINF),
             lambda ta, m: ta.FGSM(m, eps=EPS_LINF), "acc", "linf", repeats=20),
        Case("PGD (Linf, random start)",
             lambda m, x, y, seed: pgd(m, x, y, eps=EPS_LINF, alpha=alpha_inf, steps=steps,
                                       generator=_seeded(seed)),
             lambda ta, m: ta.PGD(m, eps=EPS_LINF, alpha=alpha_inf, steps=steps, random_start=True),
             "acc", "linf", match_acc=True),
        Case("PGD (Linf, no random start)",
             lambda m, x, y, seed: pgd(m, x, y, eps=EPS_LINF, alpha=alpha_inf, steps=steps,
                                       random_start=False),
             lambda ta, m: ta.PGD(m, eps=EPS_LINF, alpha=alpha_inf, steps=steps, random_start=False),
             "acc", "linf", match_acc=True),
        Case("PGD (L2, random start)",
             lambda m, x, y, seed: pgd(m, x, y, eps=EPS_L2, alpha=alpha_l2, steps=steps, norm="l2",
                                       generator=_seeded(seed)),
             lambda ta, m: ta.PGDL2(m, eps=EPS_L2, alpha=alpha_l2, steps=steps, random_start=True),
             "acc", "l2", match_acc=True),
        # torchattacks' C&W has no binary search on c: ours runs one round (binary_steps=1)
        # with the same c, kappa, steps and learning rate
        Case("C&W (L2, c=1, one round)",
             lambda m, x, y, seed: cw(m, x, y, norm="l2", c=1.0, kappa=0.0, steps=cw_steps,
                                                lr=0.01, binary_steps=1),
             lambda ta, m: ta.CW(m, c=1.0, kappa=0.0, steps=cw_steps, lr=0.01),
             "success", "l2", match_dist=True),
        Case("DeepFool (L2)",
             lambda m, x, y, seed: deepfool(m, x, y, norm="l2", steps=50,
                                                            overshoot=0.02),
             lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02),
             "success", "l2", n=args.n_slow, repeats=1, match_dist=True),
        Case("Square (Linf)",
             # black-box attacks return (x_adv, queries): the table compares x_adv
             lambda m, x, y, seed: square(m, x, y, eps=EPS_LINF, max_queries=queries,
                                          p_init=0.8, generator=_seeded(seed))[0],
             lambda ta, m: ta.Square(m, norm="Linf", eps=EPS_LINF, n_queries=queries, p_init=0.8,
                                     loss="margin", seed=0),
             "acc", "linf", repeats=1),
        Case("OnePixel",
             lambda m, x, y, seed: one_pixel(m, x, y, pixels=1, popsize=args.popsize,
                                             max_iter=args.de_iter, generator=_seeded(seed))[0],
             lambda ta, m: ta.OnePixel(m, pixels=1, steps=args.de_iter, popsize=args.popsize),
             "success", "l0", n=args.n_slow, repeats=1),
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels are asynchronous: wait, or we time only the launches
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple[torch.Tensor, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out.detach(), time.perf_counter() - start


def score(model, x, y, correct, x_adv, case: Case) -> tuple[float, float]:
    """(robust accuracy or success rate, mean distortion of the successful examples)."""
    wrong = predict(model, x_adv).argmax(1) != y
    success = correct & wrong
    stats = distortion_stats(x[correct], x_adv[correct], success[correct])
    metric = (correct & ~wrong).float().mean().item() if case.kind == "acc" else stats["success_rate"]
    return metric, stats[f"{case.norm}_mean"]


def run_case(ta, model, x, y, correct, case: Case, repeats: int, device) -> dict:
    """Run one case in both libraries (robustlab alone when `ta` is None, without torchattacks);
    metrics are means over the runs (run r uses seed r)."""
    if case.n is not None:
        x, y, correct = x[:case.n], y[:case.n], correct[:case.n]
    runs = case.repeats or repeats
    libs = {"ours": functools.partial(case.ours, model, x, y)}
    # warm-up on a few images: first calls pay for allocations and dispatch caches
    case.ours(model, x[:4], y[:4], 0)
    if ta is not None:
        attack = case.theirs(ta, model)

        def theirs(seed):
            # torchattacks draws from the global generators (PGD: torch, OnePixel: NumPy)
            torch.manual_seed(seed)
            np.random.seed(seed)
            return attack(x, y)

        libs["theirs"] = theirs
        attack(x[:4], y[:4])
    results = {lib: [] for lib in libs}
    for seed in range(runs):  # in turn, so that a load spike on the machine hits both alike,
        # and each first on every other run, so that neither always finds the caches warm
        for lib, fn in list(libs.items())[::1 if seed % 2 == 0 else -1]:
            adv, seconds = _timed(functools.partial(fn, seed), device)
            results[lib].append((*score(model, x, y, correct, adv, case), seconds))
    row = {"attack": case.name, "n": len(x), "runs": runs, "case": case}
    for lib, res in results.items():
        metric, dist, seconds = zip(*res)
        row[f"{lib}_metric"], row[f"{lib}_dist"] = float(np.mean(metric)), float(np.mean(dist))
        row[f"{lib}_s"] = min(seconds)
    if ta is None:
        return row
    row["ratio"] = row["ours_s"] / row["theirs_s"]
    row["verdict"] = verdict(row, case)
    return row


def verdict(row: dict, case: Case) -> str:
    misses = []
    ours, theirs = row["ours_metric"], row["theirs_metric"]
    if case.match_acc and abs(ours - theirs) > PP + 1e-9:
        misses.append(f"acc differs by {100 * (ours - theirs):+.1f} pp")
    elif case.kind == "acc" and ours > theirs + PP + 1e-9:
        misses.append(f"weaker by {100 * (ours - theirs):.1f} pp")
    if case.kind == "success" and ours < theirs - 1e-9:
        misses.append(f"success lower by {100 * (theirs - ours):.1f} pp")
    if case.match_dist and row["ours_dist"] > (1 + CW_DIST_TOL) * row["theirs_dist"]:
        misses.append(f"mean {case.norm} {100 * (row['ours_dist'] / row['theirs_dist'] - 1):+.0f} %")
    if row["ratio"] > 1.0 + TIME_NOISE:
        misses.append(f"slower x{row['ratio']:.2f}")
    if misses:
        return "MISS: " + "; ".join(misses)
    return "ok" if row["ratio"] <= 1.0 else f"ok (x{row['ratio']:.2f}: a tie within timing noise)"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _cells(r: dict, libs: tuple[str, ...]) -> list:
    kind, norm = ("acc" if r["case"].kind == "acc" else "success"), r["case"].norm
    fmt = {"metric": lambda v: f"{kind} {_pct(v)}", "dist": lambda v: f"{norm} {v:.4f}",
           "s": lambda v: f"{v:.3f}"}
    cells = [r["attack"], r["n"], r["runs"]]
    for key in ("metric", "dist", "s"):
        cells += [fmt[key](r[f"{lib}_{key}"]) for lib in libs]
    return cells + ([f"{r['ratio']:.2f}", r["verdict"]] if "theirs" in libs else [])


def table(rows: list[dict], reference: bool = True) -> str:
    """The markdown table of `rows`; robustlab's columns only when not `reference`."""
    libs, names = (("ours", "theirs"), ("robustlab", "torchattacks")) if reference else \
        (("ours",), ("robustlab",))
    head = ["attack", "n", "runs"]
    for col in ("acc/success", "mean dist", "s"):
        head += [f"{name} {col}" for name in names]
    head += ["time ratio", "verdict"] if reference else []
    return markdown_table(head, [_cells(r, libs) for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], action="append",
                   help="where to run (repeatable); default: cpu, and cuda when available")
    p.add_argument("--n", type=int, default=360, help="digits test images (at most 360)")
    p.add_argument("--n-slow", type=int, default=40,
                   help="images for the attacks torchattacks runs one image at a time")
    p.add_argument("--models", nargs="+", default=["digits-cnn"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per attack; the best counts")
    p.add_argument("--steps", type=int, default=20, help="PGD iterations")
    p.add_argument("--cw-steps", type=int, default=100, help="C&W Adam iterations")
    p.add_argument("--queries", type=int, default=1000, help="Square query budget")
    p.add_argument("--popsize", type=int, default=100, help="one-pixel population")
    p.add_argument("--de-iter", type=int, default=20, help="one-pixel generations")
    p.add_argument("--only", nargs="+", help="run the attacks whose name contains one of these")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    for name in ("n", "n_slow", "repeats", "steps", "cw_steps", "queries", "popsize", "de_iter"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        import torchattacks as ta
    except ImportError:
        print("torchattacks is not installed: `pip install --no-deps torchattacks` (or the "
              "'bench' extra) to compare with it; comparison skipped, robustlab's attacks alone.")
        ta = None
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return 2
    x_all, y_all = data.digits("test")
    x_all, y_all = x_all[:args.n], y_all[:args.n]
    missed = False
    for device in map(torch.device, devices):
        for name in args.models:
            model = models.pretrained(name, device=device)
            x, y = x_all.to(device), y_all.to(device)
            correct = predict(model, x).argmax(1) == y
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
            print(f"\n### {name} on {device} ({where}, {torch.get_num_threads()} threads), "
                  f"{len(x)} images, clean accuracy {_pct(correct.float().mean().item())}; "
                  f"torch {torch.__version__}, torchattacks "
                  f"{getattr(ta, '__version__', '?') if ta else 'absent'}\n", flush=True)
            rows = []
            for case in cases(args):
                if args.only and not any(s.lower() in case.name.lower() for s in args.only):
                    continue
                rows.append(run_case(ta, model, x, y, correct, case, args.repeats, device))
                print(f"  done: {case.name}", file=sys.stderr, flush=True)
            print(table(rows, reference=ta is not None), flush=True)
            missed |= any(r.get("verdict", "").startswith("MISS") for r in rows)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
