import pytest
import torch

from robustlab.attacks.cw import cw
from robustlab.attacks.deepfool import deepfool
from robustlab.norms import flat_norm

from ..conftest import check_conventions, linear_classifier, messy_model

FAST = dict(steps=20, binary_steps=3)  # enough to exercise every code path on the messy model


def fooled(model, x_adv, y, targeted=False):
    pred = model(x_adv).argmax(1)
    return pred == y if targeted else pred != y


def linear_setup(k, n=8, seed=1):
    """x in the middle of the box, labelled as the model predicts; the exact minimal L2 change."""
    model = linear_classifier(k=k)
    w = model[1].weight.detach()
    x = 0.45 + 0.1 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    z = model(x).detach()
    y = z.argmax(1)
    margin = z.gather(1, y[:, None]) - z  # (n, k), zero at y
    dist = (margin / (w[y][:, None] - w[None]).norm(dim=2)).masked_fill(margin == 0, torch.inf)
    return model, x, y, dist.amin(1)


@pytest.mark.parametrize("norm", ["l2", "linf", "l0"])
@pytest.mark.parametrize("targeted", [False, True])
def test_conventions(batch, norm, targeted):
    x, y = batch
    y = (y + 1) % 10 if targeted else y
    a = check_conventions(cw, x, y, ball=None, norm=norm, targeted=targeted, **FAST)
    b = cw(messy_model(), x, y, norm=norm, targeted=targeted, **FAST)
    assert torch.equal(a, b), "the same call must give the same output twice"


@pytest.mark.parametrize("k", [2, 10])
def test_l2_linear_exact(k):
    """On z = Wx + b the smallest L2 change is min_j margin_j / ||w_y - w_j||_2 (box not binding).
    The paper's learning rate 1e-2 is fine enough to land within 1% of it."""
    model, x, y, dist = linear_setup(k)
    adv = cw(model, x, y, lr=1e-2, steps=1000)
    assert fooled(model, adv, y).all()
    err = (flat_norm(adv - x, "l2") / dist - 1).abs()
    assert (err < 0.01).all(), f"relative errors {err.tolist()}"


def test_l2_digits_untargeted(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:24], y[:24]
    adv = cw(digits_cnn, x, y)
    ok = fooled(digits_cnn, adv, y)
    d = flat_norm(adv - x, "l2")[ok]
    d_df = flat_norm(deepfool(digits_cnn, x, y) - x, "l2")[ok]
    msg = f"success {ok.float().mean():.3f}, mean L2 {d.mean():.3f} (DeepFool {d_df.mean():.3f})"
    assert ok.float().mean() >= 0.95, msg
    # minimum-norm: well below the L2 budget at which FGM/PGD are run, and no worse than DeepFool
    assert d.mean() < 1.0 and d.mean() <= d_df.mean(), msg
    assert torch.equal(adv[~ok], x[~ok]), "an example never fooled is returned unchanged"


def test_l2_digits_targeted(digits_cnn, digits_test):
    x, y = digits_test
    x, t = x[:16], (y[:16] + 1) % 10
    adv = cw(digits_cnn, x, t, targeted=True)
    ok = fooled(digits_cnn, adv, t, targeted=True)
    d = flat_norm(adv - x, "l2")[ok]
    assert ok.float().mean() >= 0.95, f"success {ok.float().mean():.3f}, mean L2 {d.mean():.3f}"


def test_l2_kappa_gives_confidence(digits_cnn, digits_test):
    x, y = digits_test
    x, y = x[:4], y[:4]
    adv = cw(digits_cnn, x, y, kappa=5.0, binary_steps=5)
    z = digits_cnn(adv)
    other = z.scatter(1, y[:, None], -torch.inf).amax(1)
    margin = other - z.gather(1, y[:, None])[:, 0]
    assert (margin > 5.0).all(), f"margins {margin.tolist()}"


@pytest.mark.parametrize("norm, n, bound", [
    # PGD needs eps = 0.2 to break (almost) every digit (test_gradient); C&W L-inf finds, per
    # example, changes far below that budget
    ("linf", 16, lambda d: d.mean() < 0.6 * 0.2 and d.median() < 0.2 / 2),
    # and C&W L0 changes a handful of the 64 pixels
    ("l0", 8, lambda d: d.mean() <= 6 and d.max() <= 12),
])
def test_digits_small_change_in_its_norm(digits_cnn, digits_test, norm, n, bound):
    x, y = digits_test
    x, y = x[:n], y[:n]
    adv = cw(digits_cnn, x, y, norm=norm)
    ok = fooled(digits_cnn, adv, y)
    d = flat_norm(adv - x, norm)
    msg = f"success {ok.float().mean():.3f}, {norm} distances {d.tolist()}"
    assert ok.all(), msg
    assert bound(d), msg


def test_l0_linear_near_optimal():
    """For a two-class linear model the fewest pixels is exact: greedily take the pixels that can
    move the margin most within [0, 1]. The paper's heuristic is at most one pixel off here."""
    model, x, y, _ = linear_setup(2)
    w = model[1].weight.detach()
    g = (w[1 - y] - w[y])  # gradient of the margin z_other - z_y
    room = torch.where(g > 0, 1 - x.flatten(1), x.flatten(1))
    margin = (model(x).gather(1, y[:, None]) - model(x).gather(1, 1 - y[:, None]))[:, 0].detach()
    best = ((g.abs() * room).sort(1, descending=True).values.cumsum(1) < margin[:, None]).sum(1) + 1
    adv = cw(model, x, y, norm="l0")
    found = flat_norm(adv - x, "l0")
    assert fooled(model, adv, y).all()
    assert (found >= best).all() and (found <= best + 1).all(), f"{found.tolist()} vs {best.tolist()}"


def test_l0_multichannel_changes_whole_pixels():
    """With three channels a pixel is all its channels: the L0 loop fixes whole pixels."""
    torch.manual_seed(0)
    model = linear_classifier(k=10, d=3 * 64)
    x = 0.45 + 0.1 * torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    adv = cw(model, x, y, norm="l0", c=1.0)  # a larger first c: fewer rounds, same point here
    assert fooled(model, adv, y).all()
    channels = (adv != x).sum(1).flatten(1)  # channels changed, per pixel
    pixels = (channels > 0).sum(1)
    assert (pixels < 16).all(), f"pixels changed {pixels.tolist()} of 64"
    # x is mid-box and every weight non-zero, so an allowed pixel moves in all of its channels
    assert ((channels == 0) | (channels == 3)).all()


def test_already_fooled_returned_unchanged_l2(digits_cnn, digits_test):
    x, y = digits_test
    x = x[:4]
    wrong = (digits_cnn(x).argmax(1) + 1) % 10  # pretend labels the model already gets wrong
    adv = cw(digits_cnn, x, wrong)
    assert flat_norm(adv - x, "l2").max() < 1e-3


# issue 7: an input that requires grad raised "can't optimize a non-leaf Tensor"
def test_cw_accepts_an_input_that_requires_grad(digits_cnn, eight):
    x, y = eight
    x_adv = cw(digits_cnn, x.clone().requires_grad_(True), y, steps=5, binary_steps=1)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
