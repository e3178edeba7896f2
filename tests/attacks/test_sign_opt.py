import pytest
import torch

from robustlab.attacks import Oracle, QueryLedger, sign_opt
from robustlab.attacks.sign_opt import improve, sign_grad
from robustlab.norms import flat_norm

from ..conftest import seeded as gen
from .conftest import BlackBoxContract, linear_problem


class TestBlackBoxContract(BlackBoxContract):
    attack = sign_opt
    output = "label"
    settings = {"small_k": dict(max_queries=150, k=20)}


def _targets(model, x, y, pool):
    """Targets (y + 1) mod 10 and, for x_init, the first pool image the model labels each."""
    t = (y + 1) % 10
    labels = model(pool).argmax(1)
    return t, torch.stack([pool[(labels == k).nonzero()[0, 0]] for k in t.tolist()])


def test_sign_opt_on_a_linear_boundary():
    """g(theta) = f0 / (-u . theta) on the affine problem: every adversarial point is at least
    the exact L2 distance f0 / ||u||_2 away, and Sign-OPT gets within 2% of it."""
    model, x0, y, u, f0 = linear_problem()
    adv, q = sign_opt(model, x0, y, max_queries=2000, generator=gen())
    assert (model(adv).argmax(1) != y).all() and (q <= 2000).all()
    ratio = flat_norm(adv - x0, "l2") / (f0 / flat_norm(u, "l2"))
    assert (ratio >= 1 - 1e-9).all() and (ratio < 1.02).all(), ratio


def test_one_query_sign_estimate_points_along_the_gradient():
    """At theta with g(theta) found by binary search, the estimate correlates with the exact
    gradient of g(theta) = f0 ||theta|| / (-u . theta): at a unit theta, with s = u . theta < 0,
    grad g = f0 (u - s theta) / s^2, the part of u orthogonal to theta."""
    model, x0, y, u, f0 = linear_problem()
    rows = torch.arange(len(x0))
    ledger = QueryLedger(Oracle(model, output="label"), x0, y, 10_000)
    theta = -u / flat_norm(u, "l2").view(-1, 1, 1, 1) + 0.1 * torch.randn(x0.shape, generator=gen(),
                                                                          dtype=x0.dtype)
    theta = theta / flat_norm(theta, "l2").view(-1, 1, 1, 1)
    g, ok = improve(ledger, x0, theta, rows, rows >= 0, torch.full((8,), 8.0, dtype=x0.dtype), 30, False)
    assert ok.all()
    exact = f0 / (-(u * theta).flatten(1).sum(1))
    assert torch.allclose(g, exact, rtol=1e-6)
    beta = torch.full((8,), 1e-3, dtype=x0.dtype)
    est = sign_grad(ledger, x0, theta, g, rows, rows >= 0, 200, beta, False, gen())
    ut = (u * theta).flatten(1).sum(1).view(-1, 1, 1, 1)
    true = u - ut * theta
    cos = (est * true).flatten(1).sum(1) / (flat_norm(est, "l2") * flat_norm(true, "l2"))
    assert (cos > 0.5).all(), cos
    assert (ledger.used() == 1 + 30 + 200).all()


def test_distortion_shrinks_with_the_budget(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:6], y[:6]
    kw = dict(k=30, trials=2, search_steps=10)  # fewer forward passes: a fast test
    for seed in (0, 1, 2):
        small, _ = sign_opt(digits_cnn, x, y, max_queries=100, generator=gen(seed), **kw)
        large, _ = sign_opt(digits_cnn, x, y, max_queries=400, generator=gen(seed), **kw)
        won = digits_cnn(large).argmax(1) != y
        assert won.all() and (digits_cnn(small).argmax(1) != y).all()
        d0, d1 = flat_norm(small - x, "l2"), flat_norm(large - x, "l2")
        assert d1.median() < 0.85 * d0.median(), (d0.median(), d1.median())  # 0.44-0.68 measured


def test_targeted_sign_opt_from_x_init(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:4], y[:4]
    t, x_init = _targets(digits_cnn, x, y, digits_test[0][100:])
    adv, q = sign_opt(digits_cnn, x, t, targeted=True, x_init=x_init, max_queries=500, k=50,
                      trials=2, search_steps=12, generator=gen())
    assert (digits_cnn(adv).argmax(1) == t).all() and (q <= 500).all()
    assert (flat_norm(adv - x, "l2") < 0.8 * flat_norm(x_init - x, "l2")).all()


def test_no_first_direction_leaves_x(digits_cnn, digits_test):
    """An example none of whose random first directions is adversarial is returned as x; the
    others go on. A budget that pays for the first directions only stops right there."""
    x, y = digits_test
    adv, q = sign_opt(digits_cnn, x[:4], y[:4], max_queries=3, init_dirs=3, generator=gen())
    moved = (adv != x[:4]).flatten(1).any(1)
    assert (digits_cnn(adv[moved]).argmax(1) != y[:4][moved]).all()
    assert (q <= 3).all()


@pytest.mark.parametrize("kw,match", [
    (dict(max_queries=0), "max_queries"), (dict(k=0), "k"), (dict(alpha=-1.0), "alpha"),
    (dict(beta=0.0), "beta"), (dict(init_dirs=1.5), "init_dirs"), (dict(trials=0), "trials"),
    (dict(search_steps=0), "search_steps"), (dict(iterations=0), "iterations"),
    (dict(targeted=True), "x_init"), (dict(x_init=torch.zeros(3, 1, 8, 8)), "x_init"),
    (dict(x_init=torch.full((2, 1, 8, 8), 2.0)), r"\[0, 1\]")])
def test_bad_arguments(digits_cnn, digits_test, kw, match):
    x, y = digits_test
    with pytest.raises((ValueError, TypeError), match=match):
        sign_opt(digits_cnn, x[:2], y[:2], **{"max_queries": 10, **kw})


def test_x_init_must_be_adversarial(digits_cnn, digits_test):
    x, y = digits_test
    with pytest.raises(ValueError, match="x_init must be adversarial"):
        sign_opt(digits_cnn, x[:2], (y[:2] + 1) % 10, targeted=True, x_init=x[:2].clone(),
                 max_queries=10)
