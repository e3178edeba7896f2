"""The simulated camera of physical.py: exact where the transformation is known in closed form,
inside [0, 1], reproducible, differentiable, and usable as the EOT distribution of a patch."""

import pytest
import torch
from torch import nn

from robustlab.attacks import Photographed, apply_patch, patch, physical_transforms
from tests.syncs import explain, grows

from ..conftest import assert_unchanged, seeded, snapshot

NONE = dict(rotation=0.0, scale=0.0, brightness=0.0, contrast=0.0, blur=0.0)


def _images(n=4, c=3, side=12, seed=0):
    return torch.rand(n, c, side, side, generator=seeded(seed))


def test_no_transformation_is_the_identity():
    x = _images()
    assert torch.allclose(physical_transforms(x, **NONE, generator=seeded()), x, atol=1e-6)


def test_brightness_alone_adds_one_constant_per_image_within_its_range():
    x = _images() * 0.5 + 0.25  # away from the clip at 0 and 1
    out = physical_transforms(x, **{**NONE, "brightness": 0.2}, generator=seeded())
    shift = (out - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)
    assert shift.abs().max() <= 0.2 + 1e-6 and shift[:, 0].std() > 0  # drawn per image


def test_contrast_alone_scales_each_image():
    x = _images() * 0.5
    out = physical_transforms(x, **{**NONE, "contrast": 0.3}, generator=seeded())
    c = (out * x).flatten(1).sum(1) / (x * x).flatten(1).sum(1)  # the least-squares factor
    assert torch.allclose(out, c[:, None, None, None] * x, atol=1e-5)
    assert ((c - 1).abs() <= 0.3 + 1e-5).all() and c.std() > 0


def test_a_constant_image_stays_constant_under_rotation_scale_and_blur():
    x = torch.full((3, 1, 10, 10), 0.4)
    out = physical_transforms(x, rotation=45.0, scale=0.3, brightness=0.0, contrast=0.0, blur=2.0,
                              generator=seeded())
    assert torch.allclose(out, x, atol=1e-5)


def test_rotation_leaves_a_centred_round_blob_and_scale_grows_it():
    r = torch.arange(16.0) - 7.5
    blob = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 18).expand(3, 1, 16, 16)
    turned = physical_transforms(blob, **{**NONE, "rotation": 90.0}, generator=seeded())
    assert torch.allclose(turned, blob, atol=0.05)  # round: any angle maps it to itself
    ones = torch.zeros(3, 1, 32, 32)
    ones[..., 10:22, 10:22] = 1.0  # a centred square
    zoomed = physical_transforms(ones, **{**NONE, "scale": 0.5}, generator=seeded())
    g = seeded()
    torch.rand(3, generator=g)  # the first draw is the angles, the second the zooms
    s = 1 - 0.5 + torch.rand(3, generator=g) * 1.0  # s ~ U[0.5, 1.5]
    assert torch.allclose(zoomed.flatten(1).sum(1), 144 * s ** 2, rtol=0.1)  # area grows as s^2


def test_blur_smooths_and_keeps_the_mean_of_an_inner_dot():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1.0
    out = physical_transforms(x, **{**NONE, "blur": 1.0}, generator=seeded())
    assert out.max() < 1.0 and out[..., 4, 3] > 0 and torch.isclose(out.sum(), x.sum(), atol=1e-5)


def test_output_is_new_in_range_and_reproducible():
    x = _images()
    before = x.clone()
    a = physical_transforms(x, rotation=30.0, brightness=0.5, contrast=0.5, generator=seeded(3))
    b = physical_transforms(x, rotation=30.0, brightness=0.5, contrast=0.5, generator=seeded(3))
    c = physical_transforms(x, rotation=30.0, brightness=0.5, contrast=0.5, generator=seeded(4))
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    assert not a.isnan().any()


def test_gradients_reach_the_input():
    x = _images().requires_grad_(True)
    physical_transforms(x, generator=seeded()).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad, error, match", [
    ({"rotation": -1.0}, ValueError, "rotation"), ({"scale": 1.0}, ValueError, "scale"),
    ({"contrast": -0.1}, ValueError, "contrast"), ({"blur": float("nan")}, ValueError, "blur"),
    ({"brightness": "0.1"}, TypeError, "brightness"), ({"generator": 0}, TypeError, "generator"),
])
def test_bad_ranges_are_named(bad, error, match):
    with pytest.raises(error, match=match):
        physical_transforms(_images(), **bad)


def test_photographed_refuses_unknown_ranges_and_non_models():
    with pytest.raises(TypeError, match="unknown transformation ranges"):
        Photographed(nn.Identity(), angle=3.0)
    with pytest.raises(ValueError, match="rotation"):
        Photographed(nn.Identity(), rotation=-3.0)
    with pytest.raises(TypeError, match="model"):
        Photographed(lambda x: x)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3))


def test_photographed_draws_fresh_views_and_reproduces_them():
    net, x = _net(), _images()
    cam = Photographed(net, generator=seeded(1), rotation=20.0)
    first, second = cam(x), cam(x)
    assert not torch.equal(first, second)  # a fresh draw per call
    again = Photographed(net, generator=seeded(1), rotation=20.0)
    assert torch.equal(again(x), first) and torch.equal(again(x), second)


def test_eot_patch_leaves_the_model_as_found_and_is_reproducible():
    net, x = _net(), _images(n=6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    net.train()
    before = snapshot(net)
    runs = [patch(Photographed(net, generator=seeded(2)), x, y, size=4, steps=3, generator=seeded())
            for _ in range(2)]
    assert_unchanged(net, before)
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (3, 4, 4)
    assert 0 <= runs[0].min() and runs[0].max() <= 1
    assert apply_patch(x, runs[0], generator=seeded()).shape == x.shape


def test_host_syncs_do_not_grow_with_the_eot_patch_steps():
    net, x = _net(), _images(n=6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    small, large = grows(lambda s: patch(Photographed(net, generator=seeded(2)), x, y, size=4,
                                         steps=s, batch_size=3, generator=seeded()), 2, 6)
    assert small.total == large.total, explain(small, large)
