import pytest
import torch

from robustlab.attacks import rays
from robustlab.attacks.rays import along, block_flips
from robustlab.attacks.square import _signs
from robustlab.norms import flat_norm

from ..conftest import seeded as gen
from .conftest import BlackBoxContract, linear_problem


class TestBlackBoxContract(BlackBoxContract):
    attack = rays
    output = "label"
    settings = {"minimise": dict(max_queries=150), "eps": dict(max_queries=150, eps=0.1)}


def test_block_schedule_halves_down_to_single_pixels():
    assert block_flips(5, "cpu").tolist() == [
        [0, 0], [0, 5], [0, 3], [3, 5], [0, 2], [2, 4], [4, 5], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    assert block_flips(1, "cpu").tolist() == [[0, 0], [0, 1]]
    table = block_flips(64, "cpu")
    assert len(table) == 1 + 1 + 2 + 4 + 8 + 16 + 32 + 64
    assert ((table[-64:, 1] - table[-64:, 0]) == 1).all(), "the table ends with the single pixels"


def sequential_rays(model, x, y, d, budget: int, steps: int):
    """The paper's loop for one example, one query at a time (Chen and Gu 2020, Algorithms 1-3):
    the reference the batched, lockstep version must reproduce query for query."""
    table, dim, spent = block_flips(d.numel(), "cpu").tolist(), d.numel(), 0
    radius, found = torch.ones(1, dtype=x.dtype), False

    def fooled(v, r):
        nonlocal spent
        spent += 1
        return model(along(x, v.view_as(x), r)).argmax(1).item() != y.item()

    for i in range(budget):
        if spent >= budget:
            break
        start, end = table[i] if i < len(table) else table[len(table) - dim + (i - len(table)) % dim]
        cand = d.clone()
        cand[:, start:end] *= -1
        if not fooled(cand, radius):
            continue
        d, found, low = cand, True, torch.zeros_like(radius)
        for _ in range(steps):
            if spent >= budget:
                break
            mid = (low + radius) / 2
            radius, low = (mid, low) if fooled(d, mid) else (radius, mid)
    return (along(x, d.view_as(x), radius) if found else x), spent


@pytest.mark.parametrize("budget", [37, 300])
def test_lockstep_batch_matches_the_sequential_search(digits_cnn, digits_test, budget):
    x, y = digits_test
    for i in range(3):
        adv, q = rays(digits_cnn, x[i:i + 1], y[i:i + 1], max_queries=budget, search_steps=6,
                      generator=gen(i))
        d = _signs((1, x[0].numel()), gen(i), x)
        ref, spent = sequential_rays(digits_cnn, x[i:i + 1], y[i:i + 1], d, budget, 6)
        assert q.item() == spent == budget and torch.equal(adv, ref)


@pytest.mark.parametrize("faces", [False, True])
def test_rays_radius_on_a_linear_boundary(faces):
    """Every adversarial point is at least the exact L-inf distance f0 / ||u||_1 away; without
    the box in the way RayS gets within 1% of it (the best sign vector is -sign(u))."""
    model, x0, y, u, f0 = linear_problem(faces)
    adv, _ = rays(model, x0, y, max_queries=1000, generator=gen())
    assert (model(adv).argmax(1) != y).all()
    ratio = flat_norm(adv - x0, "linf") / (f0 / flat_norm(u, "l1"))
    assert (ratio >= 1 - 1e-9).all(), ratio
    assert (ratio < (1.2 if faces else 1.01)).all(), ratio


def test_distortion_shrinks_with_the_budget(digits_cnn, digits_test):
    """The search is sequential per example and a budget only cuts it short: with one seed, a
    larger budget continues the smaller one's search, so it never ends farther away."""
    x, y = digits_test
    x, y = x[:8], y[:8]
    for seed in (0, 1, 2):
        small, _ = rays(digits_cnn, x, y, max_queries=100, generator=gen(seed))
        large, _ = rays(digits_cnn, x, y, max_queries=400, generator=gen(seed))
        assert (digits_cnn(small).argmax(1) != y).all() and (digits_cnn(large).argmax(1) != y).all()
        d0, d1 = flat_norm(small - x, "linf"), flat_norm(large - x, "linf")
        assert (d1 <= d0).all()
        assert d1.median() < 0.75 * d0.median(), (d0.median(), d1.median())


def test_success_at_eps_stops_early(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:10], y[:10]
    adv, q = rays(digits_cnn, x, y, eps=0.12, max_queries=500, generator=gen())
    dist = flat_norm(adv - x, "linf")
    won = digits_cnn(adv).argmax(1) != y
    assert 0.3 <= won.float().mean() < 1, won
    assert (dist[won] <= 0.12).all() and (q[won] < 500).all(), "a success stops the search"
    assert (dist[~won] == 0).all() and (q[~won] == 500).all(), "a failure is x, budget spent"


@pytest.mark.parametrize("kw,match", [
    (dict(eps=-0.1), "eps"), (dict(max_queries=0), "max_queries"), (dict(search_steps=0), "search_steps"),
    (dict(search_steps=2.5), "search_steps"), (dict(max_queries=10, eps="big"), "eps")])
def test_bad_arguments(digits_cnn, digits_test, kw, match):
    x, y = digits_test
    with pytest.raises((ValueError, TypeError), match=match):
        rays(digits_cnn, x[:2], y[:2], **{"max_queries": 10, **kw})
