"""Benchmark robustlab.stats: CLEVER against ART's, and multi-level splitting against naive
Monte Carlo and exact probabilities.

    python benchmarks/stats.py [--device cpu|cuda] [--n 10] [--n-batches 50] [--batch-size 100]
                               [--radius 2.0] [--norm 2] [--seed 0] [--mc-n 100000]
                               [--particles 4000] [--mh-steps 30] [--eps E ...] [--skip art|split]

Table 1: `robustlab.stats.clever` against ART's `art.metrics.clever_u` on digits-mlp, the first
--n digits test images, untargeted, with the same radius, norm, number of batches and batch
size. Per example: both scores, their relative difference, and whether robustlab's fit fell back
to the sample maximum; then the median difference, the fraction within 10 % and both times (one
call each, after a warm-up; ART runs example by example, robustlab vectorised). The two do not
sample alike: robustlab draws n_batches * batch_size fresh points per class (Weng et al.
Algorithm 1), ART draws a pool of 10 * batch_size points and resamples its batches from it
(pool_factor=10, its default); both clip to [0, 1]. ART fits once from shape 1 with no fallback.

Table 2: splitting and naive Monte Carlo against exact probabilities. A linear classifier whose
margin is the sum of 8 pixels uniform on [0, 1] (misclassified when the sum reaches t: the
Irwin-Hall tail, exact) at several t, then digits-mlp under uniform L-inf noise at several eps
(no exact value: the two estimates side by side). Monte Carlo takes --mc-n samples per example.

ART is optional: without it (``pip install --no-deps adversarial-robustness-toolbox``) the
script says so and runs table 2 only.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from robustlab import data, models
from robustlab.stats import clever, monte_carlo, splitting
from robustlab.tables import markdown_table

D = 8  # pixels summed by the linear classifier of table 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels are asynchronous: wait, or we time only the launches
        torch.cuda.synchronize(device)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def art_scores(art, model, x, args, device) -> list[float]:
    """ART's clever_u on each example, its NumPy stream seeded with --seed."""
    from art.estimators.classification import PyTorchClassifier
    from art.metrics import clever_u
    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="gpu" if device.type == "cuda" else "cpu")
    np.random.seed(args.seed)
    return [float(clever_u(clf, xi, nb_batches=args.n_batches, batch_size=args.batch_size,
                           radius=args.radius, norm=args.norm, verbose=False))
            for xi in x.cpu().numpy()]


def table_clever(art, args, device) -> str:
    model = models.pretrained("digits-mlp", device=device)
    x = data.digits("test")[0][:args.n].to(device)

    def ours():
        return clever(model, x, norm=args.norm, radius=args.radius, n_batches=args.n_batches,
                      batch_size=args.batch_size, generator=_seeded(args.seed))
    clever(model, x[:1], norm=args.norm, radius=args.radius, n_batches=10, batch_size=4)
    result, t_ours = _timed(ours, device)
    theirs, t_art = _timed(lambda: art_scores(art, model, x, args, device), device)
    rel = [abs(a - b) / max(b, 1e-12) for a, b in zip(result.score.tolist(), theirs)]
    rows = [[i, a, b, r, "yes" if f else "no"] for i, (a, b, r, f) in enumerate(zip(
        result.score.tolist(), theirs, rel, result.fallback.tolist()))]
    within = sum(r <= 0.1 for r in rel) / len(rel)
    return "\n".join([
        f"### CLEVER on digits-mlp ({device.type}): norm {args.norm}, radius {args.radius}, "
        f"{args.n_batches} batches of {args.batch_size}",
        "", markdown_table(["example", "robustlab", "ART clever_u", "|difference| / ART",
                            "robustlab fallback"], rows), "",
        f"median |difference| / ART: {statistics.median(rel):.3g}; within 10 %: "
        f"{within:.0%} of {len(rel)}",
        f"time: robustlab {t_ours:.2f} s, ART {t_art:.2f} s, ratio robustlab / ART "
        f"{t_ours / t_art:.2f}"])


def sum_classifier(threshold: float, device) -> nn.Module:
    """z_0 = 0, z_1 = sum of the D pixels - threshold: class 0 fails when the sum reaches it."""
    lin = nn.Linear(D, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = 1.0
        lin.bias.copy_(torch.tensor([0.0, -threshold]))
    return nn.Sequential(nn.Flatten(), lin).eval().to(device)


def irwin_hall_tail(t: Fraction, d: int = D) -> float:
    """P(U_1 + ... + U_d >= t), U_i uniform on [0, 1]: F(d - t), F the Irwin-Hall CDF."""
    s = d - t
    return float(sum((-1) ** k * math.comb(d, k) * (s - k) ** d
                     for k in range(math.floor(s) + 1)) / math.factorial(d))


def _row(name, exact, model, x, y, eps, args, device):
    mc, t_mc = _timed(lambda: monte_carlo(model, x, y, eps=eps, n=args.mc_n,
                                          generator=_seeded(args.seed)), device)
    sp, t_sp = _timed(lambda: splitting(model, x, y, eps=eps, n_particles=args.particles,
                                        mh_steps=args.mh_steps, generator=_seeded(args.seed)),
                      device)
    estimate = sp.probability.item()
    return [name, exact, mc.probability.item(), mc.upper.item(), estimate,
            None if exact is None else estimate / exact, len(sp.levels[0]),
            "yes" if sp.stopped.item() else "no", t_mc, t_sp]


def table_splitting(args, device) -> str:
    half = torch.full((1, 1, 1, D), 0.5, device=device)
    zero = torch.zeros(1, dtype=torch.long, device=device)
    rows = [_row(f"sum of {D} >= {float(t):g}", irwin_hall_tail(t), sum_classifier(float(t), device),
                 half, zero, 0.5, args, device)
            for t in (Fraction(5), Fraction(6), Fraction(7), Fraction(15, 2), Fraction(38, 5))]
    model = models.pretrained("digits-mlp", device=device)
    x, y = (t[:1].to(device) for t in data.digits("test"))
    rows += [_row(f"digits-mlp, test image 0, eps {eps:g}", None, model, x, y, eps, args, device)
             for eps in args.eps]
    return "\n".join([
        f"### Splitting ({args.particles} particles, rho 0.1, {args.mh_steps} moves per level) "
        f"and naive Monte Carlo ({args.mc_n} samples), {device.type}", "",
        markdown_table(["event", "exact", "Monte Carlo", "MC 95 % upper", "splitting",
                        "splitting / exact", "levels", "stopped", "MC s", "splitting s"], rows,
                       decimals=[None] * 8 + [2, 2])])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--n-batches", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--radius", type=float, default=2.0)
    p.add_argument("--norm", type=lambda s: math.inf if s == "inf" else int(s), default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mc-n", type=int, default=100_000)
    p.add_argument("--particles", type=int, default=4000)
    p.add_argument("--mh-steps", type=int, default=30)
    p.add_argument("--eps", type=float, nargs="*", default=[0.1, 0.15, 0.2, 0.3])
    p.add_argument("--skip", choices=["art", "split"], action="append", default=[])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    logging.getLogger("art").setLevel(logging.ERROR)
    if "art" not in args.skip:
        try:
            import art
        except ImportError:
            print("ART is not installed (pip install --no-deps adversarial-robustness-toolbox): "
                  "the CLEVER comparison (table 1) is skipped\n")
        else:
            print(table_clever(art, args, device), "\n")
    if "split" not in args.skip:
        print(table_splitting(args, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
