import pytest
import torch

from robustlab.attacks.universal import apply_guap, fooling_rate, guap, guap_flow_norm, uap
from robustlab.norms import flat_norm

from ..conftest import check_conventions, messy_model, seeded


def sign_noise_rate(model, x, y, eps, reps=5):
    """Fooling rate of random +-eps noise: the random point of the L-inf sphere, averaged."""
    g = seeded(1)
    return sum(fooling_rate(model, (x + eps * (torch.randint(0, 2, x[:1].shape, generator=g) * 2 - 1)
                                    .to(x)).clamp(0, 1), y) for _ in range(reps)) / reps


def random_guap_rate(model, x, y, eps, tau, reps=5):
    """Fooling rate of a random flow at the full budget tau plus random +-eps noise, averaged."""
    g, total = seeded(2), 0.0
    for _ in range(reps):
        r = torch.randn(1, 2, *x.shape[2:], generator=g)
        v = eps * (torch.randint(0, 2, x[:1].shape, generator=g) * 2 - 1).to(x)
        total += fooling_rate(model, apply_guap(x, r * tau / guap_flow_norm(r), v), y)
    return total / reps


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.5)])
def test_uap_conventions(batch, norm, eps):
    x, y = batch

    def attack(model, x, y, **kw):
        v = uap(model, x, y, **kw)
        assert v.shape == (1, *x.shape[1:]) and flat_norm(v, kw["norm"]).item() <= eps * (1 + 1e-5)
        return (x + v).clamp(0, 1)

    a = check_conventions(attack, x, y, eps=eps, norm=norm, max_passes=2, deepfool_steps=5,
                          generator=seeded())
    b = attack(messy_model(), x, y, eps=eps, norm=norm, max_passes=2, deepfool_steps=5, generator=seeded())
    assert torch.equal(a, b), "a fixed generator must give the same perturbation twice"


def test_uap_fools_unseen_data_and_transfers(digits_cnn, digits_mlp, digits_resnet, digits_train,
                                             digits_test):
    x, y = digits_train
    xt, yt = digits_test
    eps = 0.3
    v = uap(digits_cnn, x[:200], y[:200], eps=eps, max_passes=2, generator=seeded())
    assert v.abs().max() <= eps + 1e-6
    rates = {}
    for name, model in [("cnn", digits_cnn), ("mlp", digits_mlp), ("resnet", digits_resnet)]:
        rates[name] = (fooling_rate(model, (xt + v).clamp(0, 1), yt), sign_noise_rate(model, xt, yt, eps))
    print("UAP test fooling rate (uap, random sign noise):", rates)
    assert rates["cnn"][0] > rates["cnn"][1] + 0.15, "UAP must beat random noise on unseen images"
    assert rates["mlp"][0] > rates["mlp"][1] + 0.03, "UAP must transfer to a model it never saw"


def test_guap_conventions_and_budgets(batch):
    x, y = batch
    eps, tau = 0.1, 0.2

    def attack(model, x, y, **kw):
        flow, v = guap(model, x, y, **kw)
        assert flow.shape == (1, 2, 8, 8) and v.shape == (1, 1, 8, 8)
        assert guap_flow_norm(flow).item() <= tau * (1 + 1e-5) and v.abs().max() <= eps
        return apply_guap(x, flow, v)

    # a warp is no additive perturbation, so no ball but the trivial one
    a = check_conventions(attack, x, y, ball=(1.0, "linf"), eps=eps, tau=tau, steps=8, batch_size=6,
                          generator=seeded())
    b = attack(messy_model(), x, y, eps=eps, tau=tau, steps=8, batch_size=6, generator=seeded())
    assert torch.equal(a, b), "a fixed generator must give the same perturbation twice"


def test_guap_flow_norm():
    assert torch.equal(guap_flow_norm(torch.zeros(2, 2, 5, 5)), torch.zeros(2))
    shift = torch.zeros(1, 2, 4, 4)
    shift[:, 0] = 1.0  # a translation by one pixel costs at the zero border: 4 edges of 16 pixels
    assert torch.allclose(guap_flow_norm(shift), torch.tensor([0.5]))


def test_guap_fools_unseen_data_and_transfers(digits_cnn, digits_mlp, digits_resnet, digits_train,
                                              digits_test):
    x, y = digits_train
    xt, yt = digits_test
    eps, tau = 0.2, 0.1
    flow, v = guap(digits_cnn, x[:500], y[:500], eps=eps, tau=tau, steps=200, generator=seeded())
    additive = guap(digits_cnn, x[:500], y[:500], eps=eps, tau=0.0, steps=200, generator=seeded())
    rates = {name: (fooling_rate(m, apply_guap(xt, flow, v), yt), random_guap_rate(m, xt, yt, eps, tau))
             for name, m in [("cnn", digits_cnn), ("mlp", digits_mlp), ("resnet", digits_resnet)]}
    only_v = fooling_rate(digits_cnn, apply_guap(xt, *additive), yt)
    print("GUAP test fooling rate (guap, random flow + sign noise):", rates, "additive only:", only_v)
    assert rates["cnn"][0] > rates["cnn"][1] + 0.3
    assert rates["mlp"][0] > rates["mlp"][1] + 0.1 and rates["resnet"][0] > rates["resnet"][1] + 0.1
    assert rates["cnn"][0] > only_v + 0.1, "flow and noise together beat the noise alone"


def test_apply_guap_checks_the_flow(batch):
    x, y = batch
    with pytest.raises(ValueError, match="flow"):
        apply_guap(x, torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 8, 8))


# issue 7: fooling_rate checked no arguments (N = 0 divided by zero, float labels, 0-255 pixels)
@pytest.mark.parametrize("args,error,match", [
    (lambda x, y: (x[:0], y[:0]), ValueError, "empty"),
    (lambda x, y: (x, y[:3]), ValueError, "y must have shape"),
    (lambda x, y: (x, y.float()), TypeError, "integer class indices"),
    (lambda x, y: (x * 255, y), ValueError, r"\[0, 1\]"),
    (lambda x, y: (x, torch.full_like(y, 10)), ValueError, "labels outside"),
])
def test_fooling_rate_checks_its_arguments(args, error, match, digits_cnn, eight):
    with pytest.raises(error, match=match):
        fooling_rate(digits_cnn, *args(*eight))
