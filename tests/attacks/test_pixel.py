import pytest
import torch

from robustlab import data, models
from robustlab.attacks import Oracle
from robustlab.attacks.pixel import _mutants, one_pixel, single_pixel_search
from robustlab.norms import flat_norm

from ..conftest import (
    CountingModel,
    assert_unchanged,
    check_conventions,
    leaves_as_found,
    messy_model,
    nested_modes,
    snapshot,
)
from ..conftest import seeded as gen


def changed_pixels(adv, x):
    return (adv != x).any(1).flatten(1).sum(1)


@pytest.mark.parametrize("pixels", [1, 3])
@pytest.mark.parametrize("targeted", [False, True])
def test_one_pixel_conventions(batch, pixels, targeted):
    x, y = batch
    kw = dict(pixels=pixels, popsize=20, max_iter=3, targeted=targeted)
    a, qa = check_conventions(one_pixel, x, y, ball=(pixels, "l0"), generator=gen(2), **kw)
    assert (changed_pixels(a, x) <= pixels).all()
    b, qb = one_pixel(messy_model(), x, y, generator=gen(2), **kw)
    assert torch.equal(a, b) and torch.equal(qa, qb), "a fixed generator must give the same output twice"


def test_one_pixel_counts_queries(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:12], y[:12]
    model = CountingModel(digits_cnn)
    before = snapshot(model)
    oracle = Oracle(model)
    _, q = one_pixel(oracle, x, y, popsize=10, max_iter=4, generator=gen())
    # generations of examples already fooled may ride along in the batch, uncharged (issue 16)
    assert q.sum().item() + oracle.discarded == model.images
    assert (q % 10 == 0).all() and (q <= 50).all(), "whole generations, at most popsize (max_iter + 1)"
    assert_unchanged(model, before)
    oracle = Oracle(model, budget=25)
    _, q = one_pixel(oracle, x, y, popsize=10, max_iter=4, generator=gen())
    assert torch.equal(q, oracle.queries) and (q <= 20).all()
    spent = Oracle(model, budget=25)
    spent(x[:1].expand(20, -1, -1, -1), torch.zeros(20, dtype=torch.long))
    adv, q = one_pixel(spent, x, y, popsize=10, max_iter=4, generator=gen())
    assert q[0] == 0 and torch.equal(adv[0], x[0]) and (q[1:] > 0).all()


def test_differential_evolution_step():
    """DE/rand/1: each child is x_r1 + 0.5 (x_r2 - x_r3) for three distinct members, clipped."""
    values = torch.tensor([1.0, 2.0, 4.0])  # every such combination of these is distinct
    pop = values.view(1, 3, 1, 1).expand(1, 3, 1, 3).clone()  # (row, col, grey) all equal
    kids = _mutants(pop, 100, 100, 0.5, gen())[0, :, 0, 0]
    allowed = {a + 0.5 * (b - c) for a in values.tolist() for b in values.tolist()
               for c in values.tolist() if len({a, b, c}) == 3}
    assert set(kids.tolist()) <= allowed
    wide = torch.rand(2, 50, 2, 5, generator=gen()) * 40 - 10
    kids = _mutants(wide, 8, 6, 0.5, gen())
    assert kids[..., 0].min() >= 0 and kids[..., 0].max() <= 7 and kids[..., 1].max() <= 5
    assert kids[..., 2:].min() >= 0 and kids[..., 2:].max() <= 1


def test_one_pixel_matches_exhaustive_search_on_digits(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:40], y[:40]
    _, found = single_pixel_search(digits_cnn, x, y)
    adv, q = one_pixel(digits_cnn, x, y, popsize=50, max_iter=30, generator=gen())
    fooled = digits_cnn(adv).argmax(1) != y
    assert found.sum() >= 5 and fooled[found].float().mean() >= 0.85
    assert (changed_pixels(adv, x)[fooled] == 1).all() and (adv[~fooled] == x[~fooled]).all()
    assert (q[fooled] > 50).any(), "some image should need evolution beyond the first generation"


def test_targeted_one_pixel(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:40], y[:40]
    z = digits_cnn(x).scatter(1, y[:, None], -torch.inf)
    t = z.argmax(1)  # the runner-up class
    _, found = single_pixel_search(digits_cnn, x, t, targeted=True)
    adv, _ = one_pixel(digits_cnn, x, t, targeted=True, popsize=50, max_iter=30, generator=gen())
    reached = digits_cnn(adv).argmax(1) == t
    assert found.any() and reached[found].float().mean() >= 0.85


def test_more_pixels_fool_more_digits(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:40], y[:40]
    one, _ = one_pixel(digits_cnn, x, y, popsize=50, max_iter=20, generator=gen())
    three, _ = one_pixel(digits_cnn, x, y, pixels=3, popsize=50, max_iter=20, generator=gen())
    n1, n3 = ((digits_cnn(a).argmax(1) != y).sum() for a in (one, three))
    assert n3 > n1 and n3 >= 30
    assert (changed_pixels(three, x) <= 3).all()


def test_one_pixel_turns_the_traffic_light():
    """The tutorial's example: one pixel changes the traffic-light model's decision, on the
    correctly classified test image it is least sure of, where the exhaustive search over the
    RGB cube's corners finds such a pixel too."""
    model = models.pretrained("traffic-cnn")
    x, y = data.traffic_lights("test")
    with torch.no_grad():
        p = model(x).softmax(1)
    top = p.topk(2, 1).values
    i = (top[:, 0] - top[:, 1]).masked_fill(p.argmax(1) != y, torch.inf).argmin().item()
    x, y = x[i:i + 1], y[i:i + 1]
    _, found = single_pixel_search(model, x, y)
    assert found.all()
    adv, _ = one_pixel(model, x, y, popsize=100, max_iter=20, generator=gen())
    assert (model(adv).argmax(1) != y).all()
    assert changed_pixels(adv, x).item() == 1 and flat_norm(adv - x, "l0").item() <= 3


def test_one_pixel_needs_scores(digits_cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="scores"):
        one_pixel(Oracle(digits_cnn, output="label"), x, y)


# issue 7: single_pixel_search restored only the top-level train/eval mode
def test_single_pixel_search_restores_nested_modes(eight):
    x, y = eight
    wrapped, net = nested_modes()
    leaves_as_found(lambda: single_pixel_search(wrapped, x[:1], y[:1]), wrapped, x, y)
    assert net.training and not wrapped.training
