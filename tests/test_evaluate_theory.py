"""The exact accuracies of linear classifiers on Tsipras et al.'s and Schmidt et al.'s
distributions agree with sampling; Theorem 2.1's bound holds; robust training of a linear model
gives up the weak features exactly as the paper proves it must."""

import functools
import math

import pytest
import torch

from robustlab.evaluate import (
    linear_accuracy_schmidt,
    linear_accuracy_tsipras,
    linear_robust_fit,
    mean_classifier,
    schmidt_data,
    tsipras_bayes,
    tsipras_bound,
    tsipras_data,
)

from .conftest import seeded
from .syncs import explain, grows

D, P = 100, 0.9
ETA = 3 / math.sqrt(D)


def sampled_accuracy(w, b, x, y, eps, norm):
    """Accuracy on samples against the worst shift of a linear classifier: -eps s sign(w) (L-inf)
    or -eps s w / ||w|| (L2)."""
    s = (2 * y - 1).double()
    step = torch.sign(w) if norm == "linf" else w / w.norm()
    return ((s * ((x - eps * s[:, None] * step) @ w + b)) > 0).double().mean().item()


@functools.cache
def samples():
    return tsipras_data(20_000, d=D, p=P, generator=seeded(0))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("eps", [0.0, ETA, 2 * ETA])
def test_tsipras_exact_accuracy_agrees_with_sampling(norm, eps):
    x, y = samples()
    g = seeded(1)
    for w, b in [tsipras_bayes(d=D, p=P, eta=ETA),
                 (torch.randn(D + 1, generator=g, dtype=torch.float64).abs(), torch.tensor(0.3))]:
        exact = linear_accuracy_tsipras(w, b, p=P, eta=ETA, eps=eps, norm=norm)
        assert abs(exact - sampled_accuracy(w, b, x, y, eps, norm)) < 4 * 0.5 / math.sqrt(len(x)) + 1e-3


def test_averaging_classifier_is_phi_of_eta_root_d():
    """The paper's averaging classifier: accuracy Phi(eta sqrt(d)); against eps, Phi((eta - eps) sqrt(d))."""
    w = torch.cat([torch.zeros(1), torch.full((D,), 1 / D)]).double()
    phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))  # noqa: E731
    assert linear_accuracy_tsipras(w, p=P, eta=ETA) == pytest.approx(phi(ETA * math.sqrt(D)), abs=1e-12)
    assert linear_accuracy_tsipras(w, p=P, eta=ETA, eps=2 * ETA) == pytest.approx(phi(-ETA * math.sqrt(D)),
                                                                                 abs=1e-12)
    only_x1 = torch.zeros(D + 1, dtype=torch.float64)
    only_x1[0] = 1.0
    assert linear_accuracy_tsipras(only_x1, p=P, eta=ETA) == pytest.approx(P)
    assert linear_accuracy_tsipras(only_x1, p=P, eta=ETA, eps=0.5) == pytest.approx(P)


def test_bayes_classifier_is_the_most_accurate():
    w, b = tsipras_bayes(d=D, p=P, eta=ETA)
    best = linear_accuracy_tsipras(w, b, p=P, eta=ETA)
    g = seeded(2)
    for _ in range(20):
        other = w + 0.3 * torch.randn(w.shape, generator=g, dtype=torch.float64)
        assert linear_accuracy_tsipras(other, b, p=P, eta=ETA) <= best + 1e-12


def test_theorem_2_1_bounds_every_classifier():
    x, y = tsipras_data(300, d=D, p=P, generator=seeded(3))
    candidates = [tsipras_bayes(d=D, p=P, eta=ETA), linear_robust_fit(x, y, eps=0.0, steps=100),
                  linear_robust_fit(x, y, eps=2 * ETA, steps=100)]
    for w, b in candidates:
        standard = linear_accuracy_tsipras(w, b, p=P, eta=ETA)
        robust = linear_accuracy_tsipras(w, b, p=P, eta=ETA, eps=2 * ETA)
        assert robust <= tsipras_bound(standard, p=P) + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_training_gives_up_the_weak_features(seed):
    """Plain logistic regression is accurate and not robust; trained at eps = 2 eta it leans on
    x_1: accuracy near p, robust accuracy far above the plain model's."""
    x, y = tsipras_data(1000, d=D, p=P, generator=seeded(seed))
    plain = linear_robust_fit(x, y, eps=0.0, steps=200)
    robust = linear_robust_fit(x, y, eps=2 * ETA, steps=200)
    acc = lambda wb, e: linear_accuracy_tsipras(*wb, p=P, eta=ETA, eps=e)  # noqa: E731
    assert acc(plain, 0) > 0.97 and acc(plain, 2 * ETA) < 0.1
    assert acc(robust, 0) < P + 0.02 and acc(robust, 2 * ETA) > 0.6
    assert robust[0][0].abs() > robust[0][1:].abs().sum() / 2


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_schmidt_exact_accuracy_agrees_with_sampling(eps):
    d, sigma = 64, 64 ** 0.25
    theta = torch.ones(d, dtype=torch.float64)
    w = mean_classifier(*schmidt_data(3, d=d, sigma=sigma, generator=seeded(4)))
    x, y = schmidt_data(20_000, d=d, sigma=sigma, generator=seeded(5))
    exact = linear_accuracy_schmidt(w, 0.1, theta=theta, sigma=sigma, eps=eps)
    assert abs(exact - sampled_accuracy(w, 0.1, x, y, eps, "linf")) < 4 * 0.5 / math.sqrt(len(x)) + 1e-3


def test_schmidt_robust_accuracy_needs_more_samples():
    """With sigma = d^(1/4) / 2, one sample classifies well; at eps = 0.75 the mean classifier
    needs many."""
    d = 256
    sigma, theta = d ** 0.25 / 2, torch.ones(d, dtype=torch.float64)
    g = seeded(6)

    def mean_accuracy(n, eps):
        return sum(linear_accuracy_schmidt(mean_classifier(*schmidt_data(n, d=d, sigma=sigma, generator=g)),
                                           theta=theta, sigma=sigma, eps=eps) for _ in range(20)) / 20

    assert mean_accuracy(1, 0.0) > 0.95
    robust = [mean_accuracy(n, 0.75) for n in (1, 10, 100)]
    assert robust[0] < 0.5 < robust[2] and robust[0] < robust[1] < robust[2]


def test_data_shapes_labels_and_determinism():
    x, y = tsipras_data(50, d=5, p=0.8, generator=seeded(7))
    assert x.shape == (50, 6) and x.dtype == torch.float64 and set(y.tolist()) <= {0, 1}
    assert set(x[:, 0].tolist()) <= {-1.0, 1.0}
    again = tsipras_data(50, d=5, p=0.8, generator=seeded(7))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    x, y = schmidt_data(30, d=4, sigma=1.0, generator=seeded(8))
    assert x.shape == (30, 4) and torch.equal(x, schmidt_data(30, d=4, sigma=1.0, generator=seeded(8))[0])


@pytest.mark.parametrize("call, match", [
    (lambda: tsipras_data(10, d=3, p=0.4), "p must lie"),
    (lambda: tsipras_data(0, d=3), "n must be > 0"),
    (lambda: schmidt_data(10, d=3, sigma=1.0, theta=torch.ones(4)), "theta must be"),
    (lambda: linear_accuracy_tsipras(torch.tensor([float("nan"), 1.0]), p=0.9, eta=0.1), "finite"),
    (lambda: linear_accuracy_schmidt(torch.ones(3), theta=torch.ones(3), sigma=1.0, eps=-1), "eps"),
    (lambda: mean_classifier(torch.zeros(4, 2), torch.tensor([0, 1, 2, 1])), "labels 0 and 1"),
    (lambda: linear_robust_fit(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), eps=0.1), "shape"),
    (lambda: tsipras_bound(1.5, p=0.9), "standard_accuracy"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_robust_fit_is_sync_free_in_its_loop():
    x, y = tsipras_data(32, d=4, generator=seeded(9))
    a, b = grows(lambda steps: linear_robust_fit(x, y, eps=0.3, steps=steps), 2, 20)
    assert a.total == b.total, explain(a, b)
