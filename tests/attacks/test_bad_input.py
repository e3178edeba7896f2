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
    "patch": lambda m, x, y: A.patch(m, x, y, size=3, steps=2),
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


# each attack's own hyperparameters: (attack, kwargs, what the error must name)
BAD_HYPERPARAMETERS = [
    ("fgsm", dict(eps=-0.1), "eps"), ("fgsm", dict(eps=float("nan")), "eps"),
    ("fgsm", dict(eps=0.1, norm="l3"), "norm"), ("fgsm", dict(eps=0.1, norm="l1"), "norm"),
    ("fgsm", dict(eps=0.1, norm=True), "norm"),
    ("pgd", dict(eps=0.1, alpha=0.01, steps=0), "steps"),
    ("cw", dict(norm="l1"), "norm"), ("cw", dict(c=-1.0), "c"), ("cw", dict(kappa=-1.0), "kappa"),
    ("cw", dict(steps=0), "steps"), ("cw", dict(tau_decrease=1.5), "tau_decrease"),
    ("deepfool", dict(norm="l1"), "norm"), ("deepfool", dict(steps=0), "steps"),
    ("deepfool", dict(overshoot=-0.1), "overshoot"), ("deepfool", dict(num_classes=1), "num_classes"),
    ("lbfgs", dict(c=0.0), "c"), ("lbfgs", dict(search_steps=0), "search_steps"),
    ("lbfgs", dict(max_iter=1.5), "max_iter"),
    ("stadv", dict(tau=-1.0), "tau"), ("stadv", dict(kappa=-0.5), "kappa"),
    ("stadv", dict(steps=0), "steps"), ("stadv", dict(lr=0.0), "lr"),
    ("uap", dict(eps=-0.1), "eps"), ("uap", dict(eps=0.1, norm="l1"), "norm"),
    ("uap", dict(eps=0.1, target_fooling=1.5), "target_fooling"),
    ("uap", dict(eps=0.1, max_passes=0), "max_passes"),
    ("guap", dict(eps=0.1, tau=-1.0), "tau"), ("guap", dict(eps=0.1, batch_size=0), "batch_size"),
    ("guap", dict(eps=float("nan")), "eps"),
    ("square", dict(eps=-0.1), "eps"), ("square", dict(eps=0.1, norm="l1"), "norm"),
    ("square", dict(eps=0.1, max_queries=0), "max_queries"),
    ("square", dict(eps=0.1, p_init=0.0), "p_init"), ("square", dict(eps=0.1, loss="hinge"), "loss"),
    ("zoo", dict(max_queries=-5), "max_queries"), ("zoo", dict(solver="sgd"), "solver"),
    ("zoo", dict(c=-1.0), "c"), ("zoo", dict(h=0.0), "h"),
    ("hop_skip_jump", dict(norm="l3"), "norm"), ("hop_skip_jump", dict(max_queries=0), "max_queries"),
    ("hop_skip_jump", dict(targeted=True), "x_init"),
    ("hop_skip_jump", dict(targeted=True, x_init=torch.zeros(2, 1, 8, 8)), "x_init"),
    ("one_pixel", dict(popsize=2), "popsize"), ("one_pixel", dict(pixels=0), "pixels"),
    ("one_pixel", dict(max_iter=0), "max_iter"),
]


@pytest.mark.parametrize("name,kwargs,match", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters(name, kwargs, match, batch, digits_cnn):
    x, y = batch
    with pytest.raises((ValueError, TypeError), match=match):
        getattr(A, name)(digits_cnn, x, y, **kwargs)


def test_zoo_budget_too_small_for_one_step(batch, digits_cnn):
    x, y = batch
    with pytest.raises(ValueError, match="max_queries must be at least .* = 129"):
        A.zoo(digits_cnn, x[:2], y[:2], max_queries=20)


def test_device_mismatch(attack, batch, digits_cnn):
    """A model on another device than x (the meta device stands in for a GPU here)."""
    x, y = batch
    with pytest.raises(ValueError, match="model is on meta"):
        attack(copy.deepcopy(digits_cnn).to("meta"), x[:2], y[:2])


# issue 7: float16 gave NaN (guap) or "images contains NaN" (zoo) instead of a clear refusal
@pytest.mark.parametrize("name", ["guap", "zoo", "fgsm"])
def test_half_precision_is_refused_clearly(name, digits_cnn, eight):
    x, y = eight
    with pytest.raises(TypeError, match="float16.*float32 or float64"):
        ATTACKS[name](copy.deepcopy(digits_cnn).half(), x.half(), y)


# issue 7: a dtype mismatch gave torch's "Input type (double) and bias type (float)"
def test_dtype_mismatch_between_x_and_model(digits_cnn, eight):
    x, y = eight
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters"):
        A.fgsm(digits_cnn, x.double(), y, eps=0.1)
