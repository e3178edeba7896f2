"""The weight regularisers of robustlab.defences.regularisers."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.defences import (
    BestRobust,
    BjorckLinear,
    GroupSort,
    bjorck,
    parseval,
    parseval_retraction,
    spectral_normalised,
    spectral_norms,
    weight_correlation,
    weight_correlation_penalty,
)
from robustlab.train import cross_entropy, fit

from ..conftest import leaves_as_found


def _orthonormality_error(w):
    """||W^T W - I|| for a tall W, ||W W^T - I|| for a wide one (Frobenius)."""
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return (gram - torch.eye(len(gram), dtype=w.dtype)).norm()


# --------------------------------------------------------------------------- spectral norm

def test_spectral_normalised_divides_by_the_top_singular_value():
    """W = diag(3, 1) -> W / 3 = diag(1, 1/3); the original model is left as found."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.tensor([3.0, 1.0])))
    x = torch.rand(4, 2)
    normed = leaves_as_found(lambda: spectral_normalised(model), model, x)
    normed.eval()
    assert torch.allclose(normed[0].weight, torch.diag(torch.tensor([1.0, 1 / 3])), atol=1e-5)
    assert torch.allclose(normed[0](x), x @ normed[0].weight.T + model[0].bias)
    assert spectral_norms(model)["0"] == pytest.approx(3.0, rel=1e-6)
    assert not hasattr(model[0], "parametrizations")


def test_spectral_norms_are_one_on_a_cnn():
    seed_everything(0)
    model = models.SmallCNN(width=4)
    normed = spectral_normalised(model, power_iterations=5)
    normed.train()
    for _ in range(10):  # the power iteration runs in training forward passes
        normed(torch.rand(2, 1, 8, 8))
    normed.eval()
    before, after = spectral_norms(model), spectral_norms(normed)
    assert set(before) == set(after) and len(after) == 6
    assert all(abs(s - 1) < 1e-3 for s in after.values()), after
    assert any(abs(s - 1) > 0.1 for s in before.values())


# --------------------------------------------------------------------------- orthogonality

@pytest.mark.parametrize("shape", [(16, 8), (8, 16), (12, 12)])
def test_bjorck_output_is_orthonormal(shape):
    """W = U diag(s) V^T with singular values s from 0.5 to 2."""
    torch.manual_seed(0)
    k = min(shape)
    u = torch.linalg.qr(torch.randn(shape[0], k, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(shape[1], k, dtype=torch.float64))[0]
    w = u @ torch.diag(torch.linspace(0.5, 2.0, k, dtype=torch.float64)) @ v.T
    assert _orthonormality_error(w) > 1
    assert _orthonormality_error(bjorck(w, iterations=30)) < 1e-10


def test_bjorck_linear_is_orthonormal_and_preserves_gradient_norms():
    torch.manual_seed(0)
    layer = BjorckLinear(6, 6)
    with torch.no_grad():
        layer.weight.add_(0.1 * torch.randn(6, 6))  # off the orthogonal init
    w = layer.orthonormal_weight()
    assert _orthonormality_error(w.detach()) < 1e-5
    x = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, 6)
    (gx,) = torch.autograd.grad((layer(x) * g).sum(), x)
    assert torch.allclose(gx.norm(dim=1), g.norm(dim=1), rtol=1e-5)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_groupsort_permutes_within_groups_and_preserves_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 2, 2, requires_grad=True)
    out = GroupSort(3)(x)
    groups = x.detach().reshape(3, 2, 3, 2, 2)
    assert torch.equal(out.detach().reshape(3, 2, 3, 2, 2), groups.sort(dim=2).values)
    assert torch.equal(GroupSort(2)(torch.tensor([[3.0, 1.0, -1.0, 2.0]])),
                       torch.tensor([[1.0, 3.0, -1.0, 2.0]]))
    g = torch.randn(3, 6, 2, 2)
    (gx,) = torch.autograd.grad((out * g).sum(), x)
    # the Jacobian is a permutation within each group: the same entries, moved
    assert torch.equal(gx.reshape(3, 2, 3, 2, 2).sort(dim=2).values,
                       g.reshape(3, 2, 3, 2, 2).sort(dim=2).values)
    with pytest.raises(ValueError, match="group_size"):
        GroupSort(4)(x)


def test_parseval_retraction_moves_towards_orthogonality():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Conv2d(2, 3, 2))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    w0 = [model[0].weight.detach().clone(), model[2].weight.detach().reshape(3, -1).clone()]
    err0 = [_orthonormality_error(w) for w in w0]
    parseval_retraction(model, beta=0.05)
    w1 = model[0].weight.detach()
    assert torch.allclose(w1, 1.05 * w0[0] - 0.05 * w0[0] @ w0[0].T @ w0[0], atol=1e-5)
    err1 = [_orthonormality_error(model[0].weight), _orthonormality_error(model[2].weight.reshape(3, -1))]
    assert all(b < a for a, b in zip(err0, err1)), (err0, err1)
    q = torch.linalg.qr(torch.randn(8, 8))[0]  # an orthogonal W is a fixed point
    with torch.no_grad():
        model[0].weight.copy_(q)
    parseval_retraction(model, beta=0.05)
    assert torch.allclose(model[0].weight, q, atol=1e-5)


def test_parseval_hook_runs_after_every_optimiser_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = parseval(opt, model, beta=0.1)
    x, y = data.digits("test")
    w0 = model[1].weight.detach().clone()
    fit(model, [(x[:16], y[:16]), (x[16:32], y[16:32])], epochs=1, optimizer=opt,
        progress=False)
    for _ in range(2):
        w0 = 1.1 * w0 - 0.1 * w0 @ w0.T @ w0
    assert torch.allclose(model[1].weight, w0, atol=1e-6)
    handle.remove()
    opt.step()
    assert torch.allclose(model[1].weight, w0, atol=1e-6)


# --------------------------------------------------------------------------- weight correlation

def test_weight_correlation_on_a_2x2_example():
    """Rows (1, 0) and (1, 1): |cos| = 1 / sqrt 2, the mean over the two ordered pairs too;
    a one-unit layer adds 0."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert weight_correlation_penalty(model).item() == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    assert weight_correlation_penalty(model).item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [-2.0, -4.0]]))  # anti-parallel
    assert weight_correlation_penalty(model).item() == pytest.approx(1.0, rel=1e-6)


def test_weight_correlation_objective_adds_the_penalty():
    torch.manual_seed(0)
    model = models.MLP((1, 8, 8), (16,), 10)
    x, y = data.digits("test")
    x, y = x[:16], y[:16]
    loss, logs = weight_correlation(weight=0.5)(model, x, y)
    penalty = weight_correlation_penalty(model)
    assert torch.allclose(loss, F.cross_entropy(model(x), y) + 0.5 * penalty)
    assert torch.allclose(logs["wcorr"], penalty) and not logs["wcorr"].requires_grad
    loss.backward()
    assert model[1].weight.grad is not None
    inner = weight_correlation(lambda m, x, y: (cross_entropy(m, x, y), {"a": 1.0}), weight=0.0)
    assert inner(model, x, y)[1]["a"] == 1.0
    with pytest.raises((ValueError, TypeError), match="weight"):
        weight_correlation(weight=-1.0)


# --------------------------------------------------------------------------- early stopping

def test_best_robust_keeps_the_best_epoch():
    train, (x, y) = data.digits("train"), data.digits("test")
    seed_everything(0)
    model = models.MLP((1, 8, 8), (32,), 10)
    stopper = BestRobust((x[:120], y[:120]), eps=0.1, alpha=0.03, steps=5)
    states = {}

    def record(model, row):
        out = stopper(model, row)
        states[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    # a learning rate high enough that robust accuracy goes up and down
    hist = fit(model, train, epochs=6, lr=0.03, progress=False, after_epoch=record)
    accs = [row["robust_val_acc"] for row in hist]
    assert len(set(accs)) > 1
    best = accs.index(max(accs)) + 1
    assert stopper.restore(model) == best
    assert all(torch.equal(v, states[best][k]) for k, v in model.state_dict().items())


def test_best_robust_patience_stops_training():
    train = data.digits("train")
    x, y = data.digits("test")
    seed_everything(0)
    model = models.MLP((1, 8, 8), (32,), 10)
    stopper = BestRobust((x[:120], y[:120]), eps=0.1, alpha=0.03, steps=5, patience=1)
    hist = fit(model, train, epochs=30, lr=0.05, progress=False, after_epoch=stopper)
    accs = [row["robust_val_acc"] for row in hist]
    assert len(hist) < 30  # a noisy large-lr run has an epoch without a new best
    assert accs[-1] <= max(accs[:-1]) and stopper.best_epoch == len(hist) - 1


def test_bad_arguments_name_the_argument():
    x, y = data.digits("test")
    for kwargs, arg in [(dict(eps=0.0, alpha=0.1, steps=1), "eps"),
                        (dict(eps=0.1, alpha=0.1, steps=0), "steps"),
                        (dict(eps=0.1, alpha=0.1, steps=1, patience=0), "patience"),
                        (dict(eps=0.1, alpha=0.1, steps=1, norm="l7"), "norm")]:
        with pytest.raises((ValueError, TypeError), match=arg):
            BestRobust((x, y), **kwargs)
    with pytest.raises(TypeError, match="val_data"):
        BestRobust(x, eps=0.1, alpha=0.1, steps=1)
    with pytest.raises(ValueError, match="no epoch"):
        BestRobust((x, y), eps=0.1, alpha=0.1, steps=1).restore(models.MLP())
    with pytest.raises(ValueError, match="no Linear or Conv"):
        spectral_normalised(nn.ReLU())
    with pytest.raises((ValueError, TypeError), match="beta"):
        parseval_retraction(models.MLP(), beta=-0.1)
    with pytest.raises(TypeError, match="optimizer"):
        parseval("sgd", models.MLP())
    with pytest.raises((ValueError, TypeError), match="iterations"):
        bjorck(torch.eye(2), iterations=0)
    with pytest.raises((ValueError, TypeError), match="group_size"):
        GroupSort(0)


def test_bjorck_net_has_a_class_count_the_oracle_reads():
    """An Oracle (and so worst_case's Square member) reads K from the last layer's out_features."""
    from robustlab.attacks import Oracle

    layer = BjorckLinear(6, 4)
    assert (layer.in_features, layer.out_features) == (6, 4)
    assert Oracle(nn.Sequential(nn.Flatten(), BjorckLinear(64, 6), GroupSort(2), layer)).num_classes == 4


def test_random_shift_moves_each_image_by_at_most_shift_pixels():
    from robustlab.defences import random_shift

    x = torch.rand(40, 2, 6, 7)
    out = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):  # each output is exactly one of the 25 zero-filled translations
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 7])]
        assert hits, f"image {i} is not a translation of its input"
        seen.update(hits)
    assert len(seen) > 10  # the offsets vary from image to image
    assert random_shift(x, 0) is x


def test_augmented_is_the_objective_on_shifted_batches():
    from robustlab.defences import augmented, random_shift
    from robustlab.train import cross_entropy

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss = augmented(shift=1, generator=torch.Generator().manual_seed(3))(model, x, y)
    shifted = random_shift(x, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss, cross_entropy(model, shifted, y))
    assert torch.equal(augmented(shift=0)(model, x, y), cross_entropy(model, x, y))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="shift"):
            augmented(shift=bad)
    with pytest.raises(TypeError, match="objective"):
        augmented(objective=3)
