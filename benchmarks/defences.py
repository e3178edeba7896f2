"""Benchmark robustlab's adversarial training against the reference library ART, and its fast
adversarial training methods against PGD-AT.

    python benchmarks/defences.py [--device cpu|cuda] [--epochs E] [--steps K] [--replays M]

Table 1: one epoch of PGD-AT, `robustlab.defences.pgd_at` through `robustlab.train.fit`, against
ART's `AdversarialTrainerMadryPGD` (Adversarial Robustness Toolbox): the same digits CNN from
the same initial weights, the same training images, batch size, optimiser and attack (L-inf
eps, step size, steps, one random start). Each library trains `--epochs` epochs in this one
process, twice, in turn; the table gives each library's best epoch time, the time ratio robustlab / ART, and
the clean and PGD-20 test accuracy each reached (both measured by robustlab with the same
attack and seed).

Table 2: Fast-AT (Wong et al. 2020, one FGSM step from a random start), Free-AT (Shafahi et al.
2019, `--replays` replays: epochs / replays passes), YOPO-3-3, AWP on PGD-AT and standard
training, each trained for the same `--epochs` from the same weights, twice in turn: best
total training time,
the ratio to PGD-AT's, and clean and PGD-20 accuracy.

ART is optional: without it (``pip install --no-deps adversarial-robustness-toolbox``) the
script says so and runs table 2 only. ``--no-deps`` keeps it from changing the pinned numpy
and scipy; ART imports with the project's own.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time

import numpy as np
import torch
from torch import nn

from robustlab import data, seed_everything
from robustlab.attacks import pgd
from robustlab.defences import awp, fast_at, free_at, pgd_at, yopo
from robustlab.models import ARCHITECTURES
from robustlab.tables import markdown_table
from robustlab.train import evaluate, fit

EPS = 0.1  # digits are 8x8 in [0, 1]: larger than CIFAR's 8/255


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels are asynchronous: wait, or we time only the launches
        torch.cuda.synchronize(device)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(clean accuracy, accuracy under PGD-20 at EPS with one fixed random start)."""
    x_adv = pgd(model, x, y, eps=EPS, alpha=2.5 * EPS / 20, steps=20, generator=_seeded(0))
    return evaluate(model, (x, y)), evaluate(model, (x_adv, y))


def ours_pgd_at(model, train, args, device) -> list[float]:
    """Train with robustlab's PGD-AT; the seconds of each epoch."""
    stamps = []

    def clock(model, row):
        _sync(device)
        stamps.append(time.perf_counter())

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    _sync(device)
    stamps.append(time.perf_counter())
    fit(model, train, epochs=args.epochs, optimizer=opt, batch_size=args.batch_size,
        device=device, progress=False, seed=0, after_epoch=clock,
        objective=pgd_at(eps=EPS, alpha=args.alpha, steps=args.steps, generator=_seeded(0)))
    return list(np.diff(stamps))


def art_pgd_at(art, model, train, args, device) -> list[float]:
    """Train with ART's AdversarialTrainerMadryPGD; the seconds of each epoch."""
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    x, y = (t.numpy() for t in train)
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
        optimizer=torch.optim.Adam(model.parameters(), lr=args.lr), clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu")
    trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=args.batch_size,
                                         eps=EPS, eps_step=args.alpha, max_iter=args.steps,
                                         num_random_init=1)
    # ART's PGD attacks in sub-batches of 32 by default: give it the training batch, as ours
    trainer.attack.set_params(batch_size=args.batch_size, verbose=False)
    np.random.seed(0)
    torch.manual_seed(0)
    seconds = []
    for _ in range(args.epochs):
        _sync(device)
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # ART's progress bars
            trainer.fit(x, y, nb_epochs=1, batch_size=args.batch_size)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def table_art(art, init, train, test, args, device) -> str:
    rows, seconds = {}, {"robustlab": [], "ART": []}
    # two rounds, the libraries in turn and each first once, so that a load spike on a shared
    # machine hits both alike; training is seeded, so both rounds reach the same weights
    for order in (("robustlab", "ART"), ("ART", "robustlab")):
        for lib in order:
            model = copy.deepcopy(init).to(device)
            seconds[lib] += (ours_pgd_at(model, train, args, device) if lib == "robustlab"
                             else art_pgd_at(art, model, train, args, device))
            model.eval()
            rows[lib] = (min(seconds[lib]), *accuracies(model, *test))
            print(f"  done: PGD-AT, {lib}", file=sys.stderr, flush=True)
    ratio = rows["robustlab"][0] / rows["ART"][0]
    head = ["method", "epochs", "robustlab s/epoch", "ART s/epoch", "time ratio",
            "robustlab clean", "ART clean", "robustlab PGD-20", "ART PGD-20"]
    r, a = rows["robustlab"], rows["ART"]
    return markdown_table(head, [[f"PGD-AT (eps {EPS}, step {args.alpha}, {args.steps} steps)",
                                  args.epochs, f"{r[0]:.3f}", f"{a[0]:.3f}", f"{ratio:.2f}",
                                  _pct(r[1]), _pct(a[1]), _pct(r[2]), _pct(a[2])]])


def table_fast(init, train, test, args, device) -> str:
    common = dict(batch_size=args.batch_size, device=device, progress=False, seed=0, lr=args.lr)
    methods = {
        f"PGD-AT ({args.steps} steps)": lambda m: fit(
            m, train, epochs=args.epochs, **common,
            objective=pgd_at(eps=EPS, alpha=args.alpha, steps=args.steps, generator=_seeded(0))),
        "Fast-AT (FGSM, random start)": lambda m: fit(
            m, train, epochs=args.epochs, **common, objective=fast_at(eps=EPS, generator=_seeded(0))),
        f"Free-AT (m = {args.replays})": lambda m: free_at(
            m, train, eps=EPS, epochs=args.epochs, replays=args.replays, **common),
        "YOPO-3-3": lambda m: yopo(m, train, eps=EPS, alpha=args.alpha, m=3, n=3,
                                   epochs=args.epochs, generator=_seeded(0), **common),
        f"AWP on PGD-AT ({args.steps} steps)": lambda m: awp(
            m, train, eps=EPS, alpha=args.alpha, steps=args.steps, epochs=args.epochs,
            generator=_seeded(0), **common),
        "standard training (reference)": lambda m: fit(m, train, epochs=args.epochs, **common),
    }
    times = {name: [] for name in methods}
    scores = {}
    for order in (list(methods), list(methods)[::-1]):  # two rounds in turn; the best time counts
        for name in order:
            model = copy.deepcopy(init).to(device)
            _sync(device)
            start = time.perf_counter()
            methods[name](model)
            _sync(device)
            times[name].append(time.perf_counter() - start)
            scores[name] = accuracies(model, *test)  # seeded: the same in both rounds
            print(f"  done: {name}", file=sys.stderr, flush=True)
    base = min(next(iter(times.values())))
    rows = [[name, f"{min(t):.2f}", f"{min(t) / base:.2f}", *map(_pct, scores[name])]
            for name, t in times.items()]
    return markdown_table(["method", "train s", "time / PGD-AT", "clean", "PGD-20"], rows)


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (a multiple of --replays)")
    p.add_argument("--steps", type=int, default=7, help="PGD-AT attack steps")
    p.add_argument("--alpha", type=float, default=0.025, help="PGD-AT attack step size")
    p.add_argument("--replays", type=int, default=4, help="Free-AT replays")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, every method")
    args = p.parse_args(argv)
    for name in ("epochs", "steps", "replays", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs % args.replays:
        p.error("--epochs must be a multiple of --replays (Free-AT makes epochs / replays passes)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return 2
    seed_everything(0)
    init = ARCHITECTURES["digits-cnn"]()
    train, test = data.digits("train"), tuple(t.to(device) for t in data.digits("test"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n### digits-cnn (fresh init, seed 0) on {device} ({where}, "
          f"{torch.get_num_threads()} threads), {len(train[0])} training and {len(test[0])} "
          f"test images, eps {EPS}, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.epochs} epochs; torch {torch.__version__}\n", flush=True)
    try:
        import art
    except ImportError:
        print("ART is not installed: `pip install --no-deps adversarial-robustness-toolbox` to "
              "compare PGD-AT with it; table 1 skipped.\n")
    else:
        print(f"PGD-AT against ART {art.__version__} (best epoch time of 2 x {args.epochs}):\n")
        print(table_art(art, init, train, test, args, device), flush=True)
    print(f"\nFast adversarial training against PGD-AT ({args.epochs} epochs each, best of 2 "
          f"runs):\n")
    print(table_fast(init, train, test, args, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
