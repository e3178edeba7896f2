"""ibp / crown_ibp objectives and verified_margins: the bounds IBP and CROWN compute, with exact
gradients; the worst-case loss bounds the cross-entropy anywhere in the ball; the schedules ramp
as specified; a few epochs of IBP training verify far more test digits than standard training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import data
from robustlab.attacks import pgd
from robustlab.models import MLP, manifest, pretrained
from robustlab.train import fit
from robustlab.verify import (
    crown,
    crown_ibp,
    ibp,
    interval,
    linear_ramp,
    margin_spec,
    read_exact,
    rounding_bound,
    verified_margins,
    worst_logits,
)

from ..conftest import leaves_as_found, messy_model
from .conftest import ball_points, small_nets


def test_margins_are_ibp_crown_ibp_and_their_mix(digits_mlp, digits_test):
    x, y = digits_test[0][:32], digits_test[1][:32]
    C = margin_spec(y, 10)
    m0 = verified_margins(digits_mlp, x, y, eps=0.03)
    m1 = verified_margins(digits_mlp, x, y, eps=0.03, beta=1.0)
    mh = verified_margins(digits_mlp, x, y, eps=0.03, beta=0.5)
    # interval() is the same bound widened by twice the model's rounding bound over the ball
    net, u = read_exact(digits_mlp, (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1))
    err = rounding_bound(net, (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1), u)
    ibp = interval(digits_mlp, x, eps=0.03, C=C).lower
    torch.testing.assert_close(ibp, m0 - 2 * torch.einsum("nsk,nk->ns", C.abs().float(), err),
                               rtol=1e-5, atol=1e-4)  # the ball's box is rounded outward
    torch.testing.assert_close(mh, (m0 + m1) / 2, rtol=1e-6, atol=1e-6)
    assert m1.mean() > m0.mean()  # CROWN's last layer on IBP's boxes: tighter in aggregate
    assert m0.requires_grad and m1.requires_grad
    with torch.no_grad():
        assert not verified_margins(digits_mlp, x, y, eps=0.03).requires_grad


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradients_match_finite_differences(beta):
    """gradcheck in float64 on a small MLP and a conv / max-pool net, through every weight."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(),
                          nn.Linear(5, 3)),
            nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(),
                          nn.Linear(8, 3))]
    for net, shape in zip(nets, [(1, 2, 2), (1, 4, 4)]):
        net = net.double()
        x = torch.rand(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        y = torch.tensor([0, 1, 2])
        params = [p for p in net.parameters()]

        def fn(*ws, net=net, x=x, y=y):
            for (name, _), w in zip(net.named_parameters(), ws):
                mod, attr = name.rsplit(".", 1)
                net.get_submodule(mod)._parameters[attr] = w
            return verified_margins(net, x, y, eps=0.1, beta=beta)

        ws = tuple(p.detach().clone().requires_grad_(True) for p in params)
        assert torch.autograd.gradcheck(fn, ws)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_worst_case_loss_bounds_the_loss_in_the_ball(beta, digits_mlp, digits_test):
    """CE(worst_logits) >= CE at PGD's point and at random points, example by example."""
    x, y, eps = digits_test[0][:32], digits_test[1][:32], 0.03
    for model in (digits_mlp, small_nets()["maxpool-overlap"]):
        with torch.no_grad():
            k = model(x[:1]).shape[1]
        yk = y % k
        with torch.no_grad():
            bound = F.cross_entropy(worst_logits(verified_margins(model, x, yk, eps=eps, beta=beta), yk),
                                    yk, reduction="none")
        adv = pgd(model, x, yk, eps=eps, alpha=eps / 4, steps=20, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            points = [adv, *ball_points(x, eps, "linf", 8)]
            for p in points:
                assert (F.cross_entropy(model(p), yk, reduction="none") <= bound + 1e-5).all()


def test_objective_loss_upper_bounds_the_adversarial_loss(digits_mlp, digits_test):
    x, y, eps = digits_test[0][:64], digits_test[1][:64], 0.03
    adv = pgd(digits_mlp, x, y, eps=eps, alpha=eps / 4, steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean, adv_ce = F.cross_entropy(digits_mlp(x), y), F.cross_entropy(digits_mlp(adv), y)
    for objective in (ibp(eps=eps, kappa_end=0.0), crown_ibp(eps=eps), ibp(eps=eps)):
        loss, logs = objective(digits_mlp, x, y)
        kappa = logs["kappa"]
        assert loss >= kappa * clean + (1 - kappa) * adv_ce - 1e-5
        assert logs["robust_loss"] >= adv_ce - 1e-5
        assert logs["eps"] == eps


def test_schedules_ramp_exactly_as_specified(digits_mlp, digits_test):
    assert [linear_ramp(t, warmup=2, ramp=4) for t in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert [linear_ramp(t, warmup=3, ramp=0) for t in range(5)] == [0, 0, 0, 1, 1]
    x, y = digits_test[0][:8], digits_test[1][:8]
    obj = crown_ibp(eps=0.2, warmup=2, ramp=4, kappa_start=1.0, kappa_end=0.5, beta_start=1.0, beta_end=0.0)
    logs = [obj(digits_mlp, x, y)[1] for _ in range(8)]
    fractions = [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert [r["eps"] for r in logs] == [0.2 * f for f in fractions]
    assert [r["kappa"] for r in logs] == [1.0 - 0.5 * f for f in fractions]
    assert [r["beta"] for r in logs] == [1.0 - f for f in fractions]
    assert obj.state["step"] == 8
    obj.state["step"] = 4  # resuming: the schedule continues from the step set
    assert obj(digits_mlp, x, y)[1]["eps"] == 0.2 * 0.5
    loss, first = ibp(eps=0.1, warmup=1, ramp=1)(digits_mlp, x, y)
    with torch.no_grad():
        torch.testing.assert_close(loss, F.cross_entropy(digits_mlp(x), y))  # warm-up: clean CE
    assert first["eps"] == 0 and "beta" not in first


@pytest.mark.parametrize("seed", [0, 1])
def test_ibp_training_verifies_more_than_standard_training(seed):
    """8 epochs on the digits, MLP 64-32-10, eps 0.1: measured IBP-verified test accuracy 0.0 %
    after standard training, 34-35 % after IBP training, 42 % after CROWN-IBP (seeds 0, 1)."""
    (xtr, ytr), (xte, yte) = data.digits("train"), data.digits("test")
    eps, epochs = 0.1, 8
    steps = epochs * -(-len(xtr) // 64)
    verified = {}
    for name, objective in (("ce", None), ("ibp", ibp(eps=eps, warmup=steps // 10, ramp=steps // 2)),
                            ("crown_ibp", crown_ibp(eps=eps, warmup=steps // 10, ramp=steps // 2))):
        torch.manual_seed(seed)
        model = MLP((1, 8, 8), (32,), 10)
        fit(model, (xtr, ytr), epochs=epochs, lr=3e-3, seed=seed, progress=False, device="cpu",
            **({} if objective is None else {"objective": objective}))
        with torch.no_grad():
            margins = verified_margins(model, xte, yte, eps=eps)
        verified[name] = (margins.amin(1) > 0).float().mean().item()
    assert verified["ibp"] > verified["ce"] + 0.2, verified
    assert verified["crown_ibp"] > verified["ce"] + 0.2, verified


def test_hygiene_and_arguments(eight):
    x, y = eight[0][:4], eight[1][:4]
    model = messy_model()
    leaves_as_found(lambda: verified_margins(model, x, y, eps=0.05, beta=1.0), model, x, y)
    with pytest.raises(ValueError, match="beta must lie in"):
        verified_margins(model, x, y, eps=0.05, beta=1.5)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        ibp(eps=-1.0)
    with pytest.raises(ValueError, match="kappa_end must lie in"):
        ibp(eps=0.1, kappa_end=2.0)
    with pytest.raises(ValueError, match="beta_start must lie in"):
        crown_ibp(eps=0.1, beta_start=-0.5)
    with pytest.raises(ValueError, match="ramp must be an int >= 0"):
        ibp(eps=0.1, ramp=-1)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        crown_ibp(eps=0.1, warmup=1.5)
    with pytest.raises(ValueError, match="norm must be one of"):
        ibp(eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="y must have shape"):
        verified_margins(model, x, y[:2], eps=0.05)


def test_zoo_model_is_certified(digits_test):
    """digits-mlp-ibp (the zoo's IBP-trained MLP): measured IBP-verified test accuracy 71.1 % at
    eps 0.1 (CROWN 68.3 %), clean 94.2 %; the standard digits-mlp: 0.0 % (CROWN 23.1 %)."""
    x, y = digits_test
    model, plain_mlp = pretrained("digits-mlp-ibp"), pretrained("digits-mlp")
    eps = manifest()["digits-mlp-ibp"]["certified_eps"]
    with torch.no_grad():
        ibp_acc = (verified_margins(model, x, y, eps=eps).amin(1) > 0).float().mean().item()
        crown_acc = (crown(model, x, eps=eps, C=margin_spec(y, 10)).lower.amin(1) > 0).float().mean().item()
        plain_acc = (verified_margins(plain_mlp, x, y, eps=eps).amin(1) > 0).float().mean().item()
    assert ibp_acc > 0.6 and crown_acc > 0.55 and plain_acc < 0.05, (ibp_acc, crown_acc, plain_acc)
