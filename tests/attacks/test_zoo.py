import pytest
import torch

from robustlab.attacks import zoo
from robustlab.norms import flat_norm

from ..conftest import seeded as gen
from .conftest import BlackBoxContract, linear_problem


class TestBlackBoxContract(BlackBoxContract):
    attack = zoo
    settings = {"adam": dict(max_queries=400, coords_per_step=16),
                "newton": dict(max_queries=400, coords_per_step=16, solver="newton")}


@pytest.mark.parametrize("solver", ["adam", "newton"])
def test_zoo_finds_small_adversarial_examples(digits_cnn, digits_test, solver):
    x, y = digits_test
    x, y = x[:10], y[:10]
    adv, _ = zoo(digits_cnn, x, y, solver=solver, max_queries=2000, generator=gen())
    pred = digits_cnn(adv).argmax(1)
    changed = (adv != x).flatten(1).any(1)
    assert ((pred != y) | ~changed).all(), "ZOO returns x where it found nothing"
    assert (pred != y).float().mean() >= 0.8
    # far below a random point of [0, 1]^64 (about 4.6 away)
    assert flat_norm(adv - x, "l2")[changed].mean() < 1.5


def test_targeted_zoo(digits_cnn, digits_test):
    x, y = digits_test
    x, t = x[:5], (y[:5] + 1) % 10
    adv, _ = zoo(digits_cnn, x, t, targeted=True, c=10.0, lr=0.05, max_queries=2000,
                 generator=gen())
    assert (digits_cnn(adv).argmax(1) == t).float().mean() >= 0.8


def test_zoo_update_rules_on_a_linear_model():
    """With every coordinate in one step, the quotients give grad g = c u at x0 (one-sided on
    the box's faces) and d2g/dx_i^2 = 2 inside, so ZOO-Newton with lr = 1 lands on x0 - c u / 2
    inside and x0 - c u (clipped) on the faces, and ZOO-ADAM's first, bias-corrected step is
    x0 - lr sign(u); the first query of a second step finds them adversarial."""
    model, x0, y, u, f0 = linear_problem(faces=True)
    inside = (x0 > 0) & (x0 < 1)
    c = 3 * (2 * f0 / flat_norm(u, "l2") ** 2).max().item()  # x0 - c u / 2 crosses the boundary
    assert c * u.abs().max() / 2 < 0.45  # the interior steps stay inside the box
    adv, _ = zoo(model, x0, y, solver="newton", lr=1.0, c=c, coords_per_step=64, max_queries=2 * 129)
    newton = torch.where(inside, x0 - c * u / 2, x0 - c * u).clamp(0, 1)
    assert torch.allclose(adv[inside], newton[inside], atol=1e-6)
    assert torch.allclose(adv, newton, atol=1e-3)  # one-sided quotients err by O(h) on the faces
    lr = 3 * (f0 / flat_norm(u, "l1")).max().item()
    adv, _ = zoo(model, x0, y, solver="adam", lr=lr, coords_per_step=64, max_queries=2 * 129)
    assert torch.allclose(adv, (x0 - lr * u.sign()).clamp(0, 1), atol=1e-5)
