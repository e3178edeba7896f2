"""milp: sound and complete against brute force on tiny networks, never weaker than CROWN, exact
on a linear model, "unknown" with a reason when time runs out, bad input and hygiene."""

import pytest
import torch
from torch import nn

from robustlab.attacks import pgd
from robustlab.norms import flat_norm
from robustlab.verify import crown, interval, margin_spec, milp

from ..conftest import linear_classifier


def tiny_nets() -> dict:
    """A 4-8-8-3 MLP on (1, 2, 2) inputs and a conv / max-pool net on (1, 4, 4)."""
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    pool = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(),
                         nn.Linear(12, 3))
    return {"mlp": (mlp.eval(), (1, 2, 2)), "pool": (pool.eval(), (1, 4, 4))}


def assert_counterexample(model, x, y, v, eps, norm="linf"):
    adv = v.counterexample
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    assert flat_norm((adv - x)[None], norm).item() <= eps * (1 + 1e-6) + 1e-7
    with torch.no_grad():
        assert model(adv[None]).argmax(1).item() != y, "a falsified verdict's point is classified right"


def brute_force(model, x, y, eps, n=4000):
    """Which examples random points, corners and PGD with restarts misclassify (N,) bool."""
    g = torch.Generator().manual_seed(0)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    with torch.no_grad():
        for i in range(n // 200):
            d = torch.rand((200, *x.shape), generator=g) * 2 - 1
            d = d.sign() if i % 2 else d
            p = (x + eps * d).clamp(0, 1)
            fooled |= (model(p.flatten(0, 1)).argmax(1).view(200, -1) != y).any(0)
    for r in range(5):
        adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=30, loss="margin",
                  generator=torch.Generator().manual_seed(r))
        with torch.no_grad():
            fooled |= model(adv).argmax(1) != y
    return fooled


@pytest.mark.parametrize("name", list(tiny_nets()))
def test_sound_and_complete_on_tiny_nets(name):
    model, shape = tiny_nets()[name]
    x = torch.rand(12, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    statuses = set()
    for eps in (0.05, 0.2):
        verdicts = milp(model, x, y, eps=eps)
        fooled = brute_force(model, x, y, eps)
        for i, v in enumerate(verdicts):
            assert v.status != "unknown", v.reason
            assert v.seconds > 0
            statuses.add(v.status)
            if v.status == "falsified":
                assert_counterexample(model, x[i], y[i].item(), v, eps)
            else:  # verified: nothing breaks it, and everything brute force breaks is falsified
                assert not fooled[i], f"example {i} verified at eps={eps} but broken by brute force"
    assert statuses == {"verified", "falsified"}, "the suite should hold both answers"


def test_never_weaker_than_crown_on_digits_mlp(digits_mlp, digits_test):
    x, y = digits_test[0][:10], digits_test[1][:10]
    eps = 0.05
    C = margin_spec(y, 10)
    by_crown = crown(digits_mlp, x, eps=eps, C=C).lower.min(1).values > 0
    by_ibp = interval(digits_mlp, x, eps=eps, C=C).lower.min(1).values > 0
    verdicts = milp(digits_mlp, x, y, eps=eps)
    verified = torch.tensor([v.verified for v in verdicts])
    assert not (by_crown & ~verified).any(), "CROWN verifies an example the MILP does not"
    assert verified.sum() >= by_crown.sum() >= by_ibp.sum()
    for i, v in enumerate(verdicts):
        assert v.status != "unknown", v.reason
        if v.status == "falsified":
            assert_counterexample(digits_mlp, x[i], y[i].item(), v, eps)


def test_interval_and_crown_big_m_agree(digits_mlp, digits_test):
    x, y = digits_test[0][:6], digits_test[1][:6]
    a = milp(digits_mlp, x, y, eps=0.02, bounds="interval")
    b = milp(digits_mlp, x, y, eps=0.02, bounds="crown")
    assert [v.status for v in a] == [v.status for v in b]
    assert all(v.status != "unknown" for v in a)


def linear_max_margin(model, x, y, j, eps, norm):
    """max over the ball and [0, 1] of z_j - z_y for an affine model: per coordinate for L-inf,
    the greedy fractional knapsack for L1."""
    w, b = model[1].weight.double(), model[1].bias.double()
    g, x = w[j] - w[y], x.flatten().double()
    room = torch.where(g > 0, 1 - x, x)
    base = g @ x + b[j] - b[y]
    if norm == "linf":
        return (base + (g.abs() * room.clamp(max=eps)).sum()).item()
    gain, budget = base, eps
    for i in g.abs().argsort(descending=True).tolist():
        step = min(budget, room[i].item())
        gain, budget = gain + g[i].abs() * step, budget - step
    return gain.item()


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("linf", 0.1), ("l1", 0.5), ("l1", 2.0)])
def test_exact_on_a_linear_model(digits_test, norm, eps):
    model = linear_classifier(k=4)
    x = digits_test[0][:10]
    with torch.no_grad():
        y = model(x).argmax(1)
    verdicts = milp(model, x, y, eps=eps, norm=norm)
    decided = 0
    for i, v in enumerate(verdicts):
        worst = max(linear_max_margin(model, x[i], y[i].item(), j, eps, norm)
                    for j in range(4) if j != y[i].item())
        if abs(worst) < 1e-3:
            continue
        decided += 1
        assert v.status == ("falsified" if worst > 0 else "verified"), (i, worst, v.reason)
        if v.status == "falsified":
            assert_counterexample(model, x[i], y[i].item(), v, eps, norm)
    assert decided >= 8


def test_time_limit_gives_unknown_with_a_reason(digits_mlp, digits_test):
    x, y = digits_test[0][:4], digits_test[1][:4]
    verdicts = milp(digits_mlp, x, y, eps=0.08, bounds="interval", time_limit=0.2)
    assert any(v.status == "unknown" for v in verdicts)
    for i, v in enumerate(verdicts):
        if v.status == "unknown":
            assert "time limit" in v.reason
        elif v.status == "falsified":
            assert_counterexample(digits_mlp, x[i], y[i].item(), v, 0.08)


def test_misclassified_input_is_its_own_counterexample(digits_mlp, digits_test):
    x = digits_test[0][:1]
    with torch.no_grad():
        wrong = (digits_mlp(x).argmax(1) + 1) % 10
    (v,) = milp(digits_mlp, x, wrong, eps=0.0)
    assert v.status == "falsified" and torch.equal(v.counterexample, x[0])


def test_bad_input_names_the_argument(digits_mlp, digits_test):
    x, y = digits_test[0][:2], digits_test[1][:2]
    with pytest.raises(ValueError, match="eps"):
        milp(digits_mlp, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="norm"):
        milp(digits_mlp, x, y, eps=0.1, norm="l2")
    with pytest.raises(ValueError, match="bounds"):
        milp(digits_mlp, x, y, eps=0.1, bounds="lp")
    with pytest.raises(ValueError, match="time_limit"):
        milp(digits_mlp, x, y, eps=0.1, time_limit=0)
    with pytest.raises(ValueError, match="y"):
        milp(digits_mlp, x, y[:1], eps=0.1)
    with pytest.raises(ValueError, match="y"):
        milp(digits_mlp, x, torch.tensor([0, 10]), eps=0.1)
    with pytest.raises(ValueError, match="Tanh"):
        milp(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()), x, y, eps=0.1)
