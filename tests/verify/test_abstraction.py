"""abstract / abstract_bounds / refine: sound for any grouping (sampled outputs inside the bounds),
singleton groups give the concrete interval bounds, merging exact duplicates loses nothing,
refinement never proves what the exact MILP refutes, bad input and hygiene."""

import pytest
import torch
from torch import nn

from robustlab.verify import abstract, abstract_bounds, interval, refine, verify_property

from ..conftest import leaves_as_found
from .conftest import random_mlp


def nets():
    return {"4-8-8-3": random_mlp([4, 8, 8, 3], 0).double(),
            "5-10-6-4": random_mlp([5, 10, 6, 4], 1).double()}


def widths(model):
    return [m.out_features for m in model if isinstance(m, nn.Linear)][:-1]


def margin_rows(y: int, k: int = 3) -> torch.Tensor:
    eye = torch.eye(k)
    return eye[y] - eye[[j for j in range(k) if j != y]]


def duplicated(base: nn.Sequential) -> nn.Sequential:
    """`base` (Flatten, Linear, ReLU, Linear) with every hidden neuron twice, each copy sending
    half its weight on: the same function, twice the neurons."""
    _, first, _, last = base
    one = nn.Linear(first.in_features, 2 * first.out_features)
    two = nn.Linear(2 * last.in_features, last.out_features)
    with torch.no_grad():
        one.weight.copy_(torch.cat([first.weight] * 2))
        one.bias.copy_(torch.cat([first.bias] * 2))
        two.weight.copy_(torch.cat([last.weight / 2] * 2, 1))
        two.bias.copy_(last.bias)
    return nn.Sequential(nn.Flatten(), one, nn.ReLU(), two).double().eval()


@pytest.mark.parametrize("name", ["4-8-8-3", "5-10-6-4"])
def test_singleton_groups_give_the_concrete_interval_bounds(name):
    model = nets()[name]
    n = model[1].in_features
    x = torch.rand(3, 1, 1, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inn = abstract(model, [list(range(w)) for w in widths(model)], in_shape=(1, 1, n))
    assert inn.neurons == inn.concrete == sum(widths(model))
    got = abstract_bounds(inn, (x - 0.1).clamp(0, 1), (x + 0.1).clamp(0, 1))
    want = interval(model, x, eps=0.1, rounding=False)
    assert torch.allclose(got.lower, want.lower, rtol=0, atol=1e-12)
    assert torch.allclose(got.upper, want.upper, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["4-8-8-3", "5-10-6-4"])
def test_abstract_bounds_contain_every_sampled_output_for_random_groupings(name):
    model = nets()[name]
    n = model[1].in_features
    g = torch.Generator().manual_seed(1)
    C = torch.randn(2, model[-1].out_features, generator=g, dtype=torch.float64)
    d = torch.randn(2, generator=g, dtype=torch.float64)
    for trial in range(10):
        groups = [torch.randint(0, 1 + trial % 4, (w,), generator=g) for w in widths(model)]
        lo = torch.rand(1, 1, 1, n, generator=g, dtype=torch.float64) * 0.7
        up = lo + 0.3 * torch.rand(1, 1, 1, n, generator=g, dtype=torch.float64)
        pts = lo + (up - lo) * torch.rand(2000, 1, 1, n, generator=g, dtype=torch.float64)
        pts[::3] = lo + (up - lo) * torch.randint(0, 2, (len(pts[::3]), 1, 1, n), generator=g)
        with torch.no_grad():
            z = model(pts)
        inn = abstract(model, groups, in_shape=(1, 1, n))
        assert inn.neurons == sum(len(torch.unique(t)) for t in groups)
        b = abstract_bounds(inn, lo, up)
        assert b.contains(z, tol=1e-9).all()
        rows = abstract_bounds(abstract(model, groups, in_shape=(1, 1, n), C=C, d=d), lo, up)
        assert rows.contains(z @ C.T + d, tol=1e-9).all()
        singles = [list(range(w)) for w in widths(model)]
        fine = abstract_bounds(abstract(model, singles, in_shape=(1, 1, n)), lo, up)
        assert (b.lower <= fine.lower + 1e-9).all() and (b.upper >= fine.upper - 1e-9).all()


def test_merging_exact_duplicates_loses_nothing_and_refine_proves_with_half_the_neurons():
    base = random_mlp([4, 6, 3], 2).double()
    twice = duplicated(base)
    pairs = [list(range(6)) * 2]
    x = torch.full((1, 1, 1, 4), 0.7, dtype=torch.float64)  # base IBP proves its class here
    got = abstract_bounds(abstract(twice, pairs, in_shape=(1, 1, 4)), x - 0.02, x + 0.02)
    want = interval(base, x, eps=0.02, rounding=False)
    assert torch.allclose(got.lower, want.lower, atol=1e-12)
    assert torch.allclose(got.upper, want.upper, atol=1e-12)
    y = int(base(x).argmax())
    r = refine(twice, x[0] - 0.02, x[0] + 0.02, C=margin_rows(y).double(), groups=pairs)
    assert r.verdict.status == "verified" and r.rounds == 0
    assert (r.neurons, r.concrete) == (6, 12)
    # from one group per layer, refinement splits until it proves it, never past 12 neurons
    r = refine(twice, x[0] - 0.02, x[0] + 0.02, C=margin_rows(y).double())
    assert r.verdict.status == "verified" and r.neurons <= 12  # measured: 9 neurons, 8 rounds
    assert [h[0] for h in r.history] == list(range(1, r.rounds + 2))  # one split per round
    assert r.history[-1][1] > 0 >= r.history[-2][1]
    assert r.table().count("\n") == r.rounds + 2 and "| 0 | 1 | 1/12 |" in r.table()


def test_refinement_never_proves_what_the_milp_refutes_and_complete_agrees():
    model = random_mlp([4, 8, 8, 3], 0)
    g = torch.Generator().manual_seed(0)
    proved = exact_proved = 0
    for _ in range(10):
        c = torch.rand(1, 1, 4, generator=g)
        r0 = 0.005 + 0.03 * torch.rand(1, generator=g).item()
        lo, up = (c - r0).clamp(0, 1), (c + r0).clamp(0, 1)
        C = margin_rows(int(model(c[None]).argmax()))
        r = refine(model, lo, up, C=C)
        exact = verify_property(model, lo, up, C=C)
        assert r.verdict.status in ("verified", "unknown") and r.verdict.seconds > 0
        assert r.neurons <= r.concrete == 16
        if r.verdict.status == "verified":
            assert exact.status == "verified"
        else:  # stopped only at singletons: the concrete interval bounds fail too
            assert r.neurons == 16
        proved += r.verdict.status == "verified"
        exact_proved += exact.status == "verified"
        both = refine(model, lo, up, C=C, complete=True)
        assert both.verdict.status == exact.status
        if exact.status == "falsified":
            p = both.verdict.counterexample
            assert ((p >= lo) & (p <= up)).all() and model(p[None]).argmax(1).item() != C[0].argmax().item()
    assert 0 < proved <= exact_proved  # measured: 7 of 10 by abstraction (14-16 of 16 neurons), 9 by the MILP


def test_bad_input_and_hygiene():
    model = random_mlp([4, 8, 8, 3], 0)
    lo, up = torch.full((1, 1, 4), 0.4), torch.full((1, 1, 4), 0.45)
    C = margin_rows(0)
    leaves_as_found(lambda: refine(model, lo, up, C=C, groups=[[0] * 8, [1] * 8]), model, lo, up, C)
    with pytest.raises(ValueError, match="groups must hold one sequence"):
        abstract(model, [[0] * 8], in_shape=(1, 1, 4))
    with pytest.raises(ValueError, match=r"groups\[1\] must hold 8 integer labels"):
        abstract(model, [[0] * 8, [0] * 7], in_shape=(1, 1, 4))
    with pytest.raises(ValueError, match=r"groups\[0\] must hold 8 integer labels"):
        abstract(model, [[0.5] * 8, [0] * 8], in_shape=(1, 1, 4))
    inn = abstract(model, [[0] * 8, [0] * 8], in_shape=(1, 1, 4))
    with pytest.raises(ValueError, match="lower and upper must have shape"):
        abstract_bounds(inn, lo, up)
    with pytest.raises(ValueError, match="lower <= upper"):
        abstract_bounds(inn, up[None], lo[None])
    with pytest.raises(ValueError, match="lower exceeds upper"):
        refine(model, up, lo, C=C)
    with pytest.raises(ValueError, match="C must be a tensor of shape"):
        refine(model, lo, up, C=torch.ones(2, 4))
    with pytest.raises(ValueError, match="max_rounds"):
        refine(model, lo, up, C=C, max_rounds=0)
    pool = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3)).eval()
    with pytest.raises(ValueError, match="MaxPool2d"):
        abstract(pool, [[0] * 18], in_shape=(1, 3, 4))
