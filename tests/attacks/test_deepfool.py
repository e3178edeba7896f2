import pytest
import torch

from robustlab.attacks.deepfool import deepfool
from robustlab.norms import flat_norm

from ..conftest import Sqrt, check_conventions, linear_classifier, messy_model


def linear_setup(k, norm, n=8, seed=1):
    """x in the middle of the box, labelled as the model predicts, and the exact smallest change
    that crosses a boundary: min_j margin_j / ||w_y - w_j||_q, q = 2 for L2, 1 for L-inf."""
    model = linear_classifier(k=k)
    w = model[1].weight.detach()
    x = 0.45 + 0.1 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    z = model(x).detach()
    y = z.argmax(1)
    margin = z.gather(1, y[:, None]) - z
    dual = (w[y][:, None] - w[None]).norm(p=2 if norm == "l2" else 1, dim=2)
    return model, x, y, (margin / dual).masked_fill(margin == 0, torch.inf).amin(1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_conventions(batch, norm):
    x, y = batch
    a = check_conventions(deepfool, x, y, ball=None, norm=norm)
    assert torch.equal(a, deepfool(messy_model(), x, y, norm=norm)), "same output twice"


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("k", [2, 10])
def test_linear_exact(norm, k):
    """For an affine classifier DeepFool's first step lands on the nearest boundary."""
    model, x, y, dist = linear_setup(k, norm)
    adv = deepfool(model, x, y, norm=norm, overshoot=1e-3)
    assert (model(adv).argmax(1) != y).all()
    err = (flat_norm(adv - x, norm) / dist - 1).abs()
    assert (err < 0.01).all(), f"relative errors {err.tolist()}"


def test_linear_overshoot_scaling():
    """One step, then the final (1 + overshoot) scaling: ||x' - x|| = 1.02 (dist + 1e-4/||w'||)."""
    model, x, y, dist = linear_setup(2, "l2")
    w = model[1].weight.detach()
    d = flat_norm(deepfool(model, x, y) - x, "l2")
    expected = 1.02 * (dist + 1e-4 / (w[0] - w[1]).norm())
    assert torch.allclose(d, expected, rtol=1e-4), f"{d.tolist()} vs {expected.tolist()}"


@pytest.mark.parametrize("norm,budget", [("l2", 1.0), ("linf", 0.2)])
def test_digits_untargeted(digits_cnn, digits_test, norm, budget):
    x, y = digits_test
    x, y = x[:64], y[:64]
    adv = deepfool(digits_cnn, x, y, norm=norm)
    ok = digits_cnn(adv).argmax(1) != y
    d = flat_norm(adv - x, norm)[ok]
    msg = f"{norm}: success {ok.float().mean():.3f}, mean distortion {d.mean():.3f}"
    assert ok.float().mean() >= 0.95, msg
    # minimum-norm: far below the budgets at which FGSM/PGD break the model (test_gradient)
    assert d.mean() < 0.6 * budget, msg


def test_per_example_early_stopping(digits_cnn, digits_test):
    """Each example stops when its label flips: the batch gives what one-by-one runs give."""
    x, y = digits_test
    x, y = x[:6], y[:6]
    batched = deepfool(digits_cnn, x, y)
    alone = torch.cat([deepfool(digits_cnn, x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_already_misclassified_unchanged(digits_cnn, digits_test):
    x, _ = digits_test
    x = x[:4]
    wrong = (digits_cnn(x).argmax(1) + 1) % 10
    assert torch.equal(deepfool(digits_cnn, x, wrong), x)


def test_num_classes_restricts_candidates():
    """Class 1 scores second at x but its boundary is 0.4 away; class 2 scores last and its
    boundary is 0.25 away. All classes: DeepFool goes to 2; num_classes=2: only to 1."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, 0], model[1].weight[2, 1] = 0.1, 4.0
        model[1].bias.copy_(torch.tensor([0.0, -0.09, -3.0]))  # logits at x = 0.5: 0, -0.04, -1
    x, y = torch.full((1, 1, 8, 8), 0.5), torch.tensor([0])
    for num_classes, target, dist in [(None, 2, 0.25), (2, 1, 0.4)]:
        adv = deepfool(model, x, y, num_classes=num_classes, overshoot=1e-3)
        assert model(adv).argmax(1).item() == target
        assert abs(flat_norm(adv - x, "l2").item() / dist - 1) < 0.01


# issue 7: DeepFool returned NaN pixels where the input gradient is infinite
def test_infinite_gradient_gives_no_nan(eight):
    x, y = eight  # digits have many pixels at exactly 0, where sqrt' is infinite
    assert (x == 0).any()
    assert not deepfool(Sqrt(), x, y, steps=3).isnan().any()
