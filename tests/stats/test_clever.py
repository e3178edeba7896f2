"""CLEVER (robustlab.stats.clever): exact on a linear model, sound on a trained one, the fit and
its fallback, the sampler, bad input, hygiene and host syncs."""

import math

import numpy as np
import pytest
import torch

from robustlab._model import predict
from robustlab.stats import clever
from robustlab.stats.clever import fit_reverse_weibull, uniform_in_ball
from tests.conftest import leaves_as_found, linear_classifier, messy_model, seeded
from tests.syncs import explain, grows

DUAL = {"l1": math.inf, "l2": 2, "linf": 1}


def exact_scores(model, x, norm, radius, target=None):
    """min_j (z_c - z_j) / ||w_c - w_j||_q at x, clipped at the radius (the scores of a linear
    model, whose margins change at exactly that rate in the worst direction)."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    z = x.flatten(1).double() @ w.T + b
    c = z.argmax(1)
    out = []
    for i in range(len(x)):
        js = [j for j in range(w.shape[0]) if j != c[i]] if target is None else [target]
        out.append(min(min((z[i, c[i]] - z[i, j]).item()
                           / torch.linalg.vector_norm(w[c[i]] - w[j], ord=DUAL[norm]).item(),
                           radius) for j in js))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_linear_model_scores_are_exact_within_5_percent(eight, norm):
    x, _ = eight
    model = linear_classifier()
    radius = {"l1": 5.0, "l2": 1.0, "linf": 0.1}[norm]
    out = clever(model, x, norm=norm, radius=radius, n_batches=10, batch_size=8,
                 generator=seeded(1))
    exact = exact_scores(model, x, norm, radius)
    assert torch.allclose(out.score, exact, rtol=0.05, atol=0), (out.score, exact)
    # a constant gradient makes every batch maximum equal: no law to fit, the fallback is used
    assert out.fallback.all() and torch.isnan(out.shape).all()


def test_linear_model_clipped_at_radius(eight):
    x, _ = eight
    model = linear_classifier()
    out = clever(model, x, norm="l2", radius=0.01, n_batches=10, batch_size=4)
    assert (out.score == 0.01).sum() >= 4 and (out.score <= 0.01).all()
    assert torch.allclose(out.score, exact_scores(model, x, "l2", 0.01), rtol=0.05, atol=0)


@pytest.mark.parametrize("norm", [1, 2, math.inf])
def test_targeted_linear_model_is_exact(eight, norm):
    x, _ = eight
    model = linear_classifier()
    name = {1: "l1", 2: "l2", math.inf: "linf"}[norm]
    pred = model(x).argmax(1)
    target = int((pred[0] + 1) % 10)
    keep = pred != target
    out = clever(model, x[keep], norm=norm, radius=10.0, n_batches=10, batch_size=4,
                 target=target, generator=seeded(2))
    assert (out.target == target).all()
    exact = exact_scores(model, x[keep], name, 10.0, target=target)
    assert torch.allclose(out.score, exact, rtol=0.05, atol=0)


def test_untargeted_is_the_smallest_targeted_score(eight):
    x, _ = eight
    model = linear_classifier()
    untargeted = clever(model, x[:2], radius=5.0, n_batches=10, batch_size=4)
    for i in range(2):
        j = int(untargeted.target[i])
        one = clever(model, x[i:i + 1], radius=5.0, n_batches=10, batch_size=4, target=j)
        assert torch.allclose(one.score, untargeted.score[i:i + 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_digits_mlp_scores_are_sound_and_seeded(digits_mlp, digits_test, seed):
    x = digits_test[0][:2]
    kw = dict(norm="l2", radius=2.0, n_batches=10, batch_size=32)
    a = clever(digits_mlp, x, generator=seeded(seed), **kw)
    b = clever(digits_mlp, x, generator=seeded(seed), **kw)
    assert torch.isfinite(a.score).all() and (a.score > 0).all() and (a.score <= 2.0).all()
    assert torch.equal(a.score, b.score) and torch.equal(a.maxima, b.maxima)
    # the estimate never undercuts the largest gradient norm it saw
    assert (a.lipschitz >= a.maxima.amax(1)).all()
    assert (a.margin > 0).all() and a.maxima.shape == (2, 10)
    assert "KS p-value" in a.table()


def test_fit_recovers_the_location_of_reverse_weibull_maxima():
    rng = np.random.default_rng(0)
    for shape in (2.0, 5.0):
        maxima = 3.0 - 0.5 * rng.weibull(shape, 400)  # reverse Weibull with location 3
        location, fitted, scale, p, fallback = fit_reverse_weibull(maxima)
        assert not fallback and p >= 0.05
        assert abs(location - 3.0) < 0.1 and abs(fitted - shape) / shape < 0.3
        assert location >= maxima.max()


def test_fit_falls_back_to_the_maximum_on_a_tied_top_or_a_poor_fit():
    assert fit_reverse_weibull(np.full(20, 2.5))[::4] == (2.5, True)
    tied = np.array([1.0, 2.0, 3.0, 3.0, 2.5] * 4)
    assert fit_reverse_weibull(tied)[0] == 3.0 and fit_reverse_weibull(tied)[4]
    near = tied.copy()
    near[3] = 3.0 * (1 - 1e-8)  # the same gradient, rounded differently in another batch row
    assert fit_reverse_weibull(near)[::4] == (3.0, True)
    two_values = np.array([1.0] * 30 + [2.0, 1.5])  # no continuous law of three parameters fits
    location, *_, fallback = fit_reverse_weibull(two_values)
    assert location >= 2.0 and (fallback or location < 10)
    assert fit_reverse_weibull(np.array([1.0, np.inf] * 10))[::4] == (math.inf, True)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_samples_are_uniform_in_the_ball(norm):
    d, n, radius = 4, 20000, 0.3
    x = torch.full((1, 1, 1, d), 0.5, dtype=torch.float64)
    pts = uniform_in_ball(x, n, radius, norm, seeded(0))
    assert pts.shape == (1, n, 1, 1, d)
    size = torch.linalg.vector_norm((pts - 0.5).flatten(2), ord={"l1": 1, "l2": 2,
                                                                  "linf": math.inf}[norm], dim=2)
    assert (size <= radius * (1 + 1e-9)).all()
    # by volume, a fraction (1/2)^d lies within half the radius (0.0625; 3 sigma = 0.005)
    assert abs((size < radius / 2).double().mean().item() - 0.5 ** d) < 0.006


def test_bad_input_names_the_argument(eight):
    x, _ = eight
    model = linear_classifier()
    kw = dict(radius=1.0, n_batches=10, batch_size=4)
    for bad, name in [(dict(radius=0.0), "radius"), (dict(radius=-1.0), "radius"),
                      (dict(n_batches=5), "n_batches"), (dict(batch_size=0), "batch_size"),
                      (dict(norm="l3"), "norm"), (dict(norm="l0"), "norm"),
                      (dict(target=10), "target"), (dict(generator=0), "generator")]:
        with pytest.raises((ValueError, TypeError), match=name):
            clever(model, x, **{**kw, **bad})
    pred = model(x).argmax(1)
    with pytest.raises(ValueError, match="target equals the predicted class"):
        clever(model, x, target=pred, **kw)
    with pytest.raises(ValueError, match="x"):
        clever(model, x * 2, **kw)


def test_leaves_the_model_and_input_as_found(digits_test):
    model, x = messy_model(), digits_test[0][:3].clone()
    target = (predict(model, x).argmax(1) + 1) % 10  # one class: a fit per example, not nine
    with torch.no_grad():
        out = leaves_as_found(lambda: clever(model, x, radius=0.5, n_batches=10, batch_size=4,
                                             target=target), model, x)
    assert torch.isfinite(out.score).all()


def test_no_host_sync_grows_with_n_batches(digits_mlp, digits_test):
    x = digits_test[0][:2]
    target = (predict(digits_mlp, x).argmax(1) + 1) % 10
    a, b = grows(lambda n: clever(digits_mlp, x, radius=1.0, n_batches=n, batch_size=4,
                                  target=target, generator=seeded(0)), 10, 20)
    assert a.total == b.total, explain(a, b)
