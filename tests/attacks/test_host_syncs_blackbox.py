"""Host syncs of the black-box and search methods do not grow with their budgets (issue 16).

On a GPU every ``.item()``, ``bool(t)``, ``nonzero`` or mask index stalls the host until the
queued kernels have run; one per query of a 5,000-query Square attack is 5,000 stalls. Each
method here runs at a small and a large budget (queries, iterations, generations, passes or
chunks) and must make exactly as many host syncs at both (tests/syncs.py counts them on the
CPU). The loops look at the host only at a fixed number of checkpoints (oracle.segments), so
the count is fixed as long as some example is still working: the settings below use a model
that nothing can fool (every loop runs to its budget), except HopSkipJump, which needs a first
adversarial point and gets the digits CNN. DeepGO is the one sequential method: named below.

The runners are shared with benchmarks/host_syncs_blackbox.py, which prints the table.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from robustlab import data, models
from robustlab.attacks import (
    corner_pixel_search,
    hop_skip_jump,
    one_pixel,
    pixel,
    random_pixel_search,
    single_pixel_search,
    square,
    universal,
    zoo,
)
from robustlab.attacks.oracle import Oracle, QueryLedger
from robustlab.attacks.rays import rays
from robustlab.attacks.sign_opt import sign_opt
from robustlab.verify import deepgo
from tests.syncs import HostSyncs, explain


def unfoolable(seed: int = 0) -> nn.Module:
    """A linear digits classifier whose label no input in [0, 1]^64 can change: weights of
    size 1e-4 move a logit by at most 0.0064, and class 0 leads the others by 1."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(64, 10)
    with torch.no_grad():
        lin.weight.copy_(1e-4 * torch.randn(10, 64, generator=g))
        lin.bias.copy_(torch.linspace(0, -1, 10))
        lin.bias[1:] -= 1
    return nn.Sequential(nn.Flatten(), lin).eval()


def digits(n: int = 4, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.digits("test")
    return x[:n].to(device), y[:n].to(device)


def robust_batch(device: str = "cpu"):
    """The unfoolable model and four digits it labels 0 (its only label)."""
    model = unfoolable().to(device)
    x, _ = digits(4, device)
    return model, x, torch.zeros(4, dtype=torch.long, device=device)


def gen(device: str = "cpu", seed: int = 0) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def oracle_queries(n: int, device: str = "cpu") -> None:
    """n queries of the whole batch through an attack's ledger (inputs checked once, on entry)."""
    model, x, y = robust_batch(device)
    ledger = QueryLedger(Oracle(model), x, y, 10 * n)
    rows = torch.arange(len(x), device=device)
    for _ in range(n):
        ledger.ask(x, rows)
    ledger.result(x)


def _square(norm: str, eps: float) -> Callable[..., object]:
    def run(n: int, device: str = "cpu"):
        model, x, y = robust_batch(device)
        return square(model, x, y, eps=eps, norm=norm, max_queries=n, generator=gen(device))
    return run


def _zoo(n: int, device: str = "cpu"):
    model, x, y = robust_batch(device)
    return zoo(model, x, y, coords_per_step=4, max_queries=9 * n, generator=gen(device))


def _hsj(n: int, device: str = "cpu"):
    x, y = digits(4, device)
    model = models.pretrained("digits-cnn").to(device)
    return hop_skip_jump(model, x, y, steps=n, init_evals=10, max_queries=10**6, generator=gen(device))


def _one_pixel(n: int, device: str = "cpu"):
    model, x, y = robust_batch(device)
    return one_pixel(model, x, y, popsize=8, max_iter=n, generator=gen(device))


def _random_pixels(n: int, device: str = "cpu"):
    model, x, y = robust_batch(device)
    return random_pixel_search(model, x, y, max_queries=8 * n, round_size=8, generator=gen(device))


def _corner_pixels(n: int, device: str = "cpu"):
    model, x, y = robust_batch(device)
    return corner_pixel_search(model, x, y, max_queries=8 * n, round_size=8, generator=gen(device))


def _single_pixel(n: int, device: str = "cpu"):
    """n chunks per image: 128 candidates (64 pixels, black and white) in chunks of 128 / n."""
    model, x, y = robust_batch(device)
    return single_pixel_search(model, x, y, batch_size=128 // n)


def _uap(n: int, device: str = "cpu"):
    x, y = digits(8, device)
    model = models.pretrained("digits-cnn").to(device)
    return universal.uap(model, x, y, eps=0.05, max_passes=n, target_fooling=1.0,
                         deepfool_steps=3, generator=gen(device))


def _guap(n: int, device: str = "cpu"):
    x, y = digits(8, device)
    model = models.pretrained("digits-cnn").to(device)
    return universal.guap(model, x, y, eps=0.05, steps=n, batch_size=4, generator=gen(device))


# name -> (run(n, device), small n, large n); n counts what the budget buys: queries for the
# Oracle and Square, steps for ZOO and HopSkipJump, generations, rounds, chunks, passes, steps
RUNS: dict[str, tuple[Callable[..., object], int, int]] = {
    "Oracle (ledger queries)": (oracle_queries, 8, 32),
    "Square L-inf (queries)": (_square("linf", 0.05), 300, 1200),
    "Square L2 (queries)": (_square("l2", 0.3), 300, 1200),
    "ZOO (steps)": (_zoo, 10, 40),
    "HopSkipJump (steps)": (_hsj, 2, 6),
    "one-pixel DE (generations)": (_one_pixel, 5, 20),
    "random_pixel_search (rounds)": (_random_pixels, 4, 16),
    "corner_pixel_search (rounds)": (_corner_pixels, 4, 16),
    "single_pixel_search (chunks)": (_single_pixel, 1, 8),
    "GUAP (steps)": (_guap, 5, 20),
}


# decision-based attacks of issue 21 (rays.py, sign_opt.py): RayS pays one query per example per
# iteration, so its queries are its iterations; Sign-OPT needs a first adversarial direction (the
# digits CNN) and runs `iterations` with a budget that never binds
def _rays(n: int, device: str = "cpu"):
    model, x, y = robust_batch(device)
    return rays(model, x, y, max_queries=n, search_steps=4, generator=gen(device))


def _sign_opt(n: int, device: str = "cpu"):
    x, y = digits(4, device)
    model = models.pretrained("digits-cnn").to(device)
    return sign_opt(model, x, y, k=10, trials=2, search_steps=6, iterations=n, max_queries=10**6,
                    generator=gen(device))


RUNS.update({"RayS (queries)": (_rays, 50, 200), "Sign-OPT (iterations)": (_sign_opt, 2, 6)})


@contextlib.contextmanager
def deepfool_uncounted(syncs: HostSyncs):
    """Leave out what DeepFool does inside UAP: its syncs are deepfool.py's, tested there.

    Moosavi-Dezfooli et al. (2017) update v image by image, each DeepFool run starting from the
    v the last one left: sequential by design. UAP adds no sync of its own per image (it does
    not ask first whether x_i + v is fooled: DeepFool returns a fooled image unchanged, so
    r_i = 0 and v stays)."""
    real = universal.deepfool

    def quiet(*args, **kwargs):
        syncs._depth += 1  # the counter ignores calls nested inside a counted one
        try:
            return real(*args, **kwargs)
        finally:
            syncs._depth -= 1

    universal.deepfool = quiet
    try:
        yield
    finally:
        universal.deepfool = real


def counted(name: str, n: int, device: str = "cpu") -> HostSyncs:
    """The host syncs of RUNS[name] at budget n."""
    run = RUNS[name][0]
    with HostSyncs() as s:
        run(n, device)
    return s


@pytest.mark.parametrize("name", list(RUNS))
def test_host_syncs_do_not_grow_with_the_budget(name):
    _, small, large = RUNS[name]
    a, b = counted(name, small), counted(name, large)
    assert a.total == b.total, explain(a, b)


def uap_syncs(passes: int) -> HostSyncs:
    with HostSyncs() as s, deepfool_uncounted(s):
        _uap(passes)
    return s


def test_uap_syncs_once_per_pass():
    """UAP reads its fooling rate once per pass: the paper's rule stops after the pass that
    reaches the target, and a pass runs one DeepFool per image, so one read is nothing beside
    it (checking only at fixed checkpoints would cost whole extra passes). Inside a pass UAP
    makes no sync of its own, whatever the number of images."""
    a, b = uap_syncs(1), uap_syncs(3)
    assert b.total - a.total == 2, explain(a, b)
    with HostSyncs() as s, deepfool_uncounted(s):
        x, y = digits(16)
        universal.uap(models.pretrained("digits-cnn"), x, y, eps=0.05, max_passes=1,
                      target_fooling=1.0, deepfool_steps=3, generator=gen())
    assert s.total == a.total, "more images in a pass must not mean more syncs"


def deepgo_syncs(iterations: int) -> tuple[HostSyncs, int]:
    """DeepGO's host syncs and evaluations on a small ReLU network over two pixels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x, _ = digits(1)
    with HostSyncs() as s:
        res = deepgo(model, x, eps=0.2, features=[10, 27], output=1, iterations=iterations)
    return s, res.evaluations


def test_deepgo_syncs_once_per_evaluation():
    """DeepGO is sequential by design: each Piyavskii-Shubert step picks the next point from the
    values of the points before it, so every evaluation reads its value on the host: exactly one
    sync per evaluation, and nothing else grows with the iterations."""
    (a, ea), (b, eb) = deepgo_syncs(5), deepgo_syncs(40)
    assert eb > ea, "the longer search must evaluate more points"
    assert b.total - a.total == eb - ea, explain(a, b)
    grew = {k for k, v in b.sites().items() if v > a.sites().get(k, 0)}
    assert len(grew) == 1 and "verify/deepgo.py" in next(iter(grew)), grew


def cuda_syncs(name: str, n: int) -> int:
    """Synchronising CUDA calls of RUNS[name] at budget n, as torch's sync debug mode reports."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with sync_mode("warn"):
            RUNS[name][0](n, "cuda")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(RUNS))
def test_cuda_syncs_do_not_grow_with_the_budget(name):
    """The same runs on CUDA, with a CUDA generator: torch itself reports each sync."""
    _, small, large = RUNS[name]
    RUNS[name][0](small, "cuda")  # warm-up: first calls initialise CUDA state
    assert cuda_syncs(name, small) == cuda_syncs(name, large)


@contextlib.contextmanager
def sync_mode(mode: str):
    """torch.cuda's sync debug mode for the block, restored after."""
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


# What may sync: the checks on entry, an attack's checkpoints (QueryLedger.active) and its
# result; everything else, every step of every loop, runs with torch.cuda erroring on a sync.
ALLOWED = [(Oracle, "check_inputs"), (QueryLedger, "__init__"), (QueryLedger, "active"),
           (QueryLedger, "result"), (pixel, "check_attack_inputs"), (pixel, "_colours"),
           (pixel, "check_label_range"), (universal, "check_attack_inputs"),
           (universal, "check_label_range")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(RUNS))
def test_cuda_loops_run_with_syncs_as_errors(name, monkeypatch):
    """RUNS[name] on CUDA with a CUDA generator under set_sync_debug_mode("error"), but for the
    entry checks and checkpoints of ALLOWED, which run in the default mode."""
    def allowed(f):
        def run(*args, **kwargs):
            with sync_mode("default"):
                return f(*args, **kwargs)
        return run

    run, small, _ = RUNS[name]
    run(small, "cuda")  # warm-up: first calls initialise CUDA state
    for owner, attr in ALLOWED:
        monkeypatch.setattr(owner, attr, allowed(getattr(owner, attr)))
    with sync_mode("error"):
        run(small, "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ledger_queries_never_sync():
    """Once inputs are checked, an attack's queries run with torch.cuda's sync check erroring."""
    model, x, y = robust_batch("cuda")
    ledger = QueryLedger(Oracle(model), x, y, 100)
    rows = torch.arange(len(x), device="cuda")
    with sync_mode("error"):
        for _ in range(10):
            ledger.ask(x, rows, rows < 2)
        left = ledger.left()
    assert left.tolist() == [90, 90, 100, 100]
