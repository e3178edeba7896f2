from functools import partial

import pytest
import torch

from robustlab._model import input_grad
from robustlab.attacks import BPDA, EOT, fgsm, pgd
from robustlab.defences import Defended, RandomResizePad, bit_depth
from robustlab.train import evaluate

from ..conftest import check_conventions, messy_model, seeded


def expected_accuracy(model, x, y, draws=10):
    """Accuracy of a randomised model, averaged over `draws` passes."""
    return sum(evaluate(model, (x, y)) for _ in range(draws)) / draws


def test_bit_depth_levels_and_zero_gradient():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    q = bit_depth(x, 2)
    assert torch.allclose(q * 3, (q * 3).round(), atol=1e-6), "four levels: 0, 1/3, 2/3, 1"
    assert (q - x).abs().max() <= 1 / 6 + 1e-6
    (g,) = torch.autograd.grad(q.sum(), x)
    assert torch.equal(g, torch.zeros_like(x)), "quantisation shatters the gradient"


def test_random_resize_pad():
    x = torch.rand(5, 1, 8, 8)
    t = RandomResizePad(0.75, seeded())
    a, b = t(x), t(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, b), "each call draws afresh"
    assert torch.equal(RandomResizePad(0.75, seeded())(x), a), "a seeded generator replays the draws"
    assert torch.allclose(RandomResizePad(1.0)(x), x, atol=1e-6), "scale 1 leaves the image alone"


def test_bpda_forward_is_the_defence_backward_the_approximation(digits_cnn, digits_test):
    x, y = digits_test[0][:8], digits_test[1][:8]
    q = partial(bit_depth, bits=2)
    defended, bpda = Defended(digits_cnn, q), BPDA(digits_cnn, q)
    assert torch.equal(bpda(x), defended(x))
    g_plain, _ = input_grad(defended, x, y)
    g_bpda, _ = input_grad(bpda, x, y)
    g_model, _ = input_grad(digits_cnn, q(x), y)
    assert torch.equal(g_plain, torch.zeros_like(x))
    assert torch.allclose(g_bpda, g_model), "straight-through: the model's gradient at q(x)"
    g_half, _ = input_grad(BPDA(digits_cnn, q, approx=lambda t: 0.5 * t), x, y)
    assert torch.allclose(g_half, 0.5 * g_model, atol=1e-7), "chain rule through the given g"


def test_bpda_breaks_bit_depth_reduction(digits_cnn, digits_test):
    x, y = digits_test[0][:200], digits_test[1][:200]
    q = partial(bit_depth, bits=2)
    defended = Defended(digits_cnn, q)
    clean = evaluate(defended, (x, y))
    attack = dict(eps=0.2, alpha=0.025, steps=20, random_start=False)
    plain = evaluate(defended, (pgd(defended, x, y, **attack), y))
    broken = evaluate(defended, (pgd(BPDA(digits_cnn, q), x, y, **attack), y))
    print(f"bit depth 2: clean {clean:.3f}, PGD {plain:.3f}, PGD through BPDA {broken:.3f}")
    assert clean > 0.9 and plain == clean, "a zero gradient leaves PGD where it started"
    assert broken < 0.1


def test_eot_averages_log_probabilities(digits_cnn, digits_test):
    x = digits_test[0][:8]
    assert torch.allclose(EOT(digits_cnn, samples=4)(x), digits_cnn(x).log_softmax(1), atol=1e-6)
    random = Defended(digits_cnn, RandomResizePad(0.8, seeded()))
    z = EOT(random, samples=3)(x)
    manual = Defended(digits_cnn, RandomResizePad(0.8, seeded()))(x.repeat(3, 1, 1, 1))
    assert torch.allclose(z, manual.log_softmax(1).view(3, 8, -1).mean(0), atol=1e-6)
    y = digits_test[1][:8]
    a, b = (pgd(EOT(Defended(digits_cnn, RandomResizePad(0.8, seeded())), samples=3), x, y, eps=0.1,
                alpha=0.05, steps=2, generator=seeded(1)) for _ in range(2))
    assert torch.equal(a, b), "seeded transform and start: the same attack twice"


def test_eot_beats_single_draw(digits_cnn, digits_test):
    """Against a randomised defence, the gradient of the mean over draws beats one draw per step."""
    x, y = digits_test[0][:200], digits_test[1][:200]
    defended = Defended(digits_cnn, RandomResizePad(0.8, seeded()))
    eot = EOT(defended, samples=16)
    clean = expected_accuracy(defended, x, y)
    eps = 0.15
    res = {}
    for name, model in [("single", defended), ("eot", eot)]:
        res[name, "pgd"] = expected_accuracy(defended, pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10,
                                                           generator=seeded(1)), y)
        res[name, "fgsm"] = expected_accuracy(defended, fgsm(model, x, y, eps=eps), y)
    print(f"random resize-pad: clean {clean:.3f}, accuracy under attack {res}")
    assert clean > 0.75
    assert res["eot", "pgd"] < res["single", "pgd"] - 0.015
    assert res["eot", "fgsm"] < res["single", "fgsm"] - 0.04


@pytest.mark.parametrize("wrap", ["eot", "bpda"])
def test_wrappers_keep_hygiene(batch, wrap):
    x, y = batch
    inner = messy_model()
    model = (EOT(Defended(inner, RandomResizePad(0.8, seeded())), samples=4) if wrap == "eot"
             else BPDA(inner, partial(bit_depth, bits=3)))
    check_conventions(pgd, x, y, model=model, eps=0.2, alpha=0.05, steps=3, generator=seeded())
    assert inner.training, "the wrapped model is still in train mode"


def test_bad_arguments(digits_cnn):
    with pytest.raises(ValueError, match="bits"):
        bit_depth(torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="samples"):
        EOT(digits_cnn, samples=0)
    with pytest.raises(ValueError, match="min_scale"):
        RandomResizePad(0.0)
