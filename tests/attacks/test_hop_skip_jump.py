import pytest
import torch

from robustlab.attacks import Oracle, QueryLedger, hop_skip_jump
from robustlab.attacks.hop_skip_jump import _jump
from robustlab.norms import flat_norm

from ..conftest import seeded as gen
from .conftest import BlackBoxContract, linear_problem


class TestBlackBoxContract(BlackBoxContract):
    attack = hop_skip_jump
    output = "label"
    settings = {"l2": dict(max_queries=150), "linf": dict(max_queries=150, norm="linf")}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hop_skip_jump_shrinks_the_distortion(digits_cnn, digits_test, norm):
    x, y = digits_test
    x, y = x[:10], y[:10]
    # 60 queries pay for the start and the first binary search, not for one gradient estimate
    start, _ = hop_skip_jump(digits_cnn, x, y, norm=norm, max_queries=60, generator=gen())
    adv, _ = hop_skip_jump(digits_cnn, x, y, norm=norm, max_queries=1500, generator=gen())
    assert (digits_cnn(start).argmax(1) != y).all() and (digits_cnn(adv).argmax(1) != y).all()
    d0, d1 = flat_norm(start - x, norm), flat_norm(adv - x, norm)
    assert d1.mean() < 0.5 * d0.mean()
    assert (d1 <= d0 + 1e-6).all()


def test_targeted_hop_skip_jump_from_x_init(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:5], y[:5]
    t = (y + 1) % 10
    pool = digits_test[0][100:]
    labels = digits_cnn(pool).argmax(1)
    x_init = torch.stack([pool[(labels == k).nonzero()[0, 0]] for k in t.tolist()])
    adv, _ = hop_skip_jump(digits_cnn, x, t, targeted=True, x_init=x_init, max_queries=1500,
                           generator=gen())
    assert (digits_cnn(adv).argmax(1) == t).all()
    assert (flat_norm(adv - x, "l2") < 0.6 * flat_norm(x_init - x, "l2")).all()


@pytest.mark.parametrize("norm,dual", [("l2", "l2"), ("linf", "l1")])
def test_hop_skip_jump_finds_the_closest_point_of_a_linear_boundary(norm, dual):
    model, x0, y, u, f0 = linear_problem()
    best = f0 / flat_norm(u, dual)
    adv, _ = hop_skip_jump(model, x0, y, norm=norm, max_queries=1500, generator=gen())
    ratio = flat_norm(adv - x0, norm) / best
    assert (ratio >= 1 - 1e-6).all() and (ratio < 1.2).all(), ratio


def mean_threshold_model():
    """Class 1 iff the mean pixel exceeds 0.5: z_1 - z_0 = mean(x) - 0.5."""
    lin = torch.nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = 1 / 64
        lin.bias.copy_(torch.tensor([0.0, -0.5]))
    return torch.nn.Sequential(torch.nn.Flatten(), lin).eval()


# issue 16: the jump's halvings are asked in one batch (no host sync per halving), and must be
# charged exactly as the one-by-one search would ask them
def test_jump_charges_the_halvings_the_sequential_search_asks():
    b = torch.full((3, 1, 8, 8), 0.6, dtype=torch.float64)  # class 1: adversarial for y = 0
    y = torch.zeros(3, dtype=torch.long)
    oracle = Oracle(mean_threshold_model().double(), output="label")
    ledger = QueryLedger(oracle, b, y, max_queries=100)
    ledger.spent[2] = 97  # example 2 can pay for 3 more queries only
    v = -torch.ones_like(b)  # b - eps stays adversarial iff eps < 0.1: eps = 1 / 2**j, j = 4
    rows, live = torch.arange(3), torch.tensor([True, False, True])
    out, moved = _jump(ledger, b, v, rows, live, torch.ones(3, dtype=torch.float64), False)
    assert moved.tolist() == [True, False, False]
    assert torch.allclose(out[0], b[0] - 1 / 16) and torch.equal(out[1:], b[1:])
    assert ledger.used().tolist() == [5, 0, 100], "1, 1/2, 1/4, 1/8, 1/16; none; the last 3"
