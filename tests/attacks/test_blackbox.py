import pytest
import torch
from torch import nn

from robustlab.attacks import Oracle, QueryBudgetError, hop_skip_jump, square, zoo
from robustlab.norms import flat_norm

from ..conftest import assert_unchanged, check_conventions, linear_classifier, messy_model, snapshot
from ..conftest import seeded as gen


class CountingModel(nn.Module):
    """Counts the images it sees, and refuses to run where autograd could record the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        if torch.is_grad_enabled():
            raise AssertionError("the model was called with gradients enabled")
        self.images += len(x)
        return self.model(x)


# small budgets: every attack must stop inside them, whatever its own defaults
ATTACKS = {
    "square-linf": (square, dict(eps=0.1, max_queries=30)),
    "square-l2": (square, dict(eps=0.5, norm="l2", max_queries=30)),
    "zoo-adam": (zoo, dict(max_queries=400, coords_per_step=16)),
    "zoo-newton": (zoo, dict(max_queries=400, coords_per_step=16, solver="newton")),
    "hsj-l2": (hop_skip_jump, dict(max_queries=150)),
    "hsj-linf": (hop_skip_jump, dict(max_queries=150, norm="linf")),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_conventions_and_determinism(batch, name):
    attack, kw = ATTACKS[name]
    x, y = batch
    x, y = x[:6], y[:6]
    a, qa = check_conventions(attack, x, y, generator=gen(1), **kw)
    b, qb = attack(messy_model(), x, y, generator=gen(1), **kw)
    assert torch.equal(a, b) and torch.equal(qa, qb), "a fixed generator must give the same output twice"


@pytest.mark.parametrize("name", ATTACKS)
def test_queries_are_counted_and_within_budget(digits_cnn, digits_test, name):
    attack, kw = ATTACKS[name]
    x, y = digits_test
    x, y = x[:6], y[:6]
    model = CountingModel(digits_cnn)
    before = snapshot(model)
    adv, q = attack(model, x, y, generator=gen(), **kw)
    assert q.dtype == torch.long and q.shape == (6,)
    assert q.sum().item() == model.images, "reported queries differ from what the model saw"
    assert (q <= kw["max_queries"]).all() and (q > 0).all()
    assert_unchanged(model, before)
    # a caller's Oracle with a smaller budget caps the attack, which must not overrun it
    oracle = Oracle(model, output="label" if attack is hop_skip_jump else "scores", budget=40)
    oracle(x[:1])  # example 0 has already used one query
    _, q = attack(oracle, x, y, generator=gen(), **kw)
    assert (oracle.queries <= 40).all() and q[0] <= 39
    assert torch.equal(q + torch.tensor([1, 0, 0, 0, 0, 0]), oracle.queries)
    # an example with nothing left to spend is left alone, without an error
    spent = Oracle(model, output=oracle.output, budget=40)
    spent(x[:1].expand(40, -1, -1, -1), torch.zeros(40, dtype=torch.long))
    adv, q = attack(spent, x, y, generator=gen(), **kw)
    assert q[0] == 0 and torch.equal(adv[0], x[0]) and (q[1:] > 0).all()


def test_oracle_budget_and_outputs(digits_cnn, digits_test):
    x, y = digits_test
    x = x[:4]
    model = CountingModel(digits_cnn)
    scores = Oracle(model, budget=2)
    p = scores(x)
    assert p.shape == (4, 10) and torch.allclose(p.sum(1), torch.ones(4))
    scores(x[:2], torch.tensor([0, 3]))
    assert scores.queries.tolist() == [2, 1, 1, 2] and scores.remaining(4).tolist() == [0, 1, 1, 0]
    with pytest.raises(QueryBudgetError, match=r"budget of 2 .* example\(s\) \[0\]"):
        scores(x[:2])
    assert model.images == 6, "a refused query must not reach the model"
    scores.reset()
    scores(x[:2])
    label = Oracle(model, output="label")
    out = label(x)
    assert out.dtype == torch.long and out.shape == (4,)
    assert torch.equal(out, digits_cnn(x).argmax(1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label(x * 2)


def test_oracle_hygiene():
    model = messy_model()
    before = snapshot(model)
    out = Oracle(model)(torch.rand(5, 1, 8, 8))
    assert not out.requires_grad
    assert_unchanged(model, before)


def test_hard_label_oracle_is_enough_for_hsj_but_not_for_score_attacks(digits_cnn, batch):
    x, y = batch
    label = Oracle(digits_cnn, output="label", budget=50)
    adv, q = hop_skip_jump(label, x[:3], y[:3], max_queries=50, generator=gen())
    assert (q <= 50).all()
    for attack, kw in ((square, dict(eps=0.1)), (zoo, {})):
        with pytest.raises(ValueError, match="scores"):
            attack(label, x, y, **kw)


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


def linear_problem(faces: bool = False):
    """A two-class affine model in float64 near x0, where everything is known: the attack loss
    log F_y - log F_o = z_y - z_o = f0 + u . (x - x0) is affine, the closest boundary point is
    f0 / ||u||_2 away in L2 and f0 / ||u||_1 in L-inf, and (without `faces`) every such point
    lies inside [0, 1]. With `faces`, three rows of x0 sit on the faces of the box."""
    model = linear_classifier(k=2).double()
    w = model[1].weight.detach()
    x0 = 0.5 + 0.05 * torch.rand(8, 1, 8, 8, generator=gen(3), dtype=torch.float64)
    if faces:
        x0[..., :2, :], x0[..., 7, :] = 0.0, 1.0
    z = model(x0).detach()
    y = z.argmax(1)
    u = (w[y] - w[1 - y]).view_as(x0)
    f0 = z.gather(1, y[:, None])[:, 0] - z.gather(1, 1 - y[:, None])[:, 0]
    return model, x0, y, u, f0


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


@pytest.mark.parametrize("norm,dual", [("l2", "l2"), ("linf", "l1")])
def test_hop_skip_jump_finds_the_closest_point_of_a_linear_boundary(norm, dual):
    model, x0, y, u, f0 = linear_problem()
    best = f0 / flat_norm(u, dual)
    adv, _ = hop_skip_jump(model, x0, y, norm=norm, max_queries=1500, generator=gen())
    ratio = flat_norm(adv - x0, norm) / best
    assert (ratio >= 1 - 1e-6).all() and (ratio < 1.2).all(), ratio


def test_square_finds_the_linf_corner_of_a_linear_model():
    model, x0, y, u, f0 = linear_problem()
    eps = 1.1 * (f0 / flat_norm(u, "l1")).max().item()  # only corners near x0 - eps sign(u) work
    adv, _ = square(model, x0, y, eps=eps, max_queries=1000, generator=gen())
    assert (model(adv).argmax(1) != y).all()




def test_bad_oracle_arguments(digits_cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="budget"):
        Oracle(digits_cnn, budget=0)
    with pytest.raises(ValueError, match="output"):
        Oracle(digits_cnn, output="logits")
    with pytest.raises(TypeError, match="model"):
        Oracle("not a model")
    with pytest.raises(ValueError, match="y holds label"):
        square(digits_cnn, x, torch.full_like(y, 12), eps=0.1, max_queries=5)


def test_square_linf_window_always_moves():
    """A proposal the box clips back to the current point would waste a query (the authors
    redraw it): on an all-black image, a window of -eps signs is such a proposal."""
    from robustlab.attacks.square import _linf_square

    x = torch.zeros(200, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    for p in (0.02, 0.3):
        new = _linf_square(x, torch.zeros_like(x), 0.1, p, g)
        moved = ((x + new).clamp(0, 1) - x).abs().flatten(1).sum(1)
        assert (moved > 0).all()
        assert (((new.abs() - 0.1).abs() < 1e-6) | (new == 0)).all()
