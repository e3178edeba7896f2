"""Bad input to any attack gets a clear error naming the problem (DESIGN.md section 3).

Each attack's own test file checks its hyperparameters; this file checks what they all share:
labels, pixel range, shapes, NaN and devices.
"""

import copy

import pytest
import torch

from robustlab import attacks as A

# every attack, called with cheap settings
ATTACKS = {
    "fgsm": lambda m, x, y: A.fgsm(m, x, y, eps=0.1),
    "pgd": lambda m, x, y: A.pgd(m, x, y, eps=0.1, alpha=0.02, steps=2),
    "cw": lambda m, x, y: A.cw(m, x, y, steps=2, binary_steps=1),
    "deepfool": lambda m, x, y: A.deepfool(m, x, y, steps=2),
    "lbfgs": lambda m, x, y: A.lbfgs(m, x, y, search_steps=1, max_iter=2),
    "stadv": lambda m, x, y: A.stadv(m, x, y, steps=2),
    "uap": lambda m, x, y: A.uap(m, x, y, eps=0.1, max_passes=1),
    "guap": lambda m, x, y: A.guap(m, x, y, eps=0.1, steps=2),
    "zoo": lambda m, x, y: A.zoo(m, x, y, coords_per_step=4, max_queries=20),
    "square": lambda m, x, y: A.square(m, x, y, eps=0.1, max_queries=5),
    "hop_skip_jump": lambda m, x, y: A.hop_skip_jump(m, x, y, max_queries=20),
    "one_pixel": lambda m, x, y: A.one_pixel(m, x, y, popsize=4, max_iter=1),
    "single_pixel_search": lambda m, x, y: A.single_pixel_search(m, x, y),
}


@pytest.fixture(params=sorted(ATTACKS))
def attack(request):
    return ATTACKS[request.param]


def test_labels_out_of_range(attack, batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match="label"):
        attack(digits_cnn, x[:2], torch.full_like(y[:2], 12))
    with pytest.raises(ValueError, match="labels outside"):
        attack(digits_cnn, x[:2], torch.full_like(y[:2], -1))


def test_pixels_outside_unit_box(attack, batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(digits_cnn, x[:2] * 2 - 0.5, y[:2])


def test_nan_input(attack, batch, digits_cnn):
    x, y = batch
    x = x[:2].clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        attack(digits_cnn, x, y[:2])


def test_shape_mismatch(attack, batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match="y must have shape"):
        attack(digits_cnn, x[:3], y[:2])
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        attack(digits_cnn, x[0], y[:1])


def test_zoo_budget_too_small_for_one_step(batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match="max_queries must be at least .* = 129"):
        A.zoo(digits_cnn, x[:2], y[:2], max_queries=20)


def test_device_mismatch(attack, batch, digits_cnn):
    """A model on another device than x (the meta device stands in for a GPU here)."""
    x, y = batch
    with pytest.raises(ValueError, match="model is on meta"):
        attack(copy.deepcopy(digits_cnn).to("meta"), x[:2], y[:2])
