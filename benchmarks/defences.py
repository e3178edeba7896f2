"""Benchmark robustlab's adversarial training against the reference library ART, and its fast
adversarial training methods against PGD-AT.

    python benchmarks/defences.py [--device cpu|cuda] [--epochs E] [--steps K] [--replays M]
                                  [--seed S] [--rounds R] [--skip art|fast]

Table 1: one epoch of PGD-AT, `robustlab.defences.pgd_at` through `robustlab.train.fit`, against
ART's `AdversarialTrainerMadryPGD` (Adversarial Robustness Toolbox): the same digits CNN from
the same initial weights, the same training images, batch size, optimiser and attack (L-inf
eps, step size, steps, one random start). Each library trains `--epochs` epochs in this one
process, `--rounds` times (2), in turn; the table gives each library's best epoch time, the
time ratio robustlab / ART, and the clean and PGD-20 test accuracy each reached (both measured
by robustlab with the same attack and seed).

Table 2: Fast-AT (Wong et al. 2020, one FGSM step from a random start), Free-AT (Shafahi et al.
2019, `--replays` replays: epochs / replays passes), YOPO-3-3, AWP on PGD-AT and standard
training, each trained for the same `--epochs` from the same weights, `--rounds` times in
turn: best total training time, the ratio to PGD-AT's, and clean and PGD-20 accuracy.

`--seed` seeds everything random: the initial weights, the shuffling, the attacks' random starts
(in both libraries) and the PGD-20 evaluation's start.

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


def accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               seed: int = 0) -> tuple[float, float]:
    """(clean accuracy, accuracy under PGD-20 at EPS with one seeded random start)."""
    x_adv = pgd(model, x, y, eps=EPS, alpha=2.5 * EPS / 20, steps=20, generator=_seeded(seed))
    return evaluate(model, (x, y)), evaluate(model, (x_adv, y))


class ARTBatches:
    """The training batches in ART's order, for `--same-draws`: each epoch one
    ``np.random.shuffle`` of the indices, then per batch the permutation of its rows that ART's
    AdversarialTrainer draws for its adversarial ids (ratio 1), applied to the batch, so that
    the NumPy stream is consumed as in ART and start row j goes to the same example in both."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        ind = np.arange(len(self.x))
        np.random.shuffle(ind)
        for start in range(0, len(ind), self.batch_size):
            rows = ind[start:start + self.batch_size]
            perm = np.arange(len(rows))
            np.random.shuffle(perm)
            rows = torch.from_numpy(rows[perm])
            yield self.x[rows], self.y[rows]


@contextlib.contextmanager
def art_starts(generator: torch.Generator):
    """ART's PGD draws its L-inf random starts from `generator` as robustlab's PGD does
    (uniform in the cube, the same float32 arithmetic), instead of from NumPy."""
    import art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch as art_pgd

    def draw(n, m, radius, norm):
        assert norm in (np.inf, "inf"), norm
        return ((torch.rand((n, m), generator=generator) * 2 - 1) * radius).numpy()

    original, art_pgd.random_sphere = art_pgd.random_sphere, draw
    try:
        yield
    finally:
        art_pgd.random_sphere = original


def ours_pgd_at(model, train, args, device) -> list[float]:
    """Train with robustlab's PGD-AT; the seconds of each epoch."""
    stamps = []

    def clock(model, row):
        _sync(device)
        stamps.append(time.perf_counter())

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if args.same_draws:
        np.random.seed(args.seed)
        train = ARTBatches(*train, args.batch_size)
    _sync(device)
    stamps.append(time.perf_counter())
    fit(model, train, epochs=args.epochs, optimizer=opt, batch_size=args.batch_size,
        device=device, progress=False, seed=args.seed, after_epoch=clock,
        objective=pgd_at(eps=EPS, alpha=args.alpha, steps=args.steps,
                         generator=_seeded(args.seed)))
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
    np.random.seed(args.seed)  # ART draws its shuffling and random starts from NumPy
    torch.manual_seed(args.seed)
    seconds = []
    with art_starts(_seeded(args.seed)) if args.same_draws else contextlib.nullcontext():
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
    # rounds with the libraries in turn, each first every other round, so that a load spike on a
    # shared machine hits both alike; training is seeded, so every round reaches the same weights
    for r in range(args.rounds):
        for lib in ("robustlab", "ART")[::1 if r % 2 == 0 else -1]:
            model = copy.deepcopy(init).to(device)
            seconds[lib] += (ours_pgd_at(model, train, args, device) if lib == "robustlab"
                             else art_pgd_at(art, model, train, args, device))
            model.eval()
            rows[lib] = (min(seconds[lib]), *accuracies(model, *test, seed=args.seed))
            print(f"  done: PGD-AT, {lib}", file=sys.stderr, flush=True)
    ratio = rows["robustlab"][0] / rows["ART"][0]
    head = ["method", "epochs", "robustlab s/epoch", "ART s/epoch", "time ratio",
            "robustlab clean", "ART clean", "robustlab PGD-20", "ART PGD-20"]
    r, a = rows["robustlab"], rows["ART"]
    return markdown_table(head, [[f"PGD-AT (eps {EPS}, step {args.alpha}, {args.steps} steps)",
                                  args.epochs, f"{r[0]:.3f}", f"{a[0]:.3f}", f"{ratio:.2f}",
                                  _pct(r[1]), _pct(a[1]), _pct(r[2]), _pct(a[2])]])


def table_fast(init, train, test, args, device) -> str:
    common = dict(batch_size=args.batch_size, device=device, progress=False, seed=args.seed,
                  lr=args.lr)

    def g():
        return _seeded(args.seed)

    methods = {
        f"PGD-AT ({args.steps} steps)": lambda m: fit(
            m, train, epochs=args.epochs, **common,
            objective=pgd_at(eps=EPS, alpha=args.alpha, steps=args.steps, generator=g())),
        "Fast-AT (FGSM, random start)": lambda m: fit(
            m, train, epochs=args.epochs, **common, objective=fast_at(eps=EPS, generator=g())),
        f"Free-AT (m = {args.replays})": lambda m: free_at(
            m, train, eps=EPS, epochs=args.epochs, replays=args.replays, **common),
        "YOPO-3-3": lambda m: yopo(m, train, eps=EPS, alpha=args.alpha, m=3, n=3,
                                   epochs=args.epochs, generator=g(), **common),
        f"AWP on PGD-AT ({args.steps} steps)": lambda m: awp(
            m, train, eps=EPS, alpha=args.alpha, steps=args.steps, epochs=args.epochs,
            generator=g(), **common),
        "standard training (reference)": lambda m: fit(m, train, epochs=args.epochs, **common),
    }
    times = {name: [] for name in methods}
    scores = {}
    for r in range(args.rounds):  # rounds in turn, each the other way round; the best time counts
        for name in list(methods)[::1 if r % 2 == 0 else -1]:
            model = copy.deepcopy(init).to(device)
            _sync(device)
            start = time.perf_counter()
            methods[name](model)
            _sync(device)
            times[name].append(time.perf_counter() - start)
            scores[name] = accuracies(model, *test, seed=args.seed)  # seeded: the same each round
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
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffling, attack starts")
    p.add_argument("--rounds", type=int, default=2, help="timed runs of each method; the best counts")
    p.add_argument("--same-draws", action="store_true",
                   help="table 1: both libraries take ART's shuffling and the same random starts")
    p.add_argument("--train-n", type=int, help="train on the first N training images (default: all)")
    p.add_argument("--skip", nargs="+", default=[], choices=["art", "fast"],
                   help="leave out table 1 (PGD-AT against ART) or table 2 (fast methods)")
    args = p.parse_args(argv)
    for name in ("epochs", "steps", "replays", "batch_size", "rounds", "train_n"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if "fast" not in args.skip and args.epochs % args.replays:
        p.error("--epochs must be a multiple of --replays (Free-AT makes epochs / replays passes)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return 2
    seed_everything(args.seed)
    init = ARCHITECTURES["digits-cnn"]()
    train = tuple(t[:args.train_n] for t in data.digits("train"))
    test = tuple(t.to(device) for t in data.digits("test"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n### digits-cnn (fresh init, seed {args.seed}) on {device} ({where}, "
          f"{torch.get_num_threads()} threads), {len(train[0])} training and {len(test[0])} "
          f"test images, eps {EPS}, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.epochs} epochs; torch {torch.__version__}\n", flush=True)
    if "art" not in args.skip:
        try:
            import art
        except ImportError:
            print("ART is not installed: `pip install --no-deps adversarial-robustness-toolbox` "
                  "to compare PGD-AT with it; table 1 skipped.\n")
        else:
            print(f"PGD-AT against ART {art.__version__} (best epoch time of {args.rounds} x "
                  f"{args.epochs}"
                  + ("; the same shuffling and random starts in both" if args.same_draws else "")
                  + "):\n")
            print(table_art(art, init, train, test, args, device), flush=True)
    if "fast" not in args.skip:
        print(f"\nFast adversarial training against PGD-AT ({args.epochs} epochs each, best of "
              f"{args.rounds} runs):\n")
        print(table_fast(init, train, test, args, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
