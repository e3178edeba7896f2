"""The budgeted baselines of the one-pixel attack: random search and the corner-colour search,
checked against exact answers on an affine model whose one-pixel flips are known."""

import math

import pytest
import torch
from torch import nn

from robustlab.attacks import Oracle, corner_pixel_search, one_pixel, random_pixel_search, single_pixel_search

from ..conftest import CountingModel, assert_unchanged, check_conventions, messy_model, snapshot
from ..conftest import seeded as gen
from .conftest import BlackBoxContract

# the trigger model: on 3 x 4 x 4 images, class 1 wins iff red(1, 1) - blue(2, 3) > 0.5
H = W = 4
R0, C0, R1, C1 = 1, 1, 2, 3


def trigger_model() -> nn.Module:
    """z_0 = 0, z_1 = 10 (red(1, 1) - blue(2, 3) - 0.5). From red(1, 1) = 0.2, one changed pixel
    reaches class 1 iff blue(2, 3) < 0.5, by a red above 0.5 + blue(2, 3) at (1, 1): lowering
    blue(2, 3) instead leaves z_1 <= 10 (0.2 - 0.5) < 0."""
    lin = nn.Linear(3 * H * W, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.0, -5.0]))
        lin.weight.view(2, 3, H, W)[1, 0, R0, C0] = 10.0
        lin.weight.view(2, 3, H, W)[1, 2, R1, C1] = -10.0
    return nn.Sequential(nn.Flatten(), lin).eval()


def trigger_images(n: int, blue: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = 0.3 + 0.4 * torch.rand(n, 3, H, W, generator=gen(5))
    x[:, 0, R0, C0], x[:, 2, R1, C1] = 0.2, blue
    return x, torch.zeros(n, dtype=torch.long)


def changed_pixels(adv, x):
    return (adv != x).any(1).flatten(1).sum(1)


def p_initial_hit(threshold: float) -> float:
    """P(one candidate of DE's first generation sets red(1, 1) above `threshold`): row and column
    are round(U * 3), which is 1 with probability 1/3 each, and the red N(0.5, 0.5) clipped."""
    return (1 / 3) ** 2 * 0.5 * math.erfc((threshold - 0.5) / 0.5 / math.sqrt(2))


class TestRandomSearchContract(BlackBoxContract):
    attack = random_pixel_search
    output = "label"
    settings = {"1 pixel": dict(max_queries=32, round_size=8),
                "3 pixels": dict(pixels=3, max_queries=30, round_size=10)}


class TestCornerSearchContract(BlackBoxContract):
    attack = corner_pixel_search
    output = "label"
    settings = {"black and white": dict(max_queries=32, round_size=8),
                "greys": dict(colours=[[0.0], [0.5], [1.0]], max_queries=30, round_size=5)}


@pytest.mark.parametrize("search", [random_pixel_search, corner_pixel_search])
def test_searches_change_one_pixel(batch, search):
    x, y = batch
    check_conventions(search, x, y, ball=(1, "l0"), max_queries=64, round_size=16, generator=gen(1))


def test_corner_search_finds_exactly_the_flippable_images():
    """With the whole budget it tries all 4 * 4 * 8 = 128 candidates: the flippable images are
    found, by a red-1 corner at (1, 1) and nothing else changed; the others cost every query."""
    model = CountingModel(trigger_model())
    x = torch.cat([trigger_images(6, 0.2)[0], trigger_images(6, 0.8)[0]])
    y = torch.zeros(12, dtype=torch.long)
    before = snapshot(model)
    oracle = Oracle(model, output="label")
    adv, q = corner_pixel_search(oracle, x, y, round_size=16, generator=gen())
    assert_unchanged(model, before)
    flipped = model.model(adv).argmax(1) == 1
    assert flipped.tolist() == [True] * 6 + [False] * 6
    assert (changed_pixels(adv[:6], x[:6]) == 1).all() and (adv[:6, 0, R0, C0] == 1).all()
    assert torch.equal(adv[6:], x[6:])
    assert (q[6:] == 128).all() and (q[:6] % 16 == 0).all()
    # rounds of examples already flipped may ride along in the batch, uncharged (issue 16)
    assert q.sum() + oracle.discarded == model.images
    _, found = single_pixel_search(trigger_model(), x, y)
    assert torch.equal(found, flipped)


def test_corner_search_order_is_random_per_image():
    """The 4 winning candidates sit at uniformly random places of each image's order, so the
    first one comes after (128 + 1) / 5 = 25.8 queries on average (sd 22.4 per image)."""
    x, y = trigger_images(200, 0.2)
    _, q = corner_pixel_search(trigger_model(), x, y, round_size=1, generator=gen())
    assert 20 < q.float().mean() < 32 and q.float().std() > 10


def test_budgets_are_spent_exactly_in_whole_rounds():
    model = trigger_model()
    x, y = trigger_images(4, 0.8)   # nothing flips: every search spends what it may
    oracle = Oracle(model, output="label")
    adv, q = corner_pixel_search(oracle, x, y, max_queries=100, round_size=16, generator=gen())
    assert (q == 96).all() and torch.equal(q, oracle.queries) and torch.equal(adv, x)
    oracle = Oracle(model, output="label")
    adv, q = random_pixel_search(oracle, x, y, max_queries=100, round_size=16, generator=gen())
    assert (q == 96).all() and torch.equal(q, oracle.queries) and torch.equal(adv, x)
    _, q = corner_pixel_search(model, x, y, max_queries=10_000, round_size=50, generator=gen())
    assert (q == 128).all(), "the last round is the 28 candidates left, and no more"


def test_random_search_draws_from_des_first_generation():
    """The chance that one candidate flips is p = 1/9 P(N(0.5, 0.5) > 0.7) = 0.0383. Random search
    one candidate per round then needs 1 / p = 26.1 queries on average (sd 25.6 per image), and
    DE with a population of 10 succeeds in generation 0 (10 queries) with 1 - (1 - p)^10 = 0.32."""
    p = p_initial_hit(0.7)
    x, y = trigger_images(300, 0.2)
    model = trigger_model()
    adv, q = random_pixel_search(model, x, y, max_queries=400, round_size=1, generator=gen())
    assert (model(adv).argmax(1) == 1).all() and (changed_pixels(adv, x) == 1).all()
    assert abs(q.float().mean() - 1 / p) < 6
    _, q = one_pixel(model, x, y, popsize=10, max_iter=1, generator=gen())
    assert abs((q == 10).float().mean() - (1 - (1 - p) ** 10)) < 0.11


def test_every_reported_flip_is_real_on_digits(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:40], y[:40]
    right = digits_cnn(x).argmax(1) == y   # a digit already misclassified is "fooled" unchanged
    x, y = x[right], y[right]
    for search in (random_pixel_search, corner_pixel_search):
        adv, q = search(digits_cnn, x, y, max_queries=128, round_size=32, generator=gen())
        fooled = digits_cnn(adv).argmax(1) != y
        assert fooled.any() and (changed_pixels(adv[fooled], x[fooled]) == 1).all()
        assert torch.equal(adv[~fooled], x[~fooled]) and (q[~fooled] == 128).all()
        assert (q[fooled] % 32 == 0).all() and (q[fooled] <= 128).all()


@pytest.mark.parametrize("targeted", [False, True])
def test_full_corner_search_agrees_with_the_exhaustive_one(digits_cnn, digits_test, targeted):
    x, y = digits_test
    x, y = x[:40], y[:40]
    if targeted:
        y = digits_cnn(x).scatter(1, y[:, None], -torch.inf).argmax(1)   # the runner-up class
    _, found = single_pixel_search(digits_cnn, x, y, targeted=targeted)
    adv, q = corner_pixel_search(digits_cnn, x, y, targeted=targeted, generator=gen())
    hit = digits_cnn(adv).argmax(1)
    hit = hit == y if targeted else hit != y
    assert found.any() and torch.equal(hit, found) and (q <= 128).all()


def test_a_fixed_generator_repeats_and_another_differs():
    x, y = trigger_images(30, 0.2)
    runs = [corner_pixel_search(trigger_model(), x, y, round_size=1, generator=gen(s))[1] for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("kw, name", [
    (dict(max_queries=0), "max_queries"), (dict(round_size=0), "round_size"),
    (dict(max_queries=10, round_size=20), "round_size"), (dict(pixels=0), "pixels")])
def test_random_search_names_bad_arguments(batch, kw, name):
    x, y = batch
    with pytest.raises(ValueError, match=name):
        random_pixel_search(messy_model(), x, y, **kw)


@pytest.mark.parametrize("kw", [dict(colours=[[0.0, 1.0]]), dict(colours=[[2.0, 0.0, 0.0]]),
                                dict(colours=[]), dict(max_queries=-1), dict(round_size=0),
                                dict(max_queries=10, round_size=20)])
def test_corner_search_names_bad_arguments(kw):
    x, y = trigger_images(2, 0.2)   # three channels: a colour needs three values
    with pytest.raises(ValueError, match=next(iter(kw))):
        corner_pixel_search(trigger_model(), x, y, **kw)
