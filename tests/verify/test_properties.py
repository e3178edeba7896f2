"""verify_property / never_class / verify_monotone: analytic truths on a hand-built ReLU net,
soundness and completeness against sampling on random MLPs, the traffic-light example of the
lesson (no red light near this one is called green), bad input and hygiene."""

import functools

import pytest
import torch
from torch import nn

from robustlab import data, models
from robustlab.train import fit
from robustlab.verify import never_class, verify_monotone, verify_property

from ..conftest import leaves_as_found
from .conftest import random_mlp


def hand_net() -> nn.Module:
    """Logits (relu(x0 - x1), relu(x1 - x0)) in float64: class 0 wins iff x0 > x1."""
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        m[0].bias.zero_()
        m[2].weight.copy_(torch.eye(2))
        m[2].bias.zero_()
    return m.eval()


def box(*pairs, dtype=torch.float64):
    lo, up = zip(*pairs)
    return torch.tensor(lo, dtype=dtype), torch.tensor(up, dtype=dtype)


def samples(lower, upper, n=3000, seed=0):
    """Random points and corners of the box (n, *shape)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, *lower.shape, generator=g, dtype=torch.float64).to(lower.dtype)
    t[::2] = t[::2].round()
    return lower + (upper - lower) * t


def in_box(p, lower, upper):
    return bool(((p >= lower) & (p <= upper)).all())


def test_hand_net_true_and_false_properties():
    m = hand_net()
    lo, up = box((0.5, 1.0), (0.0, 0.4))  # x0 - x1 >= 0.1 everywhere
    v = verify_property(m, lo, up, C=torch.tensor([[1.0, -1.0]]), d=torch.tensor([-0.05]))
    assert v.status == "verified"
    v = verify_property(m, lo, up, C=torch.tensor([[1.0, -1.0]]), d=torch.tensor([-0.15]))
    assert v.status == "falsified"  # min f0 - f1 = 0.1 at x = (0.5, 0.4) only
    assert torch.allclose(v.counterexample, torch.tensor([0.5, 0.4], dtype=torch.float64), atol=1e-4)
    lo, up = box((0.5, 1.0), (0.0, 0.8))  # the box now reaches x1 > x0: class 1 somewhere
    v = verify_property(m, lo, up, **never_class(1, 2))
    assert v.status == "falsified"
    p = v.counterexample
    assert in_box(p, lo, up) and m(p[None]).argmax(1).item() == 1
    assert torch.allclose(p, torch.tensor([0.5, 0.8], dtype=torch.float64), atol=1e-4)  # the worst point
    assert verify_property(m, *box((0.5, 1.0), (0.0, 0.45)), **never_class(1, 2)).status == "verified"


def test_all_and_any_agree_with_sampling_on_random_mlps():
    """Every verdict is decided; "verified" is never contradicted by 3000 samples, and every
    counterexample lies in the box and really violates the property in the model."""
    model = random_mlp([4, 8, 8, 3], 0)
    g = torch.Generator().manual_seed(3)
    statuses = []
    for trial in range(6):
        centre = torch.rand(1, 1, 4, generator=g)
        width = 0.05 + 0.2 * torch.rand(1, 1, 4, generator=g)
        lo, up = centre - width, centre + width
        C = torch.randn(2, 3, generator=g)
        with torch.no_grad():
            rows = model(samples(lo, up)) @ C.T
        d = -rows.min(0).values + (0.2 if trial % 2 else -0.2) * rows.std(0)
        for require in ("all", "any"):
            v = verify_property(model, lo, up, C=C, d=d, require=require)
            statuses.append(v.status)
            held = (rows + d).min(1).values > 0 if require == "all" else (rows + d).max(1).values > 0
            if v.status == "verified":
                assert held.all()
            else:
                assert v.status == "falsified", v.reason
                p = v.counterexample
                assert p.shape == lo.shape and p.dtype == lo.dtype and in_box(p, lo, up)
                with torch.no_grad():
                    r = model(p[None]) @ C.T + d
                assert (r.min() if require == "all" else r.max()) < 0
    assert {"verified", "falsified"} <= set(statuses)


@functools.cache
def traffic_mlp():
    """A small MLP on 3 x 8 x 8 traffic lights (red 0, amber 1, green 2), trained briefly: the
    lesson's model is the 32 x 32 traffic-cnn, whose 3072 inputs make a region's MILP too big
    for a test."""
    torch.manual_seed(0)
    model = models.MLP((3, 8, 8), (16,), 3)
    fit(model, data.traffic_lights("train", n=600, size=8), epochs=15, lr=3e-3, progress=False,
        device="cpu")
    x, y = data.traffic_lights("test", n=60, size=8)
    return model.eval(), x, y


def test_no_red_light_near_this_one_is_called_green():
    model, x, y = traffic_mlp()
    with torch.no_grad():
        right = (model(x).argmax(1) == y) & (y == 0)
    red = x[right.nonzero()[0, 0]]
    spec = never_class(2, 3)
    small = verify_property(model, (red - 0.02).clamp(0, 1), (red + 0.02).clamp(0, 1), **spec)
    assert small.status == "verified", small.reason
    lo, up = (red - 0.5).clamp(0, 1), (red + 0.5).clamp(0, 1)
    big = verify_property(model, lo, up, **spec)
    assert big.status == "falsified", big.reason
    assert in_box(big.counterexample, lo, up)
    with torch.no_grad():
        assert model(big.counterexample[None]).argmax(1).item() == 2


def test_monotone_on_the_hand_net_and_against_sampled_pairs():
    m = hand_net()
    lo, up = box((0.0, 1.0), (0.0, 1.0))
    assert verify_monotone(m, lo, up, feature=0, output=0).status == "verified"  # relu(x0 - x1) grows
    v = verify_monotone(m, lo, up, feature=1, output=0)
    assert v.status == "falsified"
    x0, x1 = v.counterexample
    assert x0[0] == x1[0] and x1[1] > x0[1]
    assert (m(x1[None]) - m(x0[None]))[0, 0].item() < -0.5  # the largest drop is 1, from (1, 0) to (1, 1)
    model = random_mlp([3, 6, 2], 4)
    g = torch.Generator().manual_seed(0)
    for feature in range(3):
        lo = torch.rand(1, 1, 3, generator=g) * 0.5
        up = lo + 0.3
        v = verify_monotone(model, lo, up, feature=feature, output=1)
        a = samples(lo, up, 2000)
        b = a.clone()
        b[..., feature] = torch.maximum(a[..., feature], samples(lo, up, 2000, 1)[..., feature])
        with torch.no_grad():
            drop = (model(b) - model(a))[:, 1].min().item()
        if v.status == "verified":
            assert drop >= -1e-3
        else:
            assert v.status == "falsified"
            p, q = v.counterexample
            assert in_box(p, lo, up) and in_box(q, lo, up)
            with torch.no_grad():
                assert (model(q[None]) - model(p[None]))[0, 1].item() < -1e-3


def test_float32_model_and_hygiene():
    model = random_mlp([4, 8, 8, 3], 0)
    lo, up = torch.full((1, 1, 4), 0.3), torch.full((1, 1, 4), 0.4)
    v = leaves_as_found(lambda: verify_property(model, lo, up, **never_class(0, 3)), model, lo, up)
    assert v.status in ("verified", "falsified") and v.seconds > 0
    leaves_as_found(lambda: verify_monotone(model, lo, up, feature=1, output=2), model, lo, up)


@pytest.mark.parametrize("change, match", [
    (dict(lower=torch.tensor([0.6, 0.0], dtype=torch.float64)), "lower exceeds upper"),
    (dict(lower=torch.tensor([float("nan"), 0.0], dtype=torch.float64)), "lower contains NaN"),
    (dict(C=torch.ones(1, 3)), r"C must be a tensor of shape \(S, 2\)"),
    (dict(C=torch.ones(2)), "C must be"),
    (dict(d=torch.zeros(2)), r"d must be a tensor of shape \(1,\)"),
    (dict(C=torch.tensor([[float("nan"), 1.0]])), "C and d must be finite"),
    (dict(upper=torch.ones(3, dtype=torch.float64)), "lower and upper must have one shape"),
    (dict(lower=torch.zeros(2), upper=torch.ones(2)), "lower has dtype"),
    (dict(require="some"), "require"),
    (dict(time_limit=0), "time_limit"),
])
def test_bad_input_is_named(change, match):
    args = dict(lower=torch.zeros(2, dtype=torch.float64), upper=torch.full((2,), 0.5, dtype=torch.float64),
                C=torch.tensor([[1.0, -1.0]]), d=None)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        verify_property(hand_net(), **args)


def test_bad_helper_arguments():
    with pytest.raises(ValueError, match="j must be a class index"):
        never_class(3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        never_class(0, 1)
    lo, up = box((0.0, 1.0), (0.0, 1.0))
    with pytest.raises(ValueError, match="feature must be an index"):
        verify_monotone(hand_net(), lo, up, feature=2)
    with pytest.raises(ValueError, match="output must be an index"):
        verify_monotone(hand_net(), lo, up, feature=0, output=-1)
    with pytest.raises(ValueError, match="slack"):
        verify_monotone(hand_net(), lo, up, feature=0, slack=-1.0)
