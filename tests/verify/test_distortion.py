"""min_distortion: exact on linear models (analytic), between what CROWN certifies and what an
attack finds on ReLU nets, consistent with milp on either side, max_eps, time limit, bad input,
hygiene and the table."""

import pytest
import torch
from torch import nn

from robustlab.attacks import pgd
from robustlab.norms import flat_norm
from robustlab.verify import crown, margin_spec, milp, min_distortion

from ..conftest import leaves_as_found, messy_model
from .conftest import labelled_points, tiny_mlps


def near_ties(d: int, k: int, seed: int) -> nn.Module:
    """A linear classifier on (1, 1, d) inputs whose logits nearly tie at x = 0.5: the minimal
    distortions are small, so the box [0, 1] does not bind around points near 0.5."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        lin.bias.copy_(-lin.weight @ torch.full((d,), 0.5, dtype=torch.float64)
                       + 0.1 * torch.randn(k, generator=g, dtype=torch.float64))
    return nn.Sequential(nn.Flatten(), lin).eval()


def check_counterexamples(model, x, y, res):
    for i, adv in enumerate(res.counterexamples):
        if adv is None:
            continue
        assert adv.shape == x[i].shape and adv.dtype == x.dtype and 0 <= adv.min() and adv.max() <= 1
        with torch.no_grad():
            pred = model(adv[None]).argmax(1).item()
        assert pred != y[i].item() and pred == res.targets[i]
        dist = flat_norm((adv - x[i])[None], res.norm).item()
        assert dist <= res.distortion[i].item() * (1 + 1e-3) + 1e-7, (dist, res.distortion[i])
        # nothing closer than the proven lower bound is misclassified: the point is not either
        assert dist >= res.lower[i].item() * (1 - 1e-5) - 1e-6  # float32 rounding of x and model


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("d, k", [(4, 3), (64, 5)])
def test_exact_on_a_linear_model(norm, d, k):
    """min over j of (z_y - z_j) / ||w_y - w_j||_q, q the dual norm (1 for L-inf, inf for L1)."""
    model = near_ties(d, k, seed=d)
    x = (0.5 + 0.02 * torch.rand(6, 1, 1, d, generator=torch.Generator().manual_seed(1))).double()
    with torch.no_grad():
        z, y = model(x), model(x).argmax(1)
    w = model[1].weight
    q = 1 if norm == "linf" else float("inf")
    res = min_distortion(model, x, y, norm=norm)
    check_counterexamples(model, x, y, res)
    for i in range(len(x)):
        yi = y[i].item()
        exact = min(((z[i, yi] - z[i, j]) / (w[yi] - w[j]).norm(p=q)).item() for j in range(k) if j != yi)
        assert exact < 0.4, "the box would bind: the formula does not apply"
        assert res.status[i] == "optimal", res.notes[i]
        assert abs(res.distortion[i].item() - exact) <= 1e-5 * (1 + exact), (i, exact, res.distortion[i])
        assert exact * (1 - 1e-5) - 1e-9 <= res.lower[i].item() <= exact * (1 + 1e-6) + 1e-9


def crown_radius(model, x, y, norm, hi=1.0, steps=30):
    """The largest eps (bisection) at which CROWN proves z_y > z_j for every j, per example."""
    lo_eps, hi_eps = torch.zeros(len(x)), torch.full((len(x),), hi)
    C = margin_spec(y, model(x).shape[1])
    for _ in range(steps):
        mid = (lo_eps + hi_eps) / 2
        ok = torch.stack([crown(model, x[i:i + 1], eps=mid[i].item(), norm=norm, C=C[i:i + 1]).lower.min() > 0
                          for i in range(len(x))])
        lo_eps, hi_eps = torch.where(ok, mid, lo_eps), torch.where(ok, hi_eps, mid)
    return lo_eps


@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("name", ["4-8-8-3", "9-12-4"])
def test_between_crown_and_attacks_and_exact_for_milp(name, norm):
    model, shape = tiny_mlps()[name]
    x, y = labelled_points(model, shape, 4, seed=4)
    res = min_distortion(model, x, y, norm=norm)
    check_counterexamples(model, x, y, res)
    assert all(s == "optimal" for s in res.status), res.notes
    d = res.distortion.float()
    # float32 models: between the lower bound and the counterexample lies the band where the
    # model's rounding decides the class (up to about 1e-4 here); float64 models are exact (above)
    assert (res.gap <= 1e-4 * res.distortion + 2e-4).all(), res.gap
    # CROWN's certified radius is a lower bound of the exact one
    assert (crown_radius(model, x, y, norm) <= d * (1 + 1e-5) + 1e-7).all()
    for i in range(len(x)):
        xi, yi, di = x[i:i + 1], y[i:i + 1], d[i].item()
        # an attack never beats the proven lower bound, and finds something at a larger radius
        for eps, can_fool in ((0.99 * di, False), (1.5 * di, True)):
            fooled = False
            for r in range(4):
                adv = pgd(model, xi, yi, eps=eps, alpha=eps / 5, steps=40, norm=norm, loss="margin",
                          l1_top=0.25, generator=torch.Generator().manual_seed(r))
                with torch.no_grad():
                    fooled |= bool(model(adv).argmax(1) != yi)
            if not can_fool:
                assert not fooled, f"PGD fooled example {i} below the exact distortion {di:.4g}"
        # the exact verifier agrees on either side of the distortion
        (below,) = milp(model, xi, yi, eps=0.99 * di, norm=norm)
        (above,) = milp(model, xi, yi, eps=1.01 * di, norm=norm)
        assert below.status == "verified" and above.status == "falsified", (i, below, above)


def test_max_eps_below_and_above_the_answer():
    model, shape = tiny_mlps()["4-8-8-3"]
    x, y = labelled_points(model, shape, 3, seed=5)
    full = min_distortion(model, x, y)
    short = min_distortion(model, x, y, max_eps=0.5 * full.distortion.min().item())
    assert short.status == ["beyond max_eps"] * 3
    assert torch.isinf(short.distortion).all() and (short.lower == 0.5 * full.distortion.min()).all()
    assert short.counterexamples == [None] * 3 and "-" in short.table()
    wide = min_distortion(model, x, y, max_eps=2 * full.distortion.max().item())
    torch.testing.assert_close(wide.distortion, full.distortion, rtol=1e-5, atol=1e-7)


def test_misclassified_input_has_distortion_zero():
    model, shape = tiny_mlps()["9-12-4"]
    x, y = labelled_points(model, shape, 2, seed=6)
    res = min_distortion(model, x, (y + 1) % 4)
    assert res.status == ["misclassified"] * 2 and (res.distortion == 0).all() and (res.lower == 0).all()
    assert torch.equal(res.counterexamples[0], x[0])


def test_time_limit_gives_unknown_with_sound_bounds(digits_mlp, digits_test):
    x, y = digits_test[0][:2], digits_test[1][:2]
    res = min_distortion(digits_mlp, x, y, norm="l1", time_limit=0.3)
    assert "unknown" in res.status
    for i, status in enumerate(res.status):
        assert res.lower[i] <= res.distortion[i]
        if status == "unknown":
            assert "time limit" in res.notes[i]
    check_counterexamples(digits_mlp, x, y, res)


def test_table_lists_every_example():
    model, shape = tiny_mlps()["4-8-8-3"]
    x, y = labelled_points(model, shape, 3, seed=7)
    res = min_distortion(model, x, y, norm="l1")
    text = str(res)
    assert "distortion (l1)" in text and "lower bound" in text and len(text.splitlines()) == 2 + 3
    assert res._repr_markdown_() == text


def test_bad_input_names_the_argument():
    model, shape = tiny_mlps()["4-8-8-3"]
    x, y = labelled_points(model, shape, 2)
    for kw, name in [({"norm": "l2"}, "norm"), ({"norm": "l3"}, "norm"), ({"max_eps": 0}, "max_eps"),
                     ({"max_eps": -1.0}, "max_eps"), ({"time_limit": 0}, "time_limit"),
                     ({"bounds": "lp"}, "bounds")]:
        with pytest.raises(ValueError, match=name):
            min_distortion(model, x, y, **kw)
    with pytest.raises(ValueError, match="y"):
        min_distortion(model, x, y[:1])
    with pytest.raises(ValueError, match="y"):
        min_distortion(model, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="Tanh"):
        min_distortion(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh()), x, y)


def test_leaves_model_and_inputs_as_found(digits_test):
    model = messy_model()
    x, y = digits_test[0][:2].clone(), digits_test[1][:2].clone()
    res = leaves_as_found(lambda: min_distortion(model, x, y, max_eps=0.01), model, x, y)
    assert len(res.status) == 2 and "unknown" not in res.status
