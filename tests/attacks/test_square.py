import torch

from robustlab.attacks import square
from robustlab.norms import flat_norm

from ..conftest import seeded as gen
from .conftest import BlackBoxContract, linear_problem


class TestBlackBoxContract(BlackBoxContract):
    attack = square
    settings = {"linf": dict(eps=0.1, max_queries=30), "l2": dict(eps=0.5, norm="l2", max_queries=30)}


def test_square_linf_breaks_digits_cnn(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:20], y[:20]
    adv, q = square(digits_cnn, x, y, eps=0.2, max_queries=1000, generator=gen())
    fooled = digits_cnn(adv).argmax(1) != y
    assert fooled.float().mean() >= 0.9
    assert flat_norm(adv - x, "linf").max() <= 0.2 + 1e-6
    # per-example stopping: a fooled example spends no more queries
    assert q[fooled].float().mean() < 200


def test_square_l2_breaks_digits_cnn(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:20], y[:20]
    adv, _ = square(digits_cnn, x, y, eps=1.5, norm="l2", max_queries=500, generator=gen())
    assert (digits_cnn(adv).argmax(1) != y).float().mean() >= 0.9
    assert flat_norm(adv - x, "l2").max() <= 1.5 * (1 + 1e-5)


def test_targeted_square_reaches_target(digits_cnn, digits_test):
    x, y = digits_test
    x, t = x[:10], (y[:10] + 1) % 10
    adv, _ = square(digits_cnn, x, t, eps=0.3, targeted=True, max_queries=1000, generator=gen())
    assert (digits_cnn(adv).argmax(1) == t).float().mean() >= 0.9


def test_square_finds_the_linf_corner_of_a_linear_model():
    model, x0, y, u, f0 = linear_problem()
    eps = 1.1 * (f0 / flat_norm(u, "l1")).max().item()  # only corners near x0 - eps sign(u) work
    adv, _ = square(model, x0, y, eps=eps, max_queries=1000, generator=gen())
    assert (model(adv).argmax(1) != y).all()


def test_square_linf_window_always_moves():
    """A proposal the box clips back to the current point would waste a query (the authors
    redraw it): on an all-black image, a window of -eps signs is such a proposal."""
    from robustlab.attacks.square import _linf_square

    x = torch.zeros(200, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    for p in (0.02, 0.3):
        cand = _linf_square(x, x.clone(), 0.1, p, g)
        moved = (cand - x).abs().flatten(1).sum(1)
        assert (moved > 0).all()
        assert (((cand - 0.1).abs() < 1e-6) | (cand == 0)).all()
