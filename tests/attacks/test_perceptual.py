"""Perceptually bounded PGD: every output inside its SSIM floor or feature-distance ceiling
and in [0, 1], the attack strong within a loose bound, hygiene, determinism, no host sync per
step, and clear errors."""

import functools

import pytest
import torch

from robustlab import data, models
from robustlab.attacks import perceptual_pgd
from robustlab.perceptual import feature_distance, ssim

from ..conftest import check_conventions, leaves_as_found, messy_model
from ..syncs import explain, grows

LAYERS = ["stem.2"]  # the residual network's stem: the feature network of the bound


@functools.cache
def _setup():
    x, y = data.digits("test")
    return (models.pretrained("digits-cnn"), models.pretrained("digits-resnet"),
            x[:48].clone(), y[:48].clone())


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("min_ssim", [0.95, 0.9, 0.8])
def test_ssim_bound_holds_on_every_output_and_the_attack_bites(min_ssim):
    """Measured on 48 digits (clean accuracy 0.98), 20 steps of 0.05: accuracy 0.75, 0.46,
    0.13 at SSIM floors 0.95, 0.9, 0.8."""
    model, _, x, y = _setup()
    x_adv = perceptual_pgd(model, x, y, bound="ssim", min_ssim=min_ssim, steps=20, alpha=0.05)
    assert (ssim(x, x_adv) >= min_ssim).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.shape == x.shape
    assert accuracy(model, x_adv, y) < {0.95: 0.9, 0.9: 0.6, 0.8: 0.25}[min_ssim]
    assert (ssim(x, x_adv) < min_ssim + 0.05).float().mean() > 0.5  # it uses its budget


@pytest.mark.parametrize("max_distance", [0.05, 0.2])
def test_feature_bound_holds_on_every_output(max_distance):
    """Measured: accuracy 0.44 and 0.02 at feature distances 0.05 and 0.2."""
    model, resnet, x, y = _setup()
    x_adv = perceptual_pgd(model, x, y, bound="feature", max_distance=max_distance,
                           network=resnet, layers=LAYERS, steps=10, alpha=0.05)
    assert (feature_distance(x, x_adv, network=resnet, layers=LAYERS) <= max_distance).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(model, x_adv, y) < {0.05: 0.7, 0.2: 0.2}[max_distance]


def test_no_bisection_keeps_x_where_the_step_leaves_the_bound():
    """With bisections=0 a row whose step leaves the bound stays at its last feasible point."""
    model, _, x, y = _setup()
    x_adv = perceptual_pgd(model, x, y, bound="ssim", min_ssim=0.999, steps=1, alpha=0.2,
                           bisections=0)
    assert torch.equal(x_adv, x)


def test_model_and_inputs_left_as_found_and_deterministic():
    model = messy_model()
    _, _, x, y = _setup()
    x, y = x[:8], y[:8]
    runs = [leaves_as_found(lambda: perceptual_pgd(model, x, y, bound="ssim", min_ssim=0.9,
                                                   steps=3, alpha=0.05), model, x, y)
            for _ in range(2)]
    assert torch.equal(*runs)
    net = messy_model(1)
    leaves_as_found(lambda: perceptual_pgd(model, x, y, bound="feature", max_distance=0.1,
                                           network=net, layers=["2"], steps=2), net, x)


@pytest.mark.parametrize("bound", ["ssim", "feature"])
def test_conventions_inside_no_grad(bound):
    _, _, x, y = _setup()
    kw = ({"min_ssim": 0.9} if bound == "ssim" else
          {"max_distance": 0.1, "network": messy_model(1), "layers": ["2"]})
    x_adv = check_conventions(perceptual_pgd, x[:8], y[:8], bound=bound, steps=3, **kw)
    if bound == "ssim":
        assert (ssim(x[:8], x_adv) >= 0.9).all()


@pytest.mark.parametrize("bound", ["ssim", "feature"])
def test_no_host_sync_per_step(bound):
    model, resnet, x, y = _setup()
    kw = ({"min_ssim": 0.9} if bound == "ssim" else
          {"max_distance": 0.1, "network": resnet, "layers": LAYERS})

    def run(steps):
        return perceptual_pgd(model, x[:8], y[:8], bound=bound, steps=steps, **kw)
    few, many = grows(run, 2, 6)
    assert few.total == many.total, explain(few, many)


def test_bad_input():
    model, resnet, x, y = _setup()
    x, y = x[:4], y[:4]
    cases = [
        ({"bound": "lpips", "min_ssim": 0.9}, ValueError, "bound"),
        ({"bound": "ssim"}, ValueError, "min_ssim"),
        ({"bound": "ssim", "min_ssim": 0.9, "max_distance": 0.1}, ValueError, "min_ssim"),
        ({"bound": "ssim", "min_ssim": 1.5}, ValueError, "min_ssim"),
        ({"bound": "ssim", "min_ssim": 0.9, "window": 4}, ValueError, "window"),
        ({"bound": "feature", "max_distance": 0.1}, ValueError, "network and layers"),
        ({"bound": "feature", "max_distance": -0.1, "network": resnet, "layers": LAYERS},
         ValueError, "max_distance"),
        ({"bound": "feature", "max_distance": 0.1, "network": resnet, "layers": ["nope"]},
         ValueError, "not submodules"),
        ({"bound": "feature", "max_distance": 0.1, "network": resnet, "layers": LAYERS,
          "weights": [-1.0]}, ValueError, "weights"),
        ({"bound": "ssim", "min_ssim": 0.9, "steps": 0}, ValueError, "steps"),
        ({"bound": "ssim", "min_ssim": 0.9, "bisections": -1}, ValueError, "bisections"),
        ({"bound": "ssim", "min_ssim": 0.9, "norm": "l1"}, ValueError, "norm"),
    ]
    for kw, error, message in cases:
        with pytest.raises(error, match=message):
            perceptual_pgd(model, x, y, **kw)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        perceptual_pgd(model, x * 2, y, min_ssim=0.9)
