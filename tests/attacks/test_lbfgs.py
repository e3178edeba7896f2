import pytest
import torch

from robustlab.attacks.lbfgs import lbfgs
from robustlab.norms import flat_norm

from ..conftest import check_conventions, linear_classifier, messy_model

FAST = dict(search_steps=3, max_iter=10)


@pytest.mark.parametrize("targeted", [False, True])
def test_conventions(batch, targeted):
    x, y = batch
    y = (y + 1) % 10 if targeted else y
    a = check_conventions(lbfgs, x, y, ball=None, targeted=targeted, **FAST)
    b = lbfgs(messy_model(), x, y, targeted=targeted, **FAST)
    assert torch.equal(a, b), "the same call must give the same output twice"


def test_linear_exact():
    """Two classes, z = Wx + b, x in the middle of the box: the smallest L2 change reaching the
    other class is margin / ||w_y - w_t||_2, and the line search on c gets within 1% of it."""
    model = linear_classifier(k=2)
    w = model[1].weight.detach()
    x = 0.45 + 0.1 * torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    z = model(x).detach()
    y = z.argmax(1)
    t = 1 - y
    dist = (z.gather(1, y[:, None]) - z.gather(1, t[:, None]))[:, 0] / (w[1] - w[0]).norm()
    adv = lbfgs(model, x, t, search_steps=20)
    assert (model(adv).argmax(1) == t).all()
    err = (flat_norm(adv - x, "l2") / dist - 1).abs()
    assert (err < 0.01).all(), f"relative errors {err.tolist()}"


def test_targeted_digits(digits_cnn, digits_test):
    x, y = digits_test
    x, t = x[:16], (y[:16] + 1) % 10
    adv = lbfgs(digits_cnn, x, t)
    ok = digits_cnn(adv).argmax(1) == t
    d = flat_norm(adv - x, "l2")[ok]
    msg = f"success {ok.float().mean():.3f}, mean L2 {d.mean():.3f}"
    assert ok.float().mean() >= 0.95, msg
    assert d.mean() < 1.5, msg


def test_untargeted_digits(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:16], y[:16]
    adv = lbfgs(digits_cnn, x, y, targeted=False)
    ok = digits_cnn(adv).argmax(1) != y
    d = flat_norm(adv - x, "l2")[ok]
    msg = f"success {ok.float().mean():.3f}, mean L2 {d.mean():.3f}"
    assert ok.float().mean() >= 0.95, msg
    assert d.mean() < 1.0, msg


def test_line_search_shrinks_distortion(digits_cnn, digits_test):
    """The line search keeps, per example, the smallest change that still reaches the target: never
    more than the single solve at the first c, and strictly less on average."""
    x, y = digits_test
    x, t = x[:8], (y[:8] + 1) % 10
    one = lbfgs(digits_cnn, x, t, search_steps=1)
    ok = digits_cnn(one).argmax(1) == t
    assert ok.any()
    searched = lbfgs(digits_cnn, x, t)
    d1, d = flat_norm(one - x, "l2")[ok], flat_norm(searched - x, "l2")[ok]
    assert (d <= d1 + 1e-6).all() and d.mean() < 0.9 * d1.mean(), f"{d.tolist()} vs {d1.tolist()}"


def test_unreachable_returned_unchanged():
    """A class whose logit can never win (w_t = w_0 - 1, same bias) is never reached: x comes back."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight[0].fill_(0.0)
        model[1].weight[1].fill_(-1.0)
        model[1].bias.zero_()
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(lbfgs(model, x, torch.ones(3, dtype=torch.long), **FAST), x)
