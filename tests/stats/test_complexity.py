"""Complexity measures, each against a hand computation on hand-made weights."""

import math

import pytest
import torch
from torch import nn

from robustlab.stats import complexity as cx
from robustlab.stats import generalisation as gx
from tests.conftest import leaves_as_found, messy_model
from tests.syncs import explain, grows

E = math.e
PHI = (1 + math.sqrt(5)) / 2  # the largest singular value of [[1, 0], [1, 1]]


def _set(layer, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def two_layer(w1, b1, w2, b2):
    return nn.Sequential(_set(nn.Linear(2, 2), w1, b1), nn.ReLU(), _set(nn.Linear(2, 2), w2, b2))


@pytest.fixture
def final():
    return two_layer([[3, 0], [0, 4]], [1, 0], [[1, 0], [1, 1]], [0, 0])


@pytest.fixture
def initial():
    return two_layer([[1, 0], [0, 1]], [0, 0], [[1, 0], [1, 0]], [0, 0])


def test_norm_products(final):
    # ||W1||_F = 5, ||W2||_F = sqrt(3); ||W1||_2 = 4, ||W2||_2 = golden ratio
    assert cx.frobenius_product(final) == pytest.approx(5 * math.sqrt(3), rel=1e-12)
    assert cx.spectral_product(final) == pytest.approx(4 * PHI, rel=1e-12)
    assert cx.parameter_count(final) == 12


def test_distances_from_init(final, initial):
    # W - W0: diag(2, 3) (spectral 3) and [[0, 0], [0, 1]] (spectral 1); b1 - b1_0 = (1, 0)
    assert cx.spectral_sum(final, initial) == pytest.approx(12 * (3 + 1), rel=1e-12)
    assert cx.pac_bayes(final, initial) == pytest.approx((4 + 9 + 1) / 2 + 1 / 2, rel=1e-12)
    assert cx.pac_bayes(final, initial, sigma=[1.0, 2.0]) == pytest.approx(7 + 1 / 8, rel=1e-12)
    assert cx.distance_from_init(final, initial) == pytest.approx(math.sqrt(15), rel=1e-12)
    # a state dict works as well as a module
    assert cx.pac_bayes(final, initial.state_dict()) == pytest.approx(7.5, rel=1e-12)


def test_weight_correlation_and_pbc(final, initial):
    # layer 1: rows (3, 0), (0, 4) orthogonal, rho = 0; layer 2: rows (1, 0), (1, 1), rho = 1/sqrt 2
    assert cx.layer_correlation(final[0]) == 0.0
    assert cx.layer_correlation(final[2]) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert cx.weight_correlation(final) == pytest.approx(1 / (2 * math.sqrt(2)), rel=1e-12)
    # g = -m [(n - 1) log(1 - rho) + log(1 + (n - 1) rho)], n = m = 2: -2 log(1 - 1/2) = 2 log 2
    assert cx.correlation_term(final[0]) == 0.0
    assert cx.correlation_term(final[2]) == pytest.approx(2 * math.log(2), rel=1e-12)
    assert cx.pac_bayes_correlation(final, initial) == pytest.approx(7.5 + 2 * math.log(2), rel=1e-12)


def test_conv_correlation_per_input_channel():
    # one input channel, kernels (1, 0, 0, 0) and (1, 1, 0, 0): |cos| = 1/sqrt 2
    conv = _set(nn.Conv2d(1, 2, 2), [[[[1, 0], [0, 0]]], [[[1, 1], [0, 0]]]])
    assert cx.layer_correlation(conv) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    # 1x1 kernels over two input channels: channel 0 holds (1, -2) -> |cos| = 1, channel 1 holds
    # (1, 0) -> cos = 0; the mean over channels is 1/2 (whole filters would give 1/sqrt 2)
    conv = _set(nn.Conv2d(2, 2, 1), [[[[1]], [[1]]], [[[-2]], [[0]]]])
    assert cx.layer_correlation(conv) == pytest.approx(0.5, rel=1e-12)
    assert cx.correlation_term(conv) == pytest.approx(-2 * math.log(1 - 0.25), rel=1e-12)
    # a convolution's spectral norm is its (out, in * k * k) matrix's: rows (1, 1), (-2, 0)
    matrix = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    assert cx.spectral_product(nn.Sequential(conv)) == pytest.approx(
        torch.linalg.matrix_norm(matrix, ord=2).item(), rel=1e-6)


def test_parametrised_layers_are_read_through_their_weight(final):
    """A spectrally normalised layer keeps its weight in a ParametrizationList: the measures
    read the weight the layer computes (this raised "holds parameters" before)."""
    sn = torch.nn.utils.parametrizations.spectral_norm(final[0]).eval()
    expected = torch.linalg.vector_norm(sn.weight.detach()).item() * math.sqrt(3)
    final.train()  # in training mode each read of sn.weight would run a power iteration
    value = leaves_as_found(lambda: cx.frobenius_product(final), final)
    assert value == pytest.approx(expected, rel=1e-6)


def test_perfect_correlation_is_infinite():
    layer = _set(nn.Linear(2, 2), [[1, 2], [2, 4]])
    assert cx.layer_correlation(layer) == pytest.approx(1.0)
    assert cx.correlation_term(_set(nn.Linear(2, 2), [[1, 0], [1, 0]])) == math.inf


def test_path_norm(final):
    # sum over hidden h of (sum_i W1[h, i]^2)(sum_o W2[o, h]^2) = 9 * 2 + 16 * 1; biases ignored
    assert gx.path_norm(final, (2,)) == pytest.approx(math.sqrt(34), rel=1e-6)
    with pytest.raises(ValueError, match=r"path_norm cannot read 1 \(MaxPool2d\)"):
        gx.path_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(2, 2)), (1, 6, 6))


def test_generalisation_gap():
    model = nn.Sequential(_set(nn.Linear(2, 2), [[1, 0], [0, 1]], [0, 0]))  # logits = x
    x = torch.tensor([[1.0, 0.0]])
    train, test = (x, torch.tensor([0])), (x, torch.tensor([1]))
    # log(1 + e) - log(1 + 1/e) = 1
    assert cx.generalisation_gap(model, train, test) == pytest.approx(1.0, rel=1e-6)
    assert cx.generalisation_gap(model, train, test, loss="error") == 1.0


def identity_model():
    return nn.Sequential(_set(nn.Linear(2, 2, bias=False), [[1, 0], [0, 1]]))


def test_fisher_rao_norm():
    # <theta, grad l> = <p - e_y, z> for a linear layer: -1/(1 + e) and e/(1 + e)
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    expected = math.sqrt((1 + E * E) / 2) / (1 + E)
    assert gx.fisher_rao_norm(identity_model(), x, y) == pytest.approx(expected, rel=1e-6)


def test_fisher_rao_lemma_on_a_relu_network():
    """Liang et al.'s Lemma 2.1: a bias-free ReLU network with one hidden layer has
    <theta, grad l> = 2 <dl/df, f>, for any weights."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False))
    x, y = torch.rand(6, 3), torch.randint(0, 4, (6,))
    f = net(x).detach().requires_grad_(True)
    (grad_f,) = torch.autograd.grad(nn.functional.cross_entropy(f, y, reduction="sum"), f)
    by_hand = (2 * (grad_f * f).sum(1)).double().square().mean().sqrt().item()
    assert gx.fisher_rao_norm(net, x, y) == pytest.approx(by_hand, rel=1e-5)


def test_gradient_noise():
    # per-example gradients (p - e_y) x^T: g1, g2 with ||g1 - g2||^2 = 2 (1 + e^2) / (1 + e)^2
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    expected = (1 + E * E) / (2 * (1 + E) ** 2)
    assert gx.gradient_noise(identity_model(), x, y, batch_size=1) == pytest.approx(expected, rel=1e-6)
    assert gx.gradient_noise(identity_model(), x, y, batch_size=2) == pytest.approx(0.0, abs=1e-12)


def test_sharpness_reaches_the_worst_corner():
    # L = log(1 + e^(b - a)) at a = 1, b = 0; the box |da| <= 0.2, |db| <= 0.1 peaks at
    # a - 0.2, b + 0.1, where every step's gradient signs point
    model = nn.Sequential(_set(nn.Linear(1, 2, bias=False), [[1.0], [0.0]]))
    x, y = torch.tensor([[1.0]]), torch.tensor([0])
    base, peak = math.log1p(math.exp(-1)), math.log1p(math.exp(-0.7))
    expected = 100 * (peak - base) / (1 + base)
    for steps in (1, 5):
        assert gx.sharpness(model, x, y, eps=0.1, steps=steps) == pytest.approx(expected, rel=1e-5)


def test_vc_dimension_and_bound(final):
    d = 2 * 12 * math.log2(4 * E)  # W = 12 parameters, U = 4 units
    assert gx.vc_dimension(final) == pytest.approx(d, rel=1e-12)
    n = 10_000
    bound = math.sqrt((d * (math.log(2 * n / d) + 1) + math.log(4 / 0.05)) / n)
    assert gx.vc_bound(final, n) == pytest.approx(bound, rel=1e-12)
    assert gx.vc_bound(final, 50) == math.inf


def test_steps_to_loss():
    assert gx.steps_to_loss([1.0, 0.5, 0.09, 0.2], 0.1) == 3
    assert gx.steps_to_loss([{"loss": 0.3}, {"loss": 0.05}], 0.1) == 2
    assert gx.steps_to_loss([1.0, 0.5], 0.1) == math.inf


def test_measures_collects_table1(final, initial):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    data = (x, torch.tensor([0, 1]))
    out = cx.measures(final, initial, train=data, test=data)
    assert set(out) == {"PFN", "PSN", "NoP", "WC", "SoSP", "PB", "PBC", "distance", "GE"}
    assert out["PBC"] == pytest.approx(7.5 + 2 * math.log(2)) and out["GE"] == 0.0
    assert set(cx.measures(final)) == {"PFN", "PSN", "NoP", "WC"}


def test_hygiene_on_a_messy_model():
    """BatchNorm is skipped (not a layer here), the model keeps mode, flags and stale .grad."""
    model, initial = messy_model(0), messy_model(1)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with torch.no_grad():
        for fn in (lambda: gx.sharpness(model, x, y, steps=2),
                   lambda: gx.fisher_rao_norm(model, x, y),
                   lambda: gx.gradient_noise(model, x, y, batch_size=3),
                   lambda: cx.measures(model, initial, train=(x, y), test=(x, y))):
            value = leaves_as_found(fn, model, x, y)
            assert all(math.isfinite(v) for v in (value.values() if isinstance(value, dict) else [value]))


@pytest.mark.parametrize("call, error, match", [
    (lambda m, i: cx.frobenius_product(nn.Sequential(nn.Embedding(3, 2))), ValueError,
     r"parameters in 0 \(Embedding\)"),
    (lambda m, i: cx.spectral_product(nn.Sequential(nn.ReLU())), ValueError, "no Linear or Conv"),
    (lambda m, i: cx.pac_bayes(m, {}), ValueError, "initial has no parameter '0.weight'"),
    (lambda m, i: cx.pac_bayes(m, nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))),
     ValueError, r"initial '0.weight' has shape \(2, 3\)"),
    (lambda m, i: cx.pac_bayes(m, 3), TypeError, "initial must be the initial model"),
    (lambda m, i: cx.pac_bayes(m, i, sigma=[1.0]), ValueError, "sigma must be one number or one per"),
    (lambda m, i: cx.pac_bayes(m, i, sigma=0.0), ValueError, "sigma must be > 0"),
    (lambda m, i: gx.sharpness(m, torch.rand(2, 2), torch.tensor([0, 1]), eps=0), ValueError,
     "eps must be > 0"),
    (lambda m, i: gx.gradient_noise(m, torch.rand(2, 2), torch.tensor([0, 1]), batch_size=0),
     ValueError, "batch_size must be > 0"),
    (lambda m, i: gx.fisher_rao_norm(m, torch.rand(0, 2), torch.zeros(0, dtype=torch.long)),
     ValueError, "x is empty"),
    (lambda m, i: cx.generalisation_gap(m, (torch.rand(1, 2), torch.tensor([0])), None),
     TypeError, r"test must be an \(x, y\) pair"),
    (lambda m, i: cx.generalisation_gap(m, None, None, loss="mse"), ValueError, "loss must be one of"),
    (lambda m, i: gx.steps_to_loss([], 0.1), ValueError, "history must be a non-empty"),
    (lambda m, i: gx.steps_to_loss([1.0], float("nan")), ValueError, "level must be a finite"),
    (lambda m, i: gx.vc_bound(m, 100, delta=1.5), ValueError, r"delta must lie in \(0, 1\)"),
    (lambda m, i: cx.layer_correlation(nn.ReLU()), TypeError, "module must be a Linear or Conv"),
    (lambda m, i: cx.measures(m, train=(torch.rand(1, 2), torch.tensor([0]))), ValueError,
     "give both train and test"),
    (lambda m, i: gx.sharpness(m, torch.rand(2, 2), torch.tensor([0, 5])), ValueError,
     r"y holds labels outside \[0, 2\)"),
    (lambda m, i: cx.generalisation_gap(m, (torch.rand(1, 2), torch.tensor([0])),
                                        (torch.rand(1, 2), torch.tensor([2]))), ValueError,
     r"test\[1\] holds labels outside"),
    (lambda m, i: gx.path_norm(m, (0,)), ValueError, "in_shape must be the positive sizes"),
])
def test_bad_input(final, initial, call, error, match):
    with pytest.raises(error, match=match):
        call(final, initial)


@pytest.mark.parametrize("measure", ["gradient_noise", "sharpness"])
def test_host_syncs_do_not_grow_with_the_loop(measure):
    """gradient_noise loops over minibatches and sharpness over ascent steps: on a GPU neither
    may wait for the device inside its loop."""
    model, x, y = messy_model(), torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    if measure == "gradient_noise":
        def run(n):
            return gx.gradient_noise(model, x, y, batch_size=len(x) // n)
    else:
        def run(n):
            return gx.sharpness(model, x, y, steps=n)
    few, many = grows(run, 2, 16)
    assert few.total == many.total, explain(few, many)


def test_wc_agrees_with_the_training_penalty_on_linear_layers():
    """defences.regularisers.weight_correlation_penalty (Jin et al.'s regulariser) sums the same
    rho over layers that WC averages (the two differ on convolutions, which the penalty reads
    as whole filters)."""
    from robustlab.defences.regularisers import weight_correlation_penalty
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    expected = weight_correlation_penalty(net).item() / 3
    assert cx.weight_correlation(net) == pytest.approx(expected, rel=1e-5)
