"""Benchmark robustlab's verifiers: IBP and CROWN against auto_LiRPA, MILP with interval-only
against CROWN-tightened big-M constants, and verified accuracy against eps.

    python benchmarks/verify.py [--device cpu|cuda] [--n 100] [--models NAME ...]

1. `interval` and `crown` against auto_LiRPA's IBP and CROWN (`compute_bounds`) on the same zoo
   model and batch of digits test images: the largest difference between the two libraries'
   bounds on the logits, the mean width of each, and the time ratio robustlab / auto_LiRPA,
   measured in this one process after a warm-up, best of --repeats runs taken in turn.
   robustlab's bounds hold for the float32 model: computed in float64 and widened by its
   rounding bound (robustlab/verify/rounding.py); they are compared net of that term (shown).
   auto_LiRPA's BoundedModule is built once, outside the timing (it traces the model).
   The two relax max pooling differently, so CROWN must agree to 1e-5 only on networks without
   it: digits-mlp and digits-cnn-avgpool (digits-cnn with each 2x2 max pool replaced by a 2x2
   average pool, same weights, not retrained: a network to compare bounds on, not a
   classifier). On digits-cnn the table says which library's bounds are tighter.
2. `milp` seconds per example on digits-mlp with bounds="interval" (big-M constants from IBP)
   and bounds="crown" (IBP intersected with CROWN: the tightened constants).
3. Verified accuracy against eps for IBP, CROWN, branch and bound and MILP (CROWN-tightened) on
   digits-mlp and the IBP-trained digits-mlp-ibp.

auto_LiRPA is not on PyPI in a form that imports beside numpy 2; install it from a checkout
(benchmarks/README.md). Without it, part 1 says so and gives robustlab's bounds and times
alone; parts 2 and 3 still run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings

import torch

from robustlab import data, models
from robustlab.tables import markdown_table
from robustlab.verify import branch_and_bound, crown, interval, margin_spec, milp, read_exact, rounding_bound

OURS = {"IBP": interval, "CROWN": crown}
AGREE = 1e-5  # CROWN's largest |difference| on the logits where neither network has a max pool


def load(name: str, device) -> torch.nn.Module:
    """A zoo model, or "digits-cnn-avgpool": digits-cnn with its max pools made average pools."""
    if name != "digits-cnn-avgpool":
        return models.pretrained(name, device=device)
    model = models.pretrained("digits-cnn", device=device)
    for i, layer in enumerate(model):
        if isinstance(layer, torch.nn.MaxPool2d):
            model[i] = torch.nn.AvgPool2d(layer.kernel_size, layer.stride)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels are asynchronous: wait, or we time only the launches
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def compare(lirpa, model, x, eps: float, method: str, repeats: int, device) -> list:
    """One row: both libraries' bounds on the logits over the L-inf eps-box of x; robustlab's
    alone (the comparison's cells "-") when `lirpa` is None, without auto_LiRPA."""
    def ours(xb=x):
        return tuple(OURS[method](model, xb, eps=eps))

    libs = {"ours": ours}
    if lirpa is not None:
        bounded = lirpa.BoundedModule(model, torch.zeros(1, *x.shape[1:], device=device),
                                      device=device)

        def theirs(xb=x):
            box = lirpa.PerturbationLpNorm(norm=float("inf"), x_L=(xb - eps).clamp(0, 1),
                                           x_U=(xb + eps).clamp(0, 1))
            with torch.no_grad():
                return bounded.compute_bounds(x=(lirpa.BoundedTensor(xb, box),), method=method)

        libs["theirs"] = theirs
    for fn in libs.values():  # warm-up: first calls pay for allocations and dispatch caches
        fn(x[:4])
    best, out = dict.fromkeys(libs, float("inf")), {}
    first, seconds = _timed(ours, device)
    runs = repeats if seconds < 2 else min(repeats, 3)  # CROWN on a CNN takes seconds a run
    for r in range(runs):  # in turn, each first on every other run
        for lib, fn in list(libs.items())[::1 if r % 2 == 0 else -1]:
            out[lib], s = _timed(fn, device)
            best[lib] = min(best[lib], s)
    lo, up = out["ours"]
    # robustlab widens its float64 bounds by the model's float32 rounding bound (verify/rounding.py);
    # auto_LiRPA bounds the network in float32 arithmetic without it: compare them net of it
    box = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    net, u = read_exact(model, *box)
    err = 2 * rounding_bound(net, *box, u).to(lo)  # the model's rounding and the verifier's
    rounding = err.mean().item()
    lo, up = lo + err, up - err
    if lirpa is None:
        return [method, eps, runs, "-", "-", (up - lo).mean().item(), "-", rounding,
                f"{best['ours']:.4f}", "-", "-"]
    tlo, tup = out["theirs"]
    diff = max((lo - tlo).abs().max().item(), (up - tup).abs().max().item())
    # which bounds are tighter: the share of logits whose interval is narrower by more than
    # float32 rounding (relative to the width: IBP's widths on the CNNs are in the hundreds)
    width, their_width = up - lo, tup - tlo
    slack = AGREE * (1 + their_width.abs())
    tighter = (f"robustlab on {(width < their_width - slack).float().mean().item():.0%}, "
               f"auto_LiRPA on {(their_width < width - slack).float().mean().item():.0%}")
    return [method, eps, runs, f"{diff:.2e}", tighter, width.mean().item(), their_width.mean().item(),
            rounding, f"{best['ours']:.4f}", f"{best['theirs']:.4f}", f"{best['ours'] / best['theirs']:.2f}"]


def milp_times(model, x, y, eps_list, n: int, time_limit: float) -> str:
    rows = []
    for eps in eps_list:
        for bounds in ("interval", "crown"):
            verdicts = milp(model, x[:n], y[:n], eps=eps, bounds=bounds, time_limit=time_limit)
            secs = [v.seconds for v in verdicts]
            counts = {s: sum(v.status == s for v in verdicts) for s in ("verified", "falsified", "unknown")}
            by_bounds = sum("the bounds alone prove it" in (v.reason or "") for v in verdicts)
            rows.append([eps, bounds, n, statistics.mean(secs), statistics.median(secs), max(secs),
                         counts["verified"], counts["falsified"], counts["unknown"], by_bounds])
    head = ["eps", "big-M bounds", "n", "mean s", "median s", "max s", "verified", "falsified",
            "unknown", "proved by the bounds alone"]
    return markdown_table(head, rows)


def accuracy_table(model, x, y, eps_list, time_limit: float) -> str:
    """All four verifiers on the same examples: the counts of MILP and branch and bound are the
    exact one (unless some example runs out of time), IBP and CROWN sound lower bounds on it."""
    rows, n = [], len(x)
    C = margin_spec(y, 10)
    for eps in eps_list:
        ibp = (interval(model, x, eps=eps, C=C).lower.amin(1) > 0).float().mean().item()
        cr = (crown(model, x, eps=eps, C=C).lower.amin(1) > 0).float().mean().item()
        complete = {"bab": branch_and_bound(model, x, y, eps=eps, time_limit=time_limit),
                    "milp": milp(model, x, y, eps=eps, time_limit=time_limit)}
        cells = []
        for verdicts in complete.values():
            unknown = sum(v.status == "unknown" for v in verdicts)
            cells += [f"{100 * sum(v.verified for v in verdicts) / n:.1f} %"
                      + (f" ({unknown} unknown)" if unknown else ""),
                      f"{statistics.mean(v.seconds for v in verdicts):.3f}"]
        rows.append([eps, f"{100 * ibp:.1f} %", f"{100 * cr:.1f} %", *cells])
    return markdown_table(["eps", "IBP", "CROWN", "branch and bound", "BaB mean s",
                           "MILP (CROWN-tightened big-M)", "MILP mean s"], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], action="append",
                   help="where to run part 1 (repeatable); default: cpu, and cuda when available")
    p.add_argument("--n", type=int, default=100, help="digits test images for parts 1 and 3")
    p.add_argument("--models", nargs="+", default=["digits-mlp", "digits-cnn-avgpool", "digits-cnn"])
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.03], help="part 1's eps")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    p.add_argument("--milp-n", type=int, default=10, help="examples per MILP timing (part 2)")
    p.add_argument("--milp-eps", type=float, nargs="+", default=[0.02, 0.05])
    p.add_argument("--acc-n", type=int, default=50, help="examples for part 3 (all verifiers)")
    p.add_argument("--acc-eps", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    p.add_argument("--acc-models", nargs="+", default=["digits-mlp", "digits-mlp-ibp"])
    p.add_argument("--time-limit", type=float, default=30.0, help="MILP seconds per example")
    p.add_argument("--skip", nargs="+", default=[], choices=["lirpa", "milp", "accuracy"])
    args = p.parse_args(argv)
    for name in ("n", "repeats", "milp_n", "acc_n"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    x_all, y_all = data.digits("test")
    x_all, y_all = x_all[:args.n], y_all[:args.n]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    if "lirpa" not in args.skip:
        try:
            # its import warns that torch.jit.script is deprecated and resets the warning
            # filters ('once'): record the warnings away, and restore the filters after
            with warnings.catch_warnings(record=True):
                import auto_LiRPA as lirpa
            logging.getLogger("auto_LiRPA").setLevel(logging.ERROR)
        except ImportError as e:
            print(f"\nauto_LiRPA is not installed ({e}): skipping the comparison, robustlab's "
                  "bounds alone. Install it from a checkout with `pip install --no-deps "
                  "<checkout> appdirs graphviz` (see benchmarks/README.md).")
            lirpa = None
        devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if "cuda" in devices and not torch.cuda.is_available():
            print("--device cuda: CUDA is not available here")
            return 2
        for device in map(torch.device, devices):
            for name in args.models:
                model = load(name, device)
                x = x_all.to(device)
                print(f"\n### {name} on {device}: {len(x)} images, bounds on the logits; "
                      f"auto_LiRPA {lirpa.__version__ if lirpa else 'absent'}\n", flush=True)
                rows = []
                for method in ("IBP", "CROWN"):
                    for eps in args.eps:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            rows.append(compare(lirpa, model, x, eps, method, args.repeats, device))
                print(markdown_table(["method", "eps", "runs", "max |diff|", "tighter logit bounds",
                                      "robustlab mean width",
                                      "auto_LiRPA mean width", "robustlab rounding term",
                                      "robustlab s", "auto_LiRPA s",
                                      "time ratio"], rows), flush=True)
                if lirpa is None:
                    continue
                pooled = any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
                crown_diff = max(float(r[3]) for r in rows if r[0] == "CROWN")
                print(f"\nCROWN max |diff| {crown_diff:.2e}: " + (
                    "the two libraries bound the inputs of max pooling differently (README; the "
                    "widths say which is tighter)" if pooled else
                    f"{'agrees' if crown_diff <= AGREE else 'DOES NOT agree'} to {AGREE:g}"), flush=True)

    mlp = models.pretrained("digits-mlp")
    if "milp" not in args.skip:
        print(f"\n### MILP on digits-mlp: seconds per example, big-M constants from IBP vs "
              f"IBP and CROWN (time limit {args.time_limit:g} s)\n", flush=True)
        print(milp_times(mlp, x_all, y_all, args.milp_eps, args.milp_n, args.time_limit), flush=True)
    if "accuracy" not in args.skip:
        for name in args.acc_models:
            model = models.pretrained(name)
            n = min(args.acc_n, len(x_all))
            print(f"\n### Verified accuracy against eps (L-inf), {name}, the first {n} test "
                  f"images\n", flush=True)
            print(accuracy_table(model, x_all[:n], y_all[:n], args.acc_eps, args.time_limit), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
