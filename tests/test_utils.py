import pytest
import torch

import robustlab


def test_generator_is_a_fresh_seeded_cpu_generator():
    a, b = robustlab.generator(3), robustlab.generator(3)
    assert a.device.type == "cpu"
    first = torch.rand(4, generator=a)
    assert torch.equal(first, torch.rand(4, generator=b))
    assert not torch.equal(first, torch.rand(4, generator=robustlab.generator(4)))
    # independent of the global seed: each lesson result reproduces on its own
    torch.manual_seed(0)
    x = torch.rand(4, generator=robustlab.generator(3))
    torch.manual_seed(1)
    assert torch.equal(x, torch.rand(4, generator=robustlab.generator(3)))


@pytest.mark.parametrize("bad", [1.5, "0", None, True])
def test_generator_seed_must_be_an_int(bad):
    with pytest.raises(TypeError, match="seed must be an int"):
        robustlab.generator(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_on_cuda():
    assert robustlab.generator(0, "cuda").device.type == "cuda"


@pytest.mark.parametrize("seed", [-1, 2 ** 32, True, "1", 1.5])
def test_seeds_are_checked(seed):
    from robustlab.utils import generator, seed_everything
    for make in (generator, seed_everything):
        with pytest.raises((TypeError, ValueError), match="seed"):
            make(seed)
