"""break_transforms: Athalye et al.'s table in miniature on the digits CNN."""

from functools import partial

import pytest
import torch

from robustlab.defences import RandomResizePad, bit_depth, jpeg, median_filter, tv_denoise
from robustlab.evaluate import break_transforms, is_random

from .conftest import leaves_as_found, messy_model, seeded


def defences(seed: int) -> dict:
    return {"bit depth 3": partial(bit_depth, bits=3), "median 2x2": partial(median_filter, k=2),
            "jpeg 75": partial(jpeg, quality=75), "tv 0.05": partial(tv_denoise, weight=0.05),
            "resize-pad": RandomResizePad(0.8, seeded(seed))}


@pytest.mark.parametrize("seed", [0, 1])
def test_adaptive_attack_breaks_every_transformation(digits_cnn, digits_test, seed):
    """At eps 0.15 (L-inf, 20 PGD steps) on 150 test digits: the adaptive attack (BPDA, with
    EOT for random resize-pad) leaves every defence within 0.1 of the undefended model's PGD
    accuracy (measured over seeds 0-6: 0.06-0.12 undefended, adaptive at most 0.067 above it,
    bit depth 3 the closest call); the naive attack, whose gradient through bit depth and
    JPEG is zero, leaves those two within 0.05 of their clean accuracy and at least 0.5 above
    the adaptive one (measured 0.81 or more above)."""
    x, y = digits_test
    pick = torch.randperm(len(x), generator=seeded(seed))[:150]
    result = break_transforms(digits_cnn, x[pick], y[pick], defences(seed), eps=0.15,
                              generator=seeded(seed))
    print(result)
    rows = {name: i for i, name in enumerate(result.names)}
    assert list(rows) == ["none", *defences(seed)]
    undefended = result.naive[0]
    assert result.clean[0] > 0.9 and undefended < 0.3
    for name, i in rows.items():
        assert result.adaptive[i] <= undefended + 0.1, name
        assert result.adaptive[i] <= min(result.naive[i], result.clean[i]) + 1e-12, name
    for name in ("bit depth 3", "jpeg 75"):
        i = rows[name]
        assert result.clean[i] > 0.9
        assert result.naive[i] >= result.clean[i] - 0.05, name
        assert result.naive[i] >= result.adaptive[i] + 0.5, name
    assert result.adaptive_attack == ["PGD", "BPDA", "BPDA", "BPDA", "BPDA", "BPDA+EOT"]
    assert "adaptive PGD" in result.table() and "resize-pad" in str(result)


def test_is_random():
    x = torch.rand(4, 1, 8, 8)
    assert is_random(RandomResizePad(0.8, seeded()), x)
    assert not is_random(partial(median_filter, k=3), x)


def test_leaves_model_and_inputs_as_found(batch):
    x, y = batch
    model = messy_model()
    small = {"bits": partial(bit_depth, bits=3), "resize": RandomResizePad(0.8, seeded())}
    with torch.no_grad():
        result = leaves_as_found(lambda: break_transforms(model, x, y, small, eps=0.1, steps=2,
                                                          eot_samples=2, draws=2), model, x, y)
    assert len(result.names) == 3


def test_bad_input(digits_cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="defences"):
        break_transforms(digits_cnn, x, y, {}, eps=0.1)
    with pytest.raises(TypeError, match=r"defences\['a'\]"):
        break_transforms(digits_cnn, x, y, {"a": 1}, eps=0.1)
    with pytest.raises(ValueError, match="none"):
        break_transforms(digits_cnn, x, y, {"none": bit_depth}, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        break_transforms(digits_cnn, x, y, {"b": bit_depth}, eps=-1)
    with pytest.raises(ValueError, match="eot_samples"):
        break_transforms(digits_cnn, x, y, {"b": bit_depth}, eps=0.1, eot_samples=0)
