"""Every defence of `robustlab.defences` on the digits in one table, FreeLB on the token task,
and the check of issue 9's claim about Fast-AT.

    python benchmarks/defence_methods.py [--device cpu|cuda] [--epochs E] [--seeds 0 1]

Table 3 (the methods table): each defence trains the digits CNN (digits-cnn, or the Björck +
GroupSort MLP of its row) from the same initial weights of a seed, on the same training images,
for the same `--epochs` epochs with Adam (`--lr`) and batch 64, then is measured on the test
images: clean accuracy, PGD-20 accuracy (L-inf eps 0.1, step 2.5 eps / 20, one seeded random
start) and the `robustlab.evaluate.worst_case` ensemble's robust accuracy at the same eps (PGD
on CE, on DLR, targeted on the top 3 classes, 50 steps each, then Square with
`--square-queries` queries). Time is the training's CPU time (`time.process_time`, with torch
on one thread) divided by standard training's; on CUDA, wall time after a synchronize.

Table 4: FreeLB (Zhu et al. 2020) against standard training of `robustlab.tokens.TokenCNN` on
the keyword task, clean and embedding-PGD accuracy (L2 ball of radius 1 per sequence).

Table 5: issue 9's claim "Fast-AT lands within 3 pp of PGD-AT's robust accuracy in no more than
a third of its time", in Wong, Rice and Kolter's MNIST setting scaled to the digits: Fast-AT
(FGSM from a uniform random start, step 1.25 eps) and PGD-AT with Madry et al.'s 40 steps of
0.01, the same epochs, both with the cyclic learning rate of Wong et al. (Adam, per batch, peak
`--max-lr` at 2/5 of training), for each seed; a verdict line per seed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch import nn

from robustlab import data, seed_everything
from robustlab.attacks import pgd
from robustlab.attacks.embedding import embedding_robust_accuracy
from robustlab.defences import (
    BjorckLinear,
    GroupSort,
    augmented,
    awp,
    cyclic_lr,
    fast_at,
    fgsm_at,
    free_at,
    freelb,
    latent_at,
    parseval,
    pgd_at,
    spectral_normalised,
    trades,
    vat,
    weight_correlation,
    wrm,
    yopo,
)
from robustlab.defences.smoothing import gaussian_noise
from robustlab.evaluate import worst_case
from robustlab.evaluate.ensemble import default_attacks
from robustlab.models import ARCHITECTURES
from robustlab.tables import markdown_table
from robustlab.tokens import TokenCNN, token_task
from robustlab.train import evaluate, fit

EPS = 0.1  # digits are 8x8 in [0, 1]: larger than CIFAR's 8/255
ALPHA, STEPS = 0.025, 7  # the inner PGD of every PGD-based defence in table 3 (as table 2)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Clock:
    """CPU seconds on CPU (one thread: steadier than wall time on a shared machine), wall
    seconds after a synchronize on CUDA (kernels are asynchronous)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()


def bjorck_net() -> nn.Module:
    """A gradient-norm-preserving MLP (Anil et al. 2019): Björck-orthonormal layers, MaxMin."""
    return nn.Sequential(nn.Flatten(), BjorckLinear(64, 64), GroupSort(2), BjorckLinear(64, 64),
                         GroupSort(2), BjorckLinear(64, 10))


def scores(model: nn.Module, x, y, args, seed: int) -> tuple[float, float, float]:
    """(clean, PGD-20, worst-case ensemble) accuracy at EPS."""
    x_adv = pgd(model, x, y, eps=EPS, alpha=2.5 * EPS / 20, steps=20, generator=_seeded(seed))
    attacks = default_attacks(eps=EPS, square_queries=args.square_queries, generator=_seeded(seed))
    worst = worst_case(model, x, y, eps=EPS, attacks=attacks)
    return evaluate(model, (x, y)), evaluate(model, (x_adv, y)), worst.robust_accuracy


def _fit(make=None, *, retract: bool = False):
    """train(model, data, common, epochs): `fit` with the Objective `make()` (plain CE if None),
    with Parseval's retraction after every optimiser step when `retract`."""
    def train(m, data_, common, epochs):
        extra = {} if make is None else {"objective": make()}
        if not retract:
            return fit(m, data_, epochs=epochs, **extra, **common)
        opt = torch.optim.Adam(m.parameters(), lr=common["lr"])
        hook = parseval(opt, m)
        try:
            fit(m, data_, epochs=epochs, optimizer=opt, **extra,
                **{k: v for k, v in common.items() if k != "lr"})
        finally:
            hook.remove()
    return train


def methods(seed: int, epochs: int, replays: int) -> dict:
    """name -> (kind, note, build(init) -> model to train, train(model, data, common, epochs))."""
    def g():
        return _seeded(seed)

    def pgd7():
        return pgd_at(eps=EPS, alpha=ALPHA, steps=STEPS, generator=g())

    same, sn = copy.deepcopy, spectral_normalised

    def bj(init):
        torch.manual_seed(seed)
        return bjorck_net()

    def dropout(init):  # the same weights, dropout (p 0.3) before the classifier's last layer
        model = copy.deepcopy(init)
        model.insert(len(model) - 1, nn.Dropout(0.3))
        return model

    return {
        "standard training": ("CE", "the time reference", same, _fit()),
        "FGSM-AT": ("objective", "w = 0.5, no random start", same,
                    _fit(lambda: fgsm_at(eps=EPS))),
        "PGD-AT": ("objective", f"{STEPS} steps of {ALPHA}, random start", same, _fit(pgd7)),
        "Fast-AT": ("objective", "step 1.25 eps, random start; constant lr here, see table 5",
                    same, _fit(lambda: fast_at(eps=EPS, generator=g()))),
        "Free-AT": ("loop", f"m = {replays}: {epochs // replays} passes over the data",
                    same, lambda m, t, c, e: free_at(m, t, eps=EPS, epochs=e, replays=replays,
                                                     **c)),
        "YOPO-3-3": ("loop", f"step {ALPHA}", same,
                     lambda m, t, c, e: yopo(m, t, eps=EPS, alpha=ALPHA, m=3, n=3, epochs=e,
                                             generator=g(), **c)),
        "AWP on PGD-AT": ("loop", f"gamma 5e-3, PGD-{STEPS}", same,
                          lambda m, t, c, e: awp(m, t, eps=EPS, alpha=ALPHA, steps=STEPS,
                                                 epochs=e, generator=g(), **c)),
        "TRADES": ("objective", f"beta 6, KL-PGD-{STEPS}", same,
                   _fit(lambda: trades(eps=EPS, alpha=ALPHA, steps=STEPS, generator=g()))),
        "VAT": ("objective", "L2 eps 0.5 (MNIST's 2.0 scaled to 8x8), 1 power iteration",
                same, _fit(lambda: vat(eps=0.5, generator=g()))),
        "WRM": ("objective", "gamma 0.385, 15 steps (reference code's MNIST)", same,
                _fit(wrm)),
        "ATLD (latent AT)": ("loop", "1 step of eps, 2 D steps per batch, beta 0.05", same,
                             lambda m, t, c, e: latent_at(m, t, eps=EPS, alpha=EPS, epochs=e,
                                                          generator=g(), **c)),
        "Gaussian noise": ("objective", "sigma 0.25; the base classifier, not smoothed", same,
                           _fit(lambda: gaussian_noise(sigma=0.25, generator=g()))),
        "weight decay": ("regulariser", "fit(weight_decay=5e-4): Adam's L2 penalty", same,
                         lambda m, t, c, e: fit(m, t, epochs=e, weight_decay=5e-4, **c)),
        "dropout": ("regulariser", "p 0.3 before the last layer", dropout, _fit()),
        "data augmentation": ("regulariser", "random shifts of up to 1 pixel", same,
                              _fit(lambda: augmented(shift=1, generator=g()))),
        "spectral norm, CE": ("regulariser", "every conv and linear layer", sn, _fit()),
        "spectral norm, PGD-AT": ("regulariser", f"PGD-{STEPS} as PGD-AT", sn, _fit(pgd7)),
        "Parseval, CE": ("regulariser", "retraction beta 3e-4 after each step", same,
                         _fit(retract=True)),
        "Parseval, PGD-AT": ("regulariser", f"PGD-{STEPS} as PGD-AT", same,
                             _fit(pgd7, retract=True)),
        "weight correlation, CE": ("regulariser", "weight 1e-2", same,
                                   _fit(weight_correlation)),
        "weight correlation, PGD-AT": ("regulariser", f"PGD-{STEPS} as PGD-AT", same,
                                       _fit(lambda: weight_correlation(pgd7()))),
        "Björck + GroupSort, CE": ("architecture", "MLP 64-64-10, MaxMin, its own init", bj,
                                   _fit()),
        "Björck + GroupSort, PGD-AT": ("architecture", f"PGD-{STEPS} as PGD-AT", bj,
                                       _fit(pgd7)),
    }


def table_methods(train, test, args, device) -> str:
    """Table 3: every method, every seed; time / standard training per seed, then the mean."""
    clock = Clock(device)
    common = dict(batch_size=args.batch_size, device=device, progress=False, lr=args.lr)
    rows: dict[str, list] = {}
    for seed in args.seeds:
        seed_everything(seed)
        init = ARCHITECTURES["digits-cnn"]()
        for name, (kind, note, build, train_fn) in methods(seed, args.epochs, args.replays).items():
            if args.only and name not in args.only:
                continue
            model = build(init).to(device)
            start = clock()
            train_fn(model, train, {**common, "seed": seed}, args.epochs)
            seconds = clock() - start
            rows.setdefault(name, [kind, note, []])[2].append(
                (seconds, *scores(model, *test, args, seed)))
            print(f"  seed {seed}: {name} {seconds:.1f} s", file=sys.stderr, flush=True)
    base = {i: rows["standard training"][2][i][0] for i in range(len(args.seeds))} \
        if "standard training" in rows else None
    out = []
    for name, (kind, note, runs) in rows.items():
        ratio = (" / ".join(f"{r[0] / base[i]:.1f}" for i, r in enumerate(runs))
                 if base else "-")
        cells = [" / ".join(_pct(r[j]) for r in runs) for j in (1, 2, 3)]
        out.append([name, kind, ratio, *cells, note])
    head = ["method", "kind", "time / standard", "clean", "PGD-20", "worst case", "setting"]
    return markdown_table(head, out)


def table_freelb(args, device) -> str:
    """Table 4: FreeLB against standard training on the token task, one row per method."""
    clock = Clock(device)
    train, (te, yt) = token_task(1000, seed=0), token_task(300, seed=1)
    te, yt = te.to(device), yt.to(device)
    runs: dict[str, list] = {"standard training": [], "FreeLB-3 (eps 1, step 0.5)": []}
    for seed in args.seeds:
        for name in runs:
            torch.manual_seed(seed)
            model = TokenCNN().to(device)
            start = clock()
            if name.startswith("FreeLB"):
                freelb(model, train, eps=1.0, alpha=0.5, steps=3, epochs=args.token_epochs,
                       lr=1e-2, device=device, progress=False, seed=seed,
                       generator=_seeded(seed))
            else:
                fit(model, train, epochs=args.token_epochs, lr=1e-2, device=device,
                    progress=False, seed=seed)
            seconds = clock() - start
            robust = embedding_robust_accuracy(model, te, yt, eps=1.0, alpha=0.25, steps=10,
                                               generator=_seeded(seed))
            runs[name].append((seconds, evaluate(model, (te, yt)), robust))
    base = runs["standard training"]
    rows = [[name, " / ".join(f"{r[0] / b[0]:.1f}" for r, b in zip(rs, base)),
             " / ".join(_pct(r[1]) for r in rs), " / ".join(_pct(r[2]) for r in rs)]
            for name, rs in runs.items()]
    return markdown_table(["method", "time / standard", "clean", "embedding PGD-10"], rows)


def table_claim(train, test, args, device) -> tuple[str, list[str]]:
    """Table 5 and one verdict line per seed for 'Fast-AT within 3 pp of PGD-AT's robust
    accuracy in at most a third of its time'."""
    clock = Clock(device)
    steps_per_epoch = -(-len(train[0]) // args.batch_size)
    out, verdicts = [], []
    for seed in args.seeds:
        seed_everything(seed)
        init = ARCHITECTURES["digits-cnn"]()
        res = {}
        inner = {"PGD-AT (40 steps of 0.01)": pgd_at(eps=EPS, alpha=0.01, steps=40,
                                                     generator=_seeded(seed)),
                 "Fast-AT (FGSM, step 1.25 eps)": fast_at(eps=EPS, generator=_seeded(seed))}
        for name, objective in inner.items():
            model = copy.deepcopy(init).to(device)
            opt = torch.optim.Adam(model.parameters())
            sched = cyclic_lr(opt, epochs=args.claim_epochs, steps_per_epoch=steps_per_epoch,
                              max_lr=args.max_lr, per_batch=True)
            start = clock()
            fit(model, train, epochs=args.claim_epochs, objective=objective, optimizer=opt,
                batch_size=args.batch_size, device=device, progress=False, seed=seed)
            res[name] = (clock() - start, *scores(model, *test, args, seed))
            sched.hook.remove()
            print(f"  claim seed {seed}: {name} {res[name][0]:.1f} s", file=sys.stderr, flush=True)
        (p_name, p), (f_name, f) = res.items()
        for name, r in res.items():
            out.append([seed, name, f"{r[0]:.1f}", f"{r[0] / p[0]:.2f}", *map(_pct, r[1:])])
        ratio, gap = f[0] / p[0], 100 * (p[2] - f[2])
        holds = ratio <= 1 / 3 and gap <= 3
        verdicts.append(f"seed {seed}: claim {'HOLDS' if holds else 'MISSES'}: Fast-AT takes "
                        f"{ratio:.2f} x PGD-AT's time (<= 0.33 needed) and its PGD-20 accuracy "
                        f"is {gap:.1f} pp below PGD-AT's (<= 3 needed; worst case: "
                        f"{100 * (p[3] - f[3]):.1f} pp)")
    head = ["seed", "method", "train s", "time / PGD-AT", "clean", "PGD-20", "worst case"]
    return markdown_table(head, out), verdicts


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--epochs", type=int, default=16, help="table 3 epochs (a multiple of --replays)")
    p.add_argument("--replays", type=int, default=4, help="Free-AT replays")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, table 3")
    p.add_argument("--square-queries", type=int, default=1000, help="worst case's Square")
    p.add_argument("--token-epochs", type=int, default=8)
    p.add_argument("--claim-epochs", type=int, default=10, help="table 5 epochs (Wong: 10)")
    p.add_argument("--max-lr", type=float, default=5e-3, help="table 5 peak lr (Wong: 5e-3)")
    p.add_argument("--train-n", type=int, help="train on the first N training images (default: all)")
    p.add_argument("--test-n", type=int, help="measure on the first N test images (default: all)")
    p.add_argument("--only", nargs="+", help="table 3 rows to run (names as printed)")
    p.add_argument("--skip", nargs="+", default=[], choices=["methods", "freelb", "claim"])
    args = p.parse_args(argv)
    for name in ("epochs", "replays", "batch_size", "square_queries", "token_epochs",
                 "claim_epochs", "train_n", "test_n"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs % args.replays:
        p.error("--epochs must be a multiple of --replays (Free-AT makes epochs / replays passes)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here")
        return 2
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread: comparable across methods
    train = tuple(t[:args.train_n] for t in data.digits("train"))
    test = tuple(t[:args.test_n].to(device) for t in data.digits("test"))
    # warm-up, untimed: the first training in a process pays for lazy initialisation
    fit(ARCHITECTURES["digits-cnn"](), (train[0][:256], train[1][:256]), epochs=1,
        objective=pgd_at(eps=EPS, alpha=ALPHA, steps=2), device=device, progress=False)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, 1 thread"
    timing = "wall time" if device.type == "cuda" else "CPU time (time.process_time)"
    print(f"\n### Defences on the digits ({device}: {where}; torch {torch.__version__}), "
          f"{len(train[0])} training and {len(test[0])} test images, L-inf eps {EPS}, batch "
          f"{args.batch_size}, seeds {' / '.join(map(str, args.seeds))}; times are training "
          f"{timing}\n", flush=True)
    if "methods" not in args.skip:
        print(f"Every method, digits-cnn from the seed's initial weights, {args.epochs} epochs, "
              f"Adam lr {args.lr}; worst case: PGD-CE, PGD-DLR, targeted PGD (50 steps), "
              f"Square ({args.square_queries} queries). Cells: seed "
              f"{' / '.join(map(str, args.seeds))}.\n")
        print(table_methods(train, test, args, device), flush=True)
    if "freelb" not in args.skip:
        print(f"\nFreeLB on the token task (TokenCNN, 1000 training and 300 test sequences, "
              f"{args.token_epochs} epochs, Adam lr 1e-2; embedding PGD: L2 eps 1 per "
              f"sequence, 10 steps of 0.25):\n")
        print(table_freelb(args, device), flush=True)
    if "claim" not in args.skip:
        print(f"\nIssue 9's claim: Fast-AT vs PGD-40, {args.claim_epochs} epochs each, Adam "
              f"with Wong et al.'s cyclic lr (per batch, peak {args.max_lr} at 2/5):\n")
        table, verdicts = table_claim(train, test, args, device)
        print(table + "\n\n" + "\n".join(verdicts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
