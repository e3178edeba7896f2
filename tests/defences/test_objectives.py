"""The loss-only defences of robustlab.defences.objectives and robustlab.defences.dro: each an
Objective for train.fit."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.attacks import pgd
from robustlab.defences import (
    cyclic_lr,
    deepfool_at,
    fast_at,
    fgsm_at,
    gaussian_noise,
    pgd_at,
    smooth_adv,
    trades,
    vat,
    wrm,
)
from robustlab.train import cross_entropy, evaluate, fit

from ..conftest import messy_model, nested_modes, seeded
from .conftest import pgd_accuracy


def factories():
    """name -> (factory, kwargs, training forward passes per call that update batch-norm
    running statistics)."""
    return {
        "fgsm_at": (fgsm_at, dict(eps=0.1), 2),
        "pgd_at": (pgd_at, dict(eps=0.1, alpha=0.03, steps=3, generator=seeded()), 1),
        "fast_at": (fast_at, dict(eps=0.1, generator=seeded()), 1),
        "trades": (trades, dict(eps=0.1, alpha=0.03, steps=3, generator=seeded()), 2),
        "vat": (vat, dict(eps=0.5, generator=seeded()), 1),
        "wrm": (wrm, dict(gamma=1.0, steps=3), 1),
        "deepfool_at": (deepfool_at, dict(steps=5), 2),
        "smooth_adv": (smooth_adv, dict(sigma=0.25, eps=0.5, steps=2, samples=2,
                                        generator=seeded()), 1),
    }


NAMES = list(factories())


def make(name, **over):
    factory, kw, _ = factories()[name]
    return factory(**{**kw, **over})


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return models.MLP((1, 8, 8), (32,), 10).to(dtype).train()


class Spy(nn.Module):
    """Records, for each forward pass, the mode, whether grad is on and whether the parameters
    require grad."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled(),
                           any(p.requires_grad for p in self.net.parameters())))
        return self.net(x)


@pytest.mark.parametrize("name", NAMES)
def test_loss_logs_and_gradient(name, batch):
    x, y = batch
    model = mlp()
    loss, logs = make(name)(model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    assert logs and all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
                        and torch.isfinite(v) for v in logs.values())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_hygiene_on_messy_model(name, batch):
    """The inner attack leaves .grad, requires_grad flags, parameters and every submodule's mode
    as found; batch-norm running statistics move only with the training forward passes."""
    x, y = batch
    x0 = x.clone()
    model = messy_model()
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    bn = model[1]
    tracked = int(bn.num_batches_tracked)
    loss, _ = make(name)(model, x, y)
    assert torch.equal(x, x0)
    for g0, p in zip(grads, model.parameters()):
        assert (g0 is None and p.grad is None) or torch.equal(g0, p.grad), "attack touched .grad"
    assert flags == [p.requires_grad for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert modes == [m.training for m in model.modules()]
    assert bn.track_running_stats
    assert int(bn.num_batches_tracked) - tracked == factories()[name][2]
    loss.backward()  # and the training loss still reaches the trainable parameters
    assert not torch.equal(grads[-1], model[-1].weight.grad)


@pytest.mark.parametrize("name", NAMES)
def test_nested_modes_restored(name, batch):
    x, y = batch
    wrapped, net = nested_modes()
    before = [m.training for m in wrapped.modules()]
    make(name)(wrapped, x, y)
    assert before == [m.training for m in wrapped.modules()]
    with pytest.raises(RuntimeError, match="inference_mode"), torch.inference_mode():
        make(name)(mlp(), x, y)


@pytest.mark.parametrize("name, attack_mode", [("pgd_at", "train"), ("fast_at", "train"),
                                               ("fgsm_at", "train"), ("wrm", "train"),
                                               ("vat", "train"), ("trades", "eval"),
                                               ("smooth_adv", "eval")])
def test_default_attack_mode_and_frozen_parameters(name, attack_mode, batch):
    """Madry/Wong/Goodfellow/Sinha/Miyato attack the model as trained; TRADES in eval mode. The
    attack's forward passes see frozen parameters; the training passes trainable ones."""
    x, y = batch
    spy = Spy(mlp()).train()
    with torch.no_grad():
        make(name)(spy, x, y)
    spy.calls.clear()
    make(name)(spy, x, y)
    attack = [c for c in spy.calls if not c[2]]
    training = [c for c in spy.calls if c[2]]
    passes = 2 if name == "vat" else factories()[name][2]  # VAT's second leaves the statistics
    assert len(training) == passes and all(c == (True, True, True) for c in training)
    assert attack and all(c[0] == (attack_mode == "train") for c in attack)
    assert any(c[1] for c in attack)  # gradients on, even inside the caller's no_grad
    spy.calls.clear()
    make(name, attack_mode="eval" if attack_mode == "train" else "train")(spy, x, y)
    assert all(c[0] == (attack_mode != "train") for c in spy.calls if not c[2])


@pytest.mark.parametrize("name", ["pgd_at", "fgsm_at", "fast_at"])
def test_eps_zero_is_cross_entropy(name, batch):
    x, y = batch
    model = mlp()
    loss, _ = make(name, eps=0.0)(model, x, y)
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)


def test_pgd_at_loss_is_the_loss_at_the_library_pgd_point(batch):
    """On a model without randomness pgd_at trains on the point robustlab.attacks.pgd finds."""
    x, y = batch
    model = mlp()
    loss, logs = pgd_at(eps=0.1, alpha=0.03, steps=5, generator=seeded(3))(model, x, y)
    x_adv = pgd(model, x, y, eps=0.1, alpha=0.03, steps=5, generator=seeded(3))
    assert torch.allclose(loss, F.cross_entropy(model(x_adv), y), atol=1e-6)
    assert loss > F.cross_entropy(model(x), y)


def test_fgsm_at_mixes_clean_and_adversarial_loss(batch):
    x, y = batch
    model = mlp()
    _, logs = fgsm_at(eps=0.1)(model, x, y)
    for w in (0.0, 0.3, 1.0):
        loss, _ = fgsm_at(eps=0.1, clean_weight=w)(model, x, y)
        assert torch.allclose(loss, w * logs["clean_loss"] + (1 - w) * logs["adv_loss"], atol=1e-6)
    assert logs["adv_loss"] > logs["clean_loss"]


def test_fast_at_stays_in_ball_and_box_and_is_seeded(batch):
    x, y = batch
    model = mlp()
    a, _ = fast_at(eps=0.1, generator=seeded(1))(model, x, y)
    b, _ = fast_at(eps=0.1, generator=seeded(1))(model, x, y)
    assert torch.equal(a, b)
    loss, _ = fast_at(eps=0.1, alpha=0.0, generator=seeded(1))(model, x, y)  # the random start only
    assert loss < a


@pytest.mark.parametrize("factory, kwargs, arg", [
    (pgd_at, dict(eps=-0.1, alpha=0.01, steps=3), "eps"),
    (pgd_at, dict(eps=math.inf, alpha=0.01, steps=3), "eps"),
    (pgd_at, dict(eps=0.1, alpha=0.0, steps=3), "alpha"),
    (pgd_at, dict(eps=0.1, alpha=0.01, steps=0), "steps"),
    (pgd_at, dict(eps=0.1, alpha=0.01, steps=2.5), "steps"),
    (pgd_at, dict(eps=0.1, alpha=0.01, steps=3, norm="l7"), "norm"),
    (pgd_at, dict(eps=0.1, alpha=0.01, steps=3, attack_mode="test"), "attack_mode"),
    (pgd_at, dict(eps=0.1, alpha=0.01, steps=3, generator=0), "generator"),
    (fgsm_at, dict(eps=0.1, clean_weight=1.5), "clean_weight"),
    (fgsm_at, dict(eps=float("nan")), "eps"),
    (fast_at, dict(eps=0.1, alpha=-1.0), "alpha"),
    (trades, dict(eps=0.1, alpha=0.01, steps=3, beta=-1.0), "beta"),
    (trades, dict(eps=0.1, alpha=0.01, steps=3, norm="l1"), "norm"),
    (vat, dict(eps=1.0, xi=0.0), "xi"),
    (vat, dict(eps=1.0, power_iterations=0), "power_iterations"),
    (vat, dict(eps=1.0, weight=-1.0), "weight"),
    (wrm, dict(gamma=0.0), "gamma"),
    (wrm, dict(gamma=-1.0), "gamma"),
    (wrm, dict(steps=-1), "steps"),
    (deepfool_at, dict(norm="l1"), "norm"),
    (deepfool_at, dict(steps=0), "steps"),
    (deepfool_at, dict(overshoot=-0.1), "overshoot"),
    (deepfool_at, dict(clean_weight=2.0), "clean_weight"),
    (smooth_adv, dict(sigma=0.0, eps=0.5), "sigma"),
    (smooth_adv, dict(sigma=0.25, eps=-1.0), "eps"),
    (smooth_adv, dict(sigma=0.25, eps=0.5, samples=0), "samples"),
    (smooth_adv, dict(sigma=0.25, eps=0.5, steps=1.5), "steps"),
    (smooth_adv, dict(sigma=0.25, eps=0.5, alpha=0.0), "alpha"),
    (smooth_adv, dict(sigma=0.25, eps=0.5, generator="cpu"), "generator"),
])
def test_bad_arguments_name_the_argument(factory, kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        factory(**kwargs)


def test_cyclic_lr_triangle_and_its_guard():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=123.0)
    sched = cyclic_lr(opt, epochs=5, max_lr=0.2)  # per epoch, peak at 2/5
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.2 * 2 / 3, 0.2 / 3, 0.0])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        sched.step()
    with pytest.raises((ValueError, TypeError), match="max_lr"):
        cyclic_lr(opt, epochs=5, max_lr=0.0)
    with pytest.raises((ValueError, TypeError), match="epochs"):
        cyclic_lr(opt, epochs=0, max_lr=0.1)


def test_cyclic_lr_per_batch_with_fit():
    x, y = data.digits("test")
    x, y = x[:100], y[:100]
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    sched = cyclic_lr(opt, epochs=2, steps_per_epoch=4, max_lr=0.1, per_batch=True)
    seen = []
    sched.optimizer.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
    fit(model, (x, y), epochs=2, optimizer=opt, batch_size=25, progress=False,
        objective=fast_at(eps=0.1, generator=seeded()))
    assert len(seen) == 8 and seen[-1] == 0.0 and 0.09 < max(seen) <= 0.1
    assert seen[:3] == sorted(seen[:3]) and seen[3:] == sorted(seen[3:], reverse=True)
    sched.hook.remove()
    model2 = mlp()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.0)
    both = cyclic_lr(opt2, epochs=2, steps_per_epoch=4, max_lr=0.1, per_batch=True)
    with pytest.raises(ValueError, match="stepped both"):  # also given to fit: steps twice
        fit(model2, (x, y), epochs=2, optimizer=opt2, scheduler=both, batch_size=25,
            progress=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_pgd_at_is_more_robust_than_standard_training(seed):
    """PGD-AT at eps = 0.1 on the digits raises PGD robust accuracy at eps = 0.1 clearly above
    standard training (measured: about 0.50 -> 0.74 for both seeds; the margin asked is 0.12)."""
    train, (x, y) = data.digits("train"), data.digits("test")

    def run(objective):
        seed_everything(seed)
        model = models.MLP((1, 8, 8), (64,), 10)
        fit(model, train, epochs=10, objective=objective, lr=3e-3, progress=False, seed=seed)
        return evaluate(model, (x, y)), pgd_accuracy(model, x, y)

    clean_std, robust_std = run(cross_entropy)
    clean_at, robust_at = run(pgd_at(eps=0.1, alpha=0.025, steps=5, generator=seeded(seed)))
    assert clean_std > 0.9 and clean_at > 0.88
    assert robust_at > robust_std + 0.12, (robust_std, robust_at)


# issue 15: random_start="no" (any truthy value) was taken as True, per_batch=1 too
@pytest.mark.parametrize("make, arg", [
    (lambda v: pgd_at(eps=0.1, alpha=0.01, steps=3, random_start=v), "random_start"),
    (lambda v: cyclic_lr(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), epochs=2,
                         max_lr=0.1, per_batch=v), "per_batch"),
])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_boolean_flags_must_be_bools(make, arg, value):
    with pytest.raises(TypeError, match=f"{arg} must be True or False, got {type(value).__name__}"):
        make(value)
    make(False)


def test_smooth_adv_loss_is_at_least_noise_training_on_the_same_draws(batch):
    """With the same noise draws, the attack only raises the smoothed loss above that of
    Gaussian noise training (x* = x), and eps = 0 is noise training exactly."""
    x, y = batch
    model = mlp()
    sigma = 0.25
    noisy = [gaussian_noise(sigma=sigma, generator=seeded(s))(model, x, y) for s in range(3)]
    same = [smooth_adv(sigma=sigma, eps=0.0, generator=seeded(s))(model, x, y)[0]
            for s in range(3)]
    for a, b in zip(noisy, same):
        torch.testing.assert_close(a, b)
    for s in range(3):
        base = smooth_adv(sigma=sigma, eps=0.0, samples=4, generator=seeded(s))(model, x, y)[0]
        adv = smooth_adv(sigma=sigma, eps=1.0, steps=4, samples=4,
                         generator=seeded(s))(model, x, y)[0]
        assert adv > base + 0.05, (s, adv.item(), base.item())


def test_smooth_adv_attack_stays_in_the_l2_ball_and_box(batch):
    """The attack point x* (recovered from the noisy copies it trains on) lies in the eps-ball
    around x and in [0, 1]."""
    x, y = batch
    seen = []

    class Record(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
                seen.append(z.detach())
            return self.net(z)

    smooth_adv(sigma=1e-6, eps=0.5, steps=3, samples=1, generator=seeded())(Record(mlp()), x, y)
    x_star = seen[-1]
    dist = (x_star - x).flatten(1).norm(dim=1)
    assert (dist <= 0.5 + 1e-4).all() and dist.max() > 0.1
    assert x_star.min() >= -1e-4 and x_star.max() <= 1 + 1e-4


def test_smooth_adv_trains():
    """A few epochs of SmoothAdv on the digits: accuracy under noise well above chance."""
    seed_everything(0)
    x, y = data.digits("train")
    xt, yt = data.digits("test")
    model = models.MLP((1, 8, 8), (64,), 10)
    hist = fit(model, (x, y), epochs=4, lr=3e-3, progress=False,
               objective=smooth_adv(sigma=0.25, eps=0.25, steps=2, samples=2,
                                    generator=seeded()))
    assert hist[-1]["loss"] < hist[0]["loss"]
    noisy = xt + 0.25 * torch.randn(xt.shape, generator=seeded())
    assert evaluate(model, (noisy, yt)) > 0.7


def test_deepfool_at_trains_on_deepfool_points_and_pushes_them_out(batch):
    """The adversarial half of the loss is the CE at DeepFool's point; training with it makes
    DeepFool's perturbations larger than plain training does."""
    from robustlab.attacks import deepfool
    x, y = batch
    model = mlp().eval()
    loss, logs = deepfool_at(clean_weight=0.0, steps=10)(model, x, y)
    x_adv = deepfool(model, x, y, steps=10)
    torch.testing.assert_close(loss, F.cross_entropy(model(x_adv), y))
    torch.testing.assert_close(logs["adv_dist"], (x_adv - x).flatten(1).norm(dim=1).mean())
    xs, ys = data.digits("train")
    dists = {}
    for name, objective in (("plain", cross_entropy), ("deepfool_at", deepfool_at(steps=10))):
        seed_everything(0)
        net = models.MLP((1, 8, 8), (64,), 10)
        fit(net, (xs, ys), epochs=4, lr=3e-3, progress=False, objective=objective)
        xt, yt = data.digits("test")
        xt, yt = xt[:200], yt[:200]
        keep = net(xt).argmax(1) == yt
        dists[name] = (deepfool(net, xt[keep], yt[keep]) - xt[keep]).flatten(1).norm(dim=1).median()
    assert dists["deepfool_at"] > 1.05 * dists["plain"], dists  # measured 0.576 vs 0.513
