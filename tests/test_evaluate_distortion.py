"""PGD's smallest successful radius (`evaluate.pgd_distortion`) and the per-example radii of
`attacks.pgd` it rests on.

The truth is analytic on a two-class linear model z = W x + b: the margin g = (w_y - w_j) . x +
b_y - b_j falls at rate ||w_y - w_j||_q (q the dual norm) along the steepest direction, so the
smallest Lp distance to the boundary is g / ||w_y - w_j||_q, reached inside [0, 1] when it is
small. No attack can do better; PGD with enough steps must come close.
"""

import math

import pytest
import torch
from torch import nn

from robustlab import attacks, evaluate, models, train
from robustlab.norms import DUAL, flat_norm

from .conftest import leaves_as_found, messy_model
from .syncs import count, explain

NORMS = ["linf", "l2", "l1"]


def two_class(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A linear model on 8 x 8 inputs and the weight difference w_0 - w_1 of its classes."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        net[1].bias.zero_()
    return net, (net[1].weight[0] - net[1].weight[1]).detach()


def points(w: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Inputs around 0.5 whose class-0 margin is each of `margins` (0.5 itself has margin
    w . 0.5 = c: moving along w / ||w||^2 adds the rest)."""
    base = torch.full((64,), 0.5)
    shift = (margins - w @ base)[:, None] * w / w.square().sum()
    return (base + shift).view(-1, 1, 8, 8)


def exact(w: torch.Tensor, margins: torch.Tensor, norm: str) -> torch.Tensor:
    return margins / flat_norm(w[None], DUAL[norm])


@pytest.mark.parametrize("norm", NORMS)
def test_linear_model_exact_minimal_distance(norm):
    net, w = two_class()
    q = flat_norm(w[None], DUAL[norm]).item()
    margins = torch.tensor([0.2, 0.5, 1.0, 1.5]) * q * 0.1  # exact distances 0.02 ... 0.15
    x = points(w, margins)
    assert (x >= 0).all() and (x <= 1).all()
    y = torch.zeros(4, dtype=torch.long)
    truth = exact(w, margins, norm)
    r = evaluate.pgd_distortion(net, x, y, norm=norm, high=1.0, bisections=16, steps=200)
    assert r.fooled.all()
    # sound: no adversarial example is closer than the boundary (float32 rounding aside)
    assert (r.distance >= truth * (1 - 1e-4)).all(), (r.distance, truth)
    assert (r.distance <= r.eps * (1 + 1e-5)).all() and (r.failed < r.eps).all()
    # close: within 1 %. L1-PGD's SLIDE steps move the top 5 % of coordinates (3 of 64) by
    # equal amounts, so it reaches the boundary at margin / (mean of the 3 largest |w_i|),
    # not at margin / max |w_i|
    reached = margins / w.abs().topk(3).values.mean() if norm == "l1" else truth
    assert (r.eps <= reached * 1.01).all(), (r.eps / reached)
    # the point found is misclassified and lies in the ball and the box
    assert (train.predict(net, r.x_adv).argmax(1) == 1).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    # monotone: a larger margin needs a larger radius
    assert (r.eps.diff() > 0).all()


def test_brackets_nest_as_rounds_are_added():
    net, w = two_class(1)
    x = points(w, torch.tensor([0.05, 0.1, 0.3]))
    y = torch.zeros(3, dtype=torch.long)
    few = evaluate.pgd_distortion(net, x, y, high=1.0, bisections=4, steps=50)
    more = evaluate.pgd_distortion(net, x, y, high=1.0, bisections=8, steps=50)
    assert (more.failed >= few.failed).all() and (more.eps <= few.eps).all()
    assert ((more.eps - more.failed) <= 1.0 / 2 ** 8 + 1e-7).all()


def test_misclassified_and_unbreakable_examples():
    net, w = two_class(2)
    # L-inf distances to the boundary: -0.002 (wrong side), 0.002 and 0.2
    x = points(w, torch.tensor([-0.002, 0.002, 0.2]) * w.abs().sum())
    assert (x >= 0).all() and (x <= 1).all()
    y = torch.zeros(3, dtype=torch.long)
    r = evaluate.pgd_distortion(net, x, y, norm="linf", high=0.01, bisections=6, steps=20)
    # already wrong: radius 0 and x itself; too far for `high`: inf and x itself
    assert r.eps[0] == 0 and r.fooled[0] and torch.equal(r.x_adv[0], x[0])
    assert not r.fooled[2] and math.isinf(r.eps[2]) and math.isinf(r.distance[2])
    assert torch.equal(r.x_adv[2], x[2])
    # what was seen: PGD failed at `high` on the unbreakable one, nothing below 0 on the wrong one
    assert r.failed[2] == 0.01 and r.failed[0] == 0
    assert r.fooled[1] and 0.002 * (1 - 1e-4) <= r.eps[1] <= 0.002 + 0.01 / 2 ** 6  # one bracket
    assert "fooled" in r.table()


def test_leaves_model_and_inputs_as_found(digits_test):
    m = messy_model()
    x, y = digits_test[0][:4], digits_test[1][:4]
    r = leaves_as_found(lambda: evaluate.pgd_distortion(m, x, y, high=2.0, bisections=3, steps=5), m, x, y)
    assert r.eps.shape == (4,) and r.x_adv.shape == x.shape


@pytest.mark.parametrize("kwargs, match", [
    (dict(high=0.0), "high must be > 0"),
    (dict(high=-1.0), "high must be > 0"),
    (dict(high=1.0, bisections=0), "bisections must be > 0"),
    (dict(high=1.0, bisections=2.5), "bisections must be an int"),
    (dict(high=1.0, steps=0), "steps must be > 0"),
    (dict(high=1.0, step_factor=0.0), "step_factor must be > 0"),
    (dict(high=1.0, norm="l0"), "norm must be one of"),
])
def test_bad_input_is_named(kwargs, match):
    net, w = two_class()
    x, y = points(w, torch.tensor([0.1])), torch.zeros(1, dtype=torch.long)
    with pytest.raises((ValueError, TypeError), match=match):
        evaluate.pgd_distortion(net, x, y, **kwargs)


def test_labels_out_of_range_are_refused():
    net, w = two_class()
    with pytest.raises(ValueError, match="y"):
        evaluate.pgd_distortion(net, points(w, torch.tensor([0.1])), torch.tensor([5]), high=1.0)


def test_host_reads_grow_with_rounds_not_with_pgd_steps(digits_test):
    net = models.MLP(hidden=(16,)).eval()
    x, y = digits_test[0][:4], digits_test[1][:4]

    def run(bisections, steps):
        return count(lambda: evaluate.pgd_distortion(net, x, y, high=2.0, bisections=bisections, steps=steps))

    a, b = run(2, 3), run(2, 12)
    assert a.total == b.total, explain(a, b)  # none inside PGD's loop
    c = run(4, 3)
    per_round = (c.total - a.total) / 2
    assert per_round == run(3, 3).total - a.total <= 8, explain(a, c)  # a few per round, PGD's checks


# --- attacks.pgd with one radius per example ----------------------------------------------------

@pytest.mark.parametrize("norm", NORMS)
def test_pgd_per_example_radii_equal_one_call_per_example(norm, digits_test):
    net = models.MLP(hidden=(16,)).eval()
    torch.manual_seed(0)
    x, y = digits_test[0][:3], digits_test[1][:3]
    eps = torch.tensor([0.05, 0.3, 1.0])
    together = attacks.pgd(net, x, y, eps=eps, alpha=eps / 4, steps=6, norm=norm, random_start=False)
    for i in range(3):
        alone = attacks.pgd(net, x[i:i + 1], y[i:i + 1], eps=eps[i].item(), alpha=eps[i].item() / 4,
                            steps=6, norm=norm, random_start=False)
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6)
    assert (flat_norm(together - x, norm) <= eps * (1 + 1e-5)).all()


def test_pgd_per_example_random_start_stays_in_each_ball(digits_test):
    net = models.MLP(hidden=(16,)).eval()
    x, y = digits_test[0][:3], digits_test[1][:3]
    eps = torch.tensor([0.0, 0.1, 0.5])
    for norm in NORMS:
        out = attacks.pgd(net, x, y, eps=eps, alpha=0.1, steps=1, norm=norm,
                          generator=torch.Generator().manual_seed(0))
        assert (flat_norm(out - x, norm) <= eps * (1 + 1e-5)).all(), norm
        assert torch.equal(out[0], x[0])


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_per_example_random_start_equals_one_call_per_example(norm, digits_test):
    # the same generator draws the same start for the whole batch: row i scaled by its own radius
    # must be the start (and so the run) of a call with that radius alone
    net = models.MLP(hidden=(16,)).eval()
    x, y = digits_test[0][:4], digits_test[1][:4]
    eps = torch.tensor([0.0, 0.05, 0.4, 30.0])  # 30: a ball larger than the box
    together = attacks.pgd(net, x, y, eps=eps, alpha=0.05, steps=3, norm=norm,
                           generator=torch.Generator().manual_seed(2))
    for i in range(4):
        alone = attacks.pgd(net, x, y, eps=eps[i].item(), alpha=0.05, steps=3, norm=norm,
                            generator=torch.Generator().manual_seed(2))
        assert torch.allclose(together[i], alone[i], atol=1e-6), (norm, i)


@pytest.mark.parametrize("eps, match", [
    (torch.tensor([0.1, 0.2]), r"shape \(3,\)"),
    (torch.tensor([0.1, -0.2, 0.1]), "finite radii >= 0"),
    (torch.tensor([0.1, math.nan, 0.1]), "finite radii >= 0"),
    (torch.tensor([1, 2, 3]), "float tensor"),
])
def test_pgd_refuses_bad_radii(eps, match, digits_test):
    net = models.MLP(hidden=(4,)).eval()
    x, y = digits_test[0][:3], digits_test[1][:3]
    with pytest.raises(ValueError, match=match):
        attacks.pgd(net, x, y, eps=eps, alpha=0.1, steps=1)
    with pytest.raises(ValueError, match="alpha"):
        attacks.pgd(net, x, y, eps=0.1, alpha=torch.tensor([0.1, 0.0, 0.1]), steps=1)
