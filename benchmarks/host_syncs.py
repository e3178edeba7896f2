"""Host synchronisations of every white-box iterative method at two step counts.

    python benchmarks/host_syncs.py

A GPU stalls on every ``.item()``, ``bool(t)``, ``nonzero`` or boolean-mask index that Python
makes inside a per-step loop. The CPU cannot time that, so this script counts the calls (with
tests/syncs.py) while each method runs at a small and a large step count, on a few digits, and
prints one markdown table: a method whose loop never waits for the device has equal counts.
tests/test_host_syncs.py asserts the same on the same list, `white_box_methods()`; `rows`
builds the table for any such list (the black-box methods' script reuses it).
"""

from __future__ import annotations

import copy
import functools
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find tests/

from robustlab import data, models  # noqa: E402
from robustlab.attacks import BPDA, EOT, cw, deepfool, fgsm, lbfgs, patch, pgd, stadv  # noqa: E402
from robustlab.attacks.embedding import embedding_pgd  # noqa: E402
from robustlab.defences import awp, fast_at, fgsm_at, free_at, pgd_at, trades, vat, wrm, yopo  # noqa: E402
from robustlab.defences.smoothing import certify  # noqa: E402
from robustlab.defences.smoothing import predict as smoothed_predict  # noqa: E402
from robustlab.defences.transforms import bit_depth  # noqa: E402
from robustlab.tables import markdown_table  # noqa: E402
from robustlab.tokens import TokenCNN, token_task  # noqa: E402
from robustlab.train import fit  # noqa: E402
from robustlab.verify.training import crown_ibp, ibp  # noqa: E402
from tests.syncs import HostSyncs  # noqa: E402

N = 4          # images per attack: the counts do not depend on it
BATCH = 8      # batch size of the training runs and of smoothing's sampling


class DeviceSyncs(HostSyncs):
    """HostSyncs without the reads of torch.optim's own step counters.

    Adam and the other optimisers keep their step count in a CPU tensor (unless capturable or
    fused) precisely so that reading it never waits for a GPU; on the CPU the counter cannot
    tell that read from one of the data's, so it leaves out every call made inside torch.optim.
    """

    def _record(self, what: str) -> None:
        if any("/torch/optim/" in f.filename.replace("\\", "/") for f in traceback.extract_stack()):
            return
        super()._record(what)


def count(run: Callable[[], object]) -> DeviceSyncs:
    with DeviceSyncs() as s:
        run()
    return s


def grows(run: Callable[[int], object], small: int, large: int) -> tuple[DeviceSyncs, DeviceSyncs]:
    """`run(n)` at two step counts; both records (equal totals: the loop never syncs)."""
    return count(lambda: run(small)), count(lambda: run(large))


@dataclass
class Method:
    """One iterative method: `run(n)` runs it with `n` steps (or samples, or batches)."""

    name: str
    run: Callable[[int], object]
    small: int
    large: int
    what: str = "steps"


@functools.cache
def _test_set() -> tuple[torch.Tensor, torch.Tensor]:
    return data.digits("test")


@functools.cache
def _digits() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = _test_set()
    return models.pretrained("digits-cnn"), x[:N], y[:N]


def _trainee() -> torch.nn.Module:
    """A fresh copy of the zoo CNN in train mode, so every run starts from the same weights."""
    return copy.deepcopy(_digits()[0]).train()


def _one_step(objective) -> None:
    """One training step of `objective`: its loss and the backward pass that `fit` makes."""
    _, x, y = _digits()
    out = objective(_trainee(), x, y)
    (out[0] if isinstance(out, tuple) else out).backward()


def _train_batches(objective, n: int) -> None:
    """`fit` for one epoch over `n` batches of BATCH digits: the per-batch count."""
    x, y = _test_set()
    fit(_trainee(), (x[: n * BATCH], y[: n * BATCH]), epochs=1, objective=objective,
        batch_size=BATCH, device="cpu", progress=False)


def _loop(defence, n_key: str, n: int, **kw) -> None:
    x, y = _test_set()
    defence(_trainee(), (x[:BATCH], y[:BATCH]), batch_size=BATCH, device="cpu",
            progress=False, **{n_key: n}, **kw)


def _embedding(n: int) -> None:
    ids, y = token_task(N, seq_len=8, vocab=20)
    torch.manual_seed(0)
    embedding_pgd(TokenCNN(vocab=20, dim=4, channels=8), ids, y, eps=0.5, alpha=0.1, steps=n,
                  generator=torch.Generator().manual_seed(0))


def _attack(fn, key: str = "steps", **kw) -> Callable[[int], object]:
    """`fn(model, x, y, **kw)` with the step count under the keyword `key`."""
    def run(n: int):
        m, x, y = _digits()
        return fn(m, x, y, **{**kw, key: n})
    return run


def _wrapped(wrapper) -> Callable[[int], object]:
    def run(n: int):
        m, x, y = _digits()
        return pgd(wrapper(m), x, y, eps=0.1, alpha=0.02, steps=n,
                   generator=torch.Generator().manual_seed(0))
    return run


def _smoothing(fn, n_batches: int) -> None:
    m, x, _ = _digits()
    g = torch.Generator().manual_seed(0)
    if fn is certify:
        certify(m, x, sigma=0.25, n0=BATCH, n=n_batches * BATCH, batch_size=BATCH, generator=g)
    else:
        smoothed_predict(m, x, sigma=0.25, n=n_batches * BATCH, batch_size=BATCH, generator=g)


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def attack_methods() -> list[Method]:
    """The white-box attacks: their step loops."""
    ball = dict(eps=0.1, alpha=0.02, generator=_seeded())
    return [
        Method("pgd-linf", _attack(pgd, **ball), 2, 6),
        Method("pgd-l2", _attack(pgd, **{**ball, "eps": 0.75, "alpha": 0.2}, norm="l2"), 2, 6),
        Method("pgd-l1", _attack(pgd, **{**ball, "eps": 2.0, "alpha": 0.5}, norm="l1"), 2, 6),
        Method("fgsm (one step)", lambda n: fgsm(*_digits(), eps=0.1), 1, 1),
        Method("cw-l2", _attack(cw, binary_steps=2), 10, 30),
        Method("cw-linf", _attack(cw, norm="linf", max_c=1.0), 10, 30),
        Method("cw-l0", _attack(cw, norm="l0", max_c=1.0), 10, 30),
        Method("deepfool", _attack(deepfool), 10, 30),
        Method("stadv", _attack(stadv), 2, 6),
        Method("patch", lambda n: patch(*_digits(), size=3, steps=n, batch_size=2,
                                        generator=_seeded()), 2, 6),
        Method("eot-pgd", _wrapped(lambda m: EOT(m, samples=2)), 2, 6),
        Method("bpda-pgd", _wrapped(lambda m: BPDA(m, lambda x: bit_depth(x, 3))), 2, 6),
        Method("embedding-pgd", _embedding, 2, 6),
        Method("lbfgs", _attack(lbfgs, "max_iter", search_steps=1), 2, 6, what="max_iter"),
    ]


def defence_methods() -> list[Method]:
    """The defences: one training step as a function of the inner steps, the loops' steps,
    verified training per batch, and smoothing per batch of noise samples."""
    inner = dict(eps=0.1, alpha=0.02)
    return [
        Method("pgd_at", lambda n: _one_step(pgd_at(**inner, steps=n, generator=_seeded())), 2, 6),
        Method("trades", lambda n: _one_step(trades(**inner, steps=n, generator=_seeded())), 2, 6),
        Method("vat", lambda n: _one_step(vat(eps=0.5, power_iterations=n, generator=_seeded())),
               2, 6, what="power iterations"),
        Method("wrm", lambda n: _one_step(wrm(steps=n)), 2, 6),
        Method("fast_at (one step)", lambda n: _one_step(fast_at(eps=0.1, generator=_seeded())), 1, 1),
        Method("fgsm_at (one step)", lambda n: _one_step(fgsm_at(eps=0.1)), 1, 1),
        Method("free_at", lambda n: _loop(free_at, "replays", n, eps=0.1, epochs=n), 2, 6,
               what="replays"),
        Method("yopo", lambda n: _loop(yopo, "m", n, eps=0.1, alpha=0.02, epochs=1,
                                       generator=_seeded()), 2, 6, what="m"),
        Method("awp", lambda n: _loop(awp, "steps", n, eps=0.1, alpha=0.02, epochs=1,
                                      generator=_seeded()), 2, 6),
        Method("fit ibp", lambda n: _train_batches(ibp(eps=0.05), n), 1, 3, what="batches"),
        Method("fit crown_ibp", lambda n: _train_batches(crown_ibp(eps=0.05), n), 1, 3,
               what="batches"),
        Method("smoothing certify", functools.partial(_smoothing, certify), 2, 8,
               what="n / batch"),
        Method("smoothing predict", functools.partial(_smoothing, smoothed_predict), 2, 8,
               what="n / batch"),
    ]


def white_box_methods() -> list[Method]:
    _digits()  # load the model and data before anything is counted
    return attack_methods() + defence_methods()


def rows(methods: list[Method]) -> list[list]:
    """One table row per method: name, what is counted, syncs at the small and large count."""
    out = []
    for m in methods:
        a, b = grows(m.run, m.small, m.large)
        out.append([m.name, m.what, f"{m.small} -> {m.large}", a.total, b.total,
                    "yes" if b.total > a.total else "no"])
    return out


HEADERS = ["method", "counted", "steps", "syncs (small)", "syncs (large)", "grows"]

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(markdown_table(HEADERS, rows(white_box_methods())))
