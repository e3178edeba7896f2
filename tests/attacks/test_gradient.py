import pytest
import torch

from robustlab.attacks import fgsm, pgd
from robustlab.norms import flat_norm, project_l1, random_in_ball
from robustlab.train import evaluate

from ..conftest import Sqrt, check_conventions, linear_classifier, messy_model


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_conventions(batch, norm, targeted):
    x, y = batch
    check_conventions(fgsm, x, y, eps=0.3, norm=norm, targeted=targeted)


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.2, 0.05), ("l2", 1.0, 0.3), ("l1", 4.0, 1.0)])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_conventions(batch, norm, eps, alpha, targeted):
    x, y = batch
    a = check_conventions(pgd, x, y, eps=eps, norm=norm, alpha=alpha, steps=5, targeted=targeted,
                          generator=torch.Generator().manual_seed(1))
    b = pgd(messy_model(), x, y, eps=eps, norm=norm,
            alpha=alpha, steps=5, targeted=targeted, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b), "a fixed seed must give the same output twice"


def test_linear_worst_case_linf():
    """For z = Wx + b, the L-inf worst case of the margin z_j - z_y is x + eps sign(w_j - w_y):
    one FGSM step on the margin's gradient, and PGD reaches it too (Goodfellow et al. 2015)."""
    model = linear_classifier(k=2)
    w = model[1].weight.detach()
    x = torch.full((4, 1, 8, 8), 0.5) + 0.1 * torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.3  # x +- eps stays inside [0, 1], so the box never binds
    exact = x + eps * (w[1 - y] - w[y]).sign().view_as(x)
    assert torch.allclose(fgsm(model, x, y, eps=eps), exact, atol=1e-6)
    adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, random_start=True)
    assert torch.allclose(adv, exact, atol=1e-6)


def test_linear_worst_case_l2():
    model = linear_classifier(k=2)
    w = model[1].weight.detach()
    x = torch.full((2, 1, 8, 8), 0.5)
    y = torch.tensor([0, 1])
    eps = 0.5
    d = (w[1 - y] - w[y])
    exact = x + eps * (d / d.norm(dim=1, keepdim=True)).view_as(x)
    assert torch.allclose(fgsm(model, x, y, eps=eps, norm="l2"), exact, atol=1e-5)
    assert torch.allclose(pgd(model, x, y, eps=eps, alpha=0.1, steps=8, norm="l2",
                              random_start=False), exact, atol=1e-5)
    # from a random start the orthogonal part of delta shrinks geometrically under projection
    assert torch.allclose(pgd(model, x, y, eps=eps, alpha=eps, steps=40, norm="l2"), exact, atol=1e-4)


def test_pgd_breaks_digits_cnn(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:100], y[:100]
    assert evaluate(digits_cnn, (x, y)) > 0.95
    assert evaluate(digits_cnn, (fgsm(digits_cnn, x, y, eps=0.2), y)) < 0.3
    assert evaluate(digits_cnn, (pgd(digits_cnn, x, y, eps=0.2, alpha=0.02, steps=20), y)) < 0.05


def test_targeted_pgd_reaches_target(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:50], y[:50]
    t = (y + 1) % 10
    adv = pgd(digits_cnn, x, t, eps=0.3, alpha=0.02, steps=40, targeted=True)
    assert (digits_cnn(adv).argmax(1) == t).float().mean() > 0.9


def test_project_l1_matches_bisection():
    """Duchi's sort-based projection agrees with bisection on the soft threshold."""
    v = torch.randn(5, 30)
    p = project_l1(v, 2.0)
    assert torch.allclose(p.abs().sum(1), torch.full((5,), 2.0), atol=1e-5)
    for row, out in zip(v, p):
        lo, hi = 0.0, row.abs().max().item()
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (row.abs() - mid).clamp_min(0).sum() > 2.0 else (lo, mid)
        assert torch.allclose(out, row.sign() * (row.abs() - lo).clamp_min(0), atol=1e-5)
    small = torch.full((1, 4), 0.1)
    assert torch.equal(project_l1(small, 1.0), small)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_random_start_inside_ball(norm):
    x = torch.rand(64, 1, 8, 8)
    d = random_in_ball(x, 0.7, norm, torch.Generator().manual_seed(0))
    n = flat_norm(d, norm)
    assert (n <= 0.7 + 1e-5).all() and n.min() > 0


NAN_PRONE = {
    "fgm": lambda m, x, y: fgsm(m, x, y, eps=0.5, norm="l2"),
    "pgd-l2": lambda m, x, y: pgd(m, x, y, eps=0.5, alpha=0.1, steps=3, norm="l2", random_start=False),
}


# issue 7: FGM and PGD-L2 returned NaN pixels where the input gradient is infinite
@pytest.mark.parametrize("name", NAN_PRONE)
def test_infinite_gradient_gives_no_nan(name, eight):
    x, y = eight  # digits have many pixels at exactly 0, where sqrt' is infinite
    assert (x == 0).any()
    x_adv = NAN_PRONE[name](Sqrt(), x, y)
    assert not x_adv.isnan().any()


# issue 7: norm=True was accepted as L1
def test_norm_true_is_not_l1(digits_cnn, eight):
    x, y = eight
    with pytest.raises(ValueError, match="norm"):
        pgd(digits_cnn, x, y, eps=0.1, alpha=0.01, steps=1, norm=True)
