"""Random draws take a generator on any device (DESIGN.md section 3, GPU readiness).

Draws happen on the generator's own device. Results are device-independent only with a CPU
generator: then the same seed gives the same draws whether the data is on the CPU or a GPU.
On a machine without CUDA the "cuda" cases are not collected.
"""

import copy

import pytest
import torch

from robustlab import attacks as A
from robustlab._random import draw_device
from robustlab.defences import RandomResizePad
from robustlab.norms import random_in_ball

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

DRAWING = {
    "pgd": lambda m, x, y, g: A.pgd(m, x, y, eps=0.1, alpha=0.02, steps=2, generator=g),
    "square": lambda m, x, y, g: A.square(m, x, y, eps=0.1, max_queries=20, generator=g),
    "square-l2": lambda m, x, y, g: A.square(m, x, y, eps=0.5, norm="l2", max_queries=20,
                                             generator=g),
    "zoo": lambda m, x, y, g: A.zoo(m, x, y, coords_per_step=4, max_queries=40, generator=g),
    "hop_skip_jump": lambda m, x, y, g: A.hop_skip_jump(m, x, y, max_queries=60, generator=g),
    "one_pixel": lambda m, x, y, g: A.one_pixel(m, x, y, popsize=5, max_iter=2, generator=g),
    "uap": lambda m, x, y, g: A.uap(m, x, y, eps=0.1, max_passes=1, generator=g),
    "guap": lambda m, x, y, g: A.guap(m, x, y, eps=0.1, steps=2, generator=g)[1],
    "patch": lambda m, x, y, g: A.patch(m, x, y, size=3, steps=2, generator=g),
    "apply_patch": lambda m, x, y, g: A.apply_patch(x, x[0, :, :3, :3], generator=g),
    "random_resize_pad": lambda m, x, y, g: RandomResizePad(generator=g)(x),
}


def test_draw_device():
    with pytest.raises(TypeError):  # no silent CPU default: a draw without a generator
        draw_device(None)          # happens on the data's device, which the caller must name
    assert draw_device(None, "meta") == torch.device("meta")
    assert draw_device(torch.Generator(), "meta") == torch.device("cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", DRAWING)
def test_a_generator_on_the_data_device(name, device, digits_cnn, batch):
    """A generator on the data's device works, and repeats itself (black-box attacks: x_adv
    and the queries, both on the data's device)."""
    x, y = (t[:4].to(device) for t in batch)
    model = copy.deepcopy(digits_cnn).to(device)
    runs = [DRAWING[name](model, x, y, torch.Generator(device=device).manual_seed(0))
            for _ in range(2)]
    for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in runs)):
        assert a.device == x.device and torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_a_cpu_generator_draws_the_same_for_data_on_any_device(norm, device):
    x = torch.rand(4, 1, 8, 8)
    on_cpu = random_in_ball(x, 0.3, norm, torch.Generator().manual_seed(0))
    there = random_in_ball(x.to(device), 0.3, norm, torch.Generator().manual_seed(0))
    assert there.device == x.to(device).device
    torch.testing.assert_close(there.cpu(), on_cpu)
