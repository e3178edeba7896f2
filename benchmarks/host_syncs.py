"""Host synchronisations of every white-box iterative method at two step counts.

    python benchmarks/host_syncs.py [--device cpu|cuda] [--only NAME...]

A GPU stalls on every ``.item()``, ``bool(t)``, ``nonzero`` or boolean-mask index that Python
makes inside a per-step loop. The CPU cannot time that, so this script counts the calls (with
tests/syncs.py) while each method runs at a small and a large step count, on a few digits, and
prints one markdown table: a method whose loop never waits for the device has equal counts.
tests/test_host_syncs.py asserts the same on the same list, `white_box_methods()`; `rows`
builds the table for any such list (the black-box methods' script reuses it).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find tests/

from robustlab import data, models  # noqa: E402
from robustlab.attacks import BPDA, EOT, cw, deepfool, fgsm, lbfgs, patch, pgd, stadv  # noqa: E402
from robustlab.attacks.embedding import embedding_pgd  # noqa: E402
from robustlab.defences import (  # noqa: E402
    awp,
    deepfool_at,
    distillation,
    fast_at,
    fgsm_at,
    free_at,
    freelb,
    laplace_certify,
    latent_at,
    pgd_at,
    smooth_adv,
    trades,
    vat,
    wrm,
    yopo,
)
from robustlab.defences.smoothing import certify  # noqa: E402
from robustlab.defences.smoothing import predict as smoothed_predict  # noqa: E402
from robustlab.defences.transforms import bit_depth  # noqa: E402
from robustlab.tables import markdown_table  # noqa: E402
from robustlab.tokens import TokenCNN, token_task  # noqa: E402
from robustlab.train import fit  # noqa: E402
from robustlab.verify.training import crown_ibp, ibp  # noqa: E402
from tests.syncs import grows  # noqa: E402

N = 4          # images per attack: the counts do not depend on it
BATCH = 8      # batch size of the training runs and of smoothing's sampling


@dataclass
class Method:
    """One iterative method: `run(n)` runs it with `n` steps (or samples, or batches)."""

    name: str
    run: Callable[[int], object]
    small: int
    large: int
    what: str = "steps"
    early_stop: bool = False  # stops when done: its count follows the data, not only the steps


class Setup:
    """The model, images and data every method here runs on, on one device."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        x, y = data.digits("test")
        self.x_all, self.y_all = x.to(device), y.to(device)
        self.model = models.pretrained("digits-cnn").to(device)
        self.x, self.y = self.x_all[:N], self.y_all[:N]
        self.ids, self.labels = (t.to(device) for t in token_task(N, seq_len=8, vocab=20))
        # constant logits that favour class 3, and images labelled 3: no attack can succeed (the
        # input gradient is 0), so no early stop fires and every loop runs its full length
        lin = torch.nn.Linear(64, 10)
        with torch.no_grad():
            lin.weight.zero_()
            lin.bias.copy_(torch.arange(10.0) == 3)
        self.unfoolable = torch.nn.Sequential(torch.nn.Flatten(), lin).eval().to(device)
        self.threes = torch.full((N,), 3, device=device)

    def generator(self) -> torch.Generator:
        """A fresh seeded generator on the device: draws made there need no copy from the host."""
        return torch.Generator(self.device).manual_seed(0)

    def trainee(self) -> torch.nn.Module:
        """A fresh copy of the zoo CNN in train mode, so every run starts from the same weights."""
        return copy.deepcopy(self.model).train()


def attack_methods(s: Setup) -> list[Method]:
    """The white-box attacks: their step loops."""
    def attack(fn, key: str = "steps", **kw) -> Callable[[int], object]:
        return lambda n: fn(s.model, s.x, s.y, **{**kw, key: n})

    def stubborn(fn, **kw) -> Callable[[int], object]:
        return lambda n: fn(s.unfoolable, s.x, s.threes, steps=n, **kw)

    def wrapped(wrapper) -> Callable[[int], object]:
        return lambda n: pgd(wrapper(s.model), s.x, s.y, eps=0.1, alpha=0.02, steps=n,
                             generator=s.generator())

    def embedding(n: int):
        torch.manual_seed(0)
        net = TokenCNN(vocab=20, dim=4, channels=8).to(s.device)
        return embedding_pgd(net, s.ids, s.labels, eps=0.5, alpha=0.1, steps=n,
                             generator=s.generator())

    ball = dict(eps=0.1, alpha=0.02)
    return [
        Method("pgd-linf", lambda n: pgd(s.model, s.x, s.y, **ball, steps=n,
                                         generator=s.generator()), 2, 6),
        Method("pgd-l2", lambda n: pgd(s.model, s.x, s.y, eps=0.75, alpha=0.2, steps=n, norm="l2",
                                       generator=s.generator()), 2, 6),
        Method("pgd-l1", lambda n: pgd(s.model, s.x, s.y, eps=2.0, alpha=0.5, steps=n, norm="l1",
                                       generator=s.generator()), 2, 6),
        Method("fgsm (one step)", lambda n: fgsm(s.model, s.x, s.y, eps=0.1), 1, 1),
        Method("cw-l2", attack(cw, binary_steps=2), 10, 30, early_stop=True),
        Method("cw-linf", attack(cw, norm="linf", max_c=1.0), 10, 30, early_stop=True),
        Method("cw-l0", attack(cw, norm="l0", max_c=1.0), 10, 30, early_stop=True),
        Method("deepfool", attack(deepfool), 10, 30, early_stop=True),
        # the same with nothing to find: the early stops, read every steps // 10 steps, never fire
        Method("cw-l2 (unfoolable)", stubborn(cw, binary_steps=2, abort_early=False), 10, 30),
        Method("cw-linf (unfoolable)", stubborn(cw, norm="linf", max_c=1.0), 10, 30),
        Method("cw-l0 (unfoolable)", stubborn(cw, norm="l0", max_c=1.0), 10, 30),
        Method("deepfool (unfoolable)", stubborn(deepfool), 10, 30),
        Method("stadv", attack(stadv), 2, 6),
        Method("patch", lambda n: patch(s.model, s.x, s.y, size=3, steps=n, batch_size=2,
                                        generator=s.generator()), 2, 6),
        Method("eot-pgd", wrapped(lambda m: EOT(m, samples=2)), 2, 6),
        Method("bpda-pgd", wrapped(lambda m: BPDA(m, lambda x: bit_depth(x, 3))), 2, 6),
        Method("embedding-pgd", embedding, 2, 6),
        # scipy's L-BFGS-B asks for value and gradient on the host at every evaluation
        Method("lbfgs", attack(lbfgs, "max_iter", search_steps=1, targeted=False), 2, 6,
               what="max_iter", early_stop=True),
    ]


def defence_methods(s: Setup) -> list[Method]:
    """The defences: one training step as a function of the inner steps, the loops' steps,
    verified training per batch, and smoothing per batch of noise samples."""
    def one_step(make) -> Callable[[int], object]:
        def run(n: int):  # the objective's loss and the backward pass that `fit` makes
            out = make(n)(s.trainee(), s.x, s.y)
            (out[0] if isinstance(out, tuple) else out).backward()
        return run

    def loop(defence, key: str, **kw) -> Callable[[int], object]:
        return lambda n: defence(s.trainee(), (s.x_all[:BATCH], s.y_all[:BATCH]),
                                 batch_size=BATCH, device=s.device, progress=False,
                                 **{key: n, **kw})

    def batches(make) -> Callable[[int], object]:
        return lambda n: fit(s.trainee(), (s.x_all[: n * BATCH], s.y_all[: n * BATCH]), epochs=1,
                             objective=make(), batch_size=BATCH, device=s.device, progress=False)

    def smoothing(fn) -> Callable[[int], object]:
        extra = dict(n0=BATCH) if fn is certify else {}
        return lambda n: fn(s.model, s.x, sigma=0.25, n=n * BATCH, batch_size=BATCH,
                            generator=s.generator(), **extra)

    def freelb_run(n: int):
        torch.manual_seed(0)
        net = TokenCNN(vocab=20, dim=4, channels=8).to(s.device)
        return freelb(net, (s.ids, s.labels), eps=0.5, alpha=0.1, steps=n, epochs=1,
                      batch_size=N, device=s.device, progress=False, generator=s.generator())

    inner = dict(eps=0.1, alpha=0.02)
    return [
        Method("pgd_at", one_step(lambda n: pgd_at(**inner, steps=n, generator=s.generator())),
               2, 6),
        Method("trades", one_step(lambda n: trades(**inner, steps=n, generator=s.generator())),
               2, 6),
        Method("vat", one_step(lambda n: vat(eps=0.5, power_iterations=n,
                                             generator=s.generator())),
               2, 6, what="power iterations"),
        Method("wrm", one_step(lambda n: wrm(steps=n)), 2, 6),
        Method("smooth_adv", one_step(lambda n: smooth_adv(sigma=0.25, eps=0.5, steps=n,
                                                           samples=2, generator=s.generator())),
               2, 6),
        Method("deepfool_at", one_step(lambda n: deepfool_at(steps=n)), 10, 30, early_stop=True),
        Method("fast_at (one step)", one_step(lambda n: fast_at(eps=0.1, generator=s.generator())),
               1, 1),
        Method("fgsm_at (one step)", one_step(lambda n: fgsm_at(eps=0.1)), 1, 1),
        # one pass over one batch: epochs = replays
        Method("free_at", lambda n: loop(free_at, "replays", eps=0.1, epochs=n)(n), 2, 6,
               what="replays"),
        Method("yopo", loop(yopo, "m", **inner, epochs=1, generator=s.generator()), 2, 6,
               what="m"),
        Method("yopo (n)", loop(yopo, "n", **inner, m=2, epochs=1, generator=s.generator()), 2, 6,
               what="n"),
        Method("awp", loop(awp, "steps", **inner, epochs=1, generator=s.generator()), 2, 6),
        Method("latent_at", loop(latent_at, "steps", **inner, epochs=1, generator=s.generator()),
               2, 6),
        Method("latent_at (d_steps)", loop(latent_at, "d_steps", **inner, epochs=1,
                                           generator=s.generator()), 2, 6, what="d_steps"),
        Method("freelb", freelb_run, 2, 6),
        Method("fit ibp", batches(lambda: ibp(eps=0.05)), 1, 3, what="batches"),
        Method("fit crown_ibp", batches(lambda: crown_ibp(eps=0.05)), 1, 3, what="batches"),
        Method("distillation", lambda n: distillation(
            s.trainee(), s.trainee(), (s.x_all[: n * BATCH], s.y_all[: n * BATCH]), epochs=1,
            batch_size=BATCH, device=s.device, progress=False), 1, 3, what="batches"),
        Method("smoothing certify", smoothing(certify), 2, 8, what="n / batch"),
        Method("smoothing predict", smoothing(smoothed_predict), 2, 8, what="n / batch"),
        Method("laplace certify", lambda n: laplace_certify(
            s.model, s.x, scale=0.25, n0=BATCH, n=n * BATCH, batch_size=BATCH,
            generator=s.generator()), 2, 8, what="n / batch"),
    ]


def white_box_methods(device: str = "cpu") -> list[Method]:
    """Every white-box iterative method, run on `device`."""
    s = Setup(device)  # made before anything is counted
    return attack_methods(s) + defence_methods(s)


def rows(methods: list[Method]) -> list[list]:
    """One table row per method: name, what is counted, syncs at the small and large count."""
    out = []
    for m in methods:
        a, b = grows(m.run, m.small, m.large)
        out.append([m.name, m.what, f"{m.small} -> {m.large}", a.total, b.total,
                    "yes" if b.total > a.total else "no", "yes" if m.early_stop else "no"])
    return out


HEADERS = ["method", "counted", "steps", "syncs (small)", "syncs (large)", "grows",
           "stops early"]

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (the default) or cuda")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these methods only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = [m for m in white_box_methods(args.device) if not args.only or m.name in args.only]
    if not methods:
        parser.error(f"--only names no method: {args.only}")
    print(markdown_table(HEADERS, rows(methods)))


if __name__ == "__main__":
    main()
