"""Every public verifier on each device (`device` fixture): incomplete bounds, reachability,
the complete verifiers, DeepGO, the reading of the network and IBP / CROWN-IBP training. The
result lies on the input's device (save what a method keeps on the CPU by contract, named per
case), is identical twice on the CPU and equals the CPU's on CUDA within each case's tolerance.

The complete verifiers solve their LPs on a float64 CPU copy on purpose (HiGHS runs there), so
their verdicts must agree exactly across devices; their counterexamples come back on x's device.
"""

import functools

import pytest
import torch

from robustlab import data, models
from robustlab import verify as V
from robustlab.train import fit

from ..conftest import seeded
from ..devices import Case, check_case

BOUNDS = dict(atol=1e-5)  # float32 bounds, summed in another order on the GPU


@functools.cache
def _digits():
    x, y = data.digits("test")
    return x[:2].clone(), y[:2].clone()


@functools.cache
def _trained() -> dict:
    torch.manual_seed(0)
    model = models.MLP((1, 8, 8), (12,), 10)
    fit(model, data.digits("train"), epochs=5, lr=1e-2, progress=False, device="cpu")
    return model.state_dict()


def mlp(device):
    """A small trained ReLU network (12 hidden units): every verifier reads it, the complete
    ones solve it in well under a second, and it classifies the test digits right, so they
    have a search to make."""
    model = models.MLP((1, 8, 8), (12,), 10)
    model.load_state_dict(_trained())
    return model.eval().to(device)


def setup(device):
    x, y = _digits()
    return mlp(device), x.to(device), y.to(device)


def complete(method, frac=0.0, **kw):
    """A complete verifier on 2 digits at radii where (measured on the CPU) bounds alone prove
    both, where the search must branch or solve (0.056 for the first digit, 0.14 for the
    second) and where it falsifies both: its statuses must agree on every device."""
    return Case(lambda d: [method(*setup(d), eps=eps, **kw) for eps in (0.02, 0.056, 0.14, 0.2)],
                atol=1e-6, frac=frac)


# branch and bound falsifies by a projected-gradient search first, whose sign steps may take
# another path on the GPU (another valid counterexample): its counterexamples' pixels are
# compared loosely, while each status, one element, must still agree exactly
LOOSE = 0.5


def train(objective):
    def run(device):
        model, x, y = setup(device)
        fit(model, (x.repeat(8, 1, 1, 1), y.repeat(8)), epochs=1, batch_size=8, lr=1e-2,
            objective=objective(), progress=False, device=device)
        return model
    return Case(run, atol=1e-4)


def _reading(device):
    model, x, _ = setup(device)
    net = V.read_network(model, (1, 8, 8), like=x)
    exact, u = V.read_exact(model, x - 0.05, x + 0.05)
    return (net(x), exact(x), u, V.rounding_bound(exact, x - 0.05, x + 0.05, u),
            V.unit_roundoff(torch.float32, device))


def _margins(device):
    model, x, y = setup(device)
    margins = V.verified_margins(model, x, y, eps=0.05)
    return margins, V.worst_logits(margins, y), V.margin_spec(y, 10)


def _lipschitz(device):
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, device=device)
    return V.lipschitz_minimise(lambda p: (p.to(device) * w).sum(-1).sin(), [-1.0, -1.0],
                                [1.0, 1.0], lipschitz=[1.0, 2.0], iterations=200)


DEEPGO_HOST = (".point", ".history", ".lipschitz")  # the sequential search's own CPU records

CASES = {
    "interval": Case(lambda d: V.interval(setup(d)[0], setup(d)[1], eps=0.05), **BOUNDS),
    "crown": Case(lambda d: V.crown(setup(d)[0], setup(d)[1], eps=0.05), **BOUNDS),
    "crown-alpha": Case(lambda d: V.crown(setup(d)[0], setup(d)[1], eps=0.05, alpha=True,
                                          alpha_steps=3), atol=1e-4),
    "Bounds": Case(lambda d: V.interval(setup(d)[0], setup(d)[1], eps=0.05, norm="l2"), **BOUNDS),
    "reach": Case(lambda d: V.reach(setup(d)[0], setup(d)[1], eps=0.05, partitions=2, dims=2),
                  **BOUNDS),
    "reach_box": Case(lambda d: V.reach_box(setup(d)[0], setup(d)[1] - 0.05, setup(d)[1] + 0.05),
                      **BOUNDS),
    "Network": Case(_reading, **BOUNDS),
    "read_network": Case(_reading, **BOUNDS),
    "read_exact": Case(_reading, **BOUNDS),
    "rounding_bound": Case(_reading, **BOUNDS),
    "unit_roundoff": Case(_reading, **BOUNDS),
    "verified_margins": Case(_margins, **BOUNDS),
    "worst_logits": Case(_margins, **BOUNDS),
    "margin_spec": Case(_margins, **BOUNDS),
    "milp": complete(V.milp),
    "Verdict": complete(V.milp, bounds="interval"),
    "reluplex": complete(V.reluplex),
    "branch_and_bound": complete(V.branch_and_bound, LOOSE, max_branches=20),
    "branch_and_bound-crown-only": complete(V.branch_and_bound, LOOSE, lp=False, max_branches=20),
    "min_distortion": Case(lambda d: V.min_distortion(*setup(d), max_eps=0.3), atol=1e-6,
                           host=(".distortion", ".lower")),
    "MinDistortion": Case(lambda d: V.min_distortion(*setup(d), norm="l1", max_eps=1.0),
                          atol=1e-6, host=(".distortion", ".lower")),
    "deepgo": Case(lambda d: V.deepgo(setup(d)[0], setup(d)[1][:1], eps=0.3, features=[27, 36],
                                      output=3, iterations=40, generator=seeded()),
                   atol=1e-3, host=DEEPGO_HOST),  # its branch choices follow float ties
    "AnytimeBounds": Case(_lipschitz, atol=1e-9, host=DEEPGO_HOST),
    "lipschitz_minimise": Case(_lipschitz, atol=1e-9, host=DEEPGO_HOST),
    "ibp": train(lambda: V.ibp(eps=0.05)),
    "crown_ibp": train(lambda: V.crown_ibp(eps=0.05)),
    # properties.py, abstraction.py, incremental.py (verification beyond local robustness)
    "verify_property": Case(lambda d: _region_checks(d)[:3], atol=1e-6),
    "never_class": Case(lambda d: _region_checks(d)[:3], atol=1e-6),
    "verify_monotone": Case(lambda d: _region_checks(d)[3:], atol=1e-6),
    # the interval network is built from the float64 CPU copy of the network (as the MILP's):
    # its bounds are on the CPU by contract
    "abstract": Case(lambda d: _abstraction(d)[0], host=True),
    "abstract_bounds": Case(lambda d: _abstraction(d)[0], host=True),
    "IntervalNetwork": Case(lambda d: _abstraction(d)[0], host=True),
    "refine": Case(lambda d: _abstraction(d)[1], host=(".lower",)),
    "Refinement": Case(lambda d: _abstraction(d)[1], host=(".lower",)),
    "reverify": Case(lambda d: _reverified(d), atol=1e-6),
    "Reverification": Case(lambda d: _reverified(d), atol=1e-6),
}


def _region_checks(device):
    """Boxes around the first digit: no input classified 3 (verified for the small box, falsified
    for the big one), a row of margins, and monotonicity of logit 3 in pixel 27 (two boxes)."""
    model, x, y = setup(device)
    out = []
    for r in (0.05, 0.3):
        lo, up = (x[0] - r).clamp(0, 1), (x[0] + r).clamp(0, 1)
        out.append(V.verify_property(model, lo, up, **V.never_class(3, 10)))
    lo, up = (x[0] - 0.05).clamp(0, 1), (x[0] + 0.05).clamp(0, 1)
    out.append(V.verify_property(model, lo, up, C=V.margin_spec(y[:1], 10)[0]))
    for r in (0.02, 0.3):
        lo, up = (x[0] - r).clamp(0, 1), (x[0] + r).clamp(0, 1)
        out.append(V.verify_monotone(model, lo, up, feature=27, output=3))
    return out


def _abstraction(device):
    model, x, y = setup(device)
    lo, up = (x[:1] - 0.02).clamp(0, 1), (x[:1] + 0.02).clamp(0, 1)
    inn = V.abstract(model, [[i % 4 for i in range(12)]], in_shape=(1, 8, 8))
    return (V.abstract_bounds(inn, lo, up), inn.w_lo, inn.w_hi), \
        V.refine(model, lo[0], up[0], C=V.margin_spec(y[:1], 10)[0])


def _reverified(device):
    model, x, y = setup(device)
    before = V.milp(model, x, y, eps=0.02)
    return [V.reverify(model, x, y, eps=eps, previous=before) for eps in (0.056, 0.14)]
NOT_ON_A_DEVICE = {
    "linear_ramp": "a schedule of floats (step -> weight): no tensor, no device",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verifier_on_device(name, device):
    check_case(CASES[name], device)
