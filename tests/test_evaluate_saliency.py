"""Saliency maps and their two measures: the gradient is the true-class logit's, alignment is a
correlation, deletion and insertion curves behave as Petsiuk et al. define them; and the
adversarially trained CNN's saliency lines up with the strokes better than the standard CNN's
(Tsipras et al. 2019, section 5)."""

import pytest
import torch
from torch import nn

from robustlab import data, models
from robustlab.evaluate import deletion_insertion, input_saliency, saliency_alignment

from .conftest import assert_unchanged, messy_model, seeded, snapshot


def test_saliency_of_a_linear_model_is_its_weight_row():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = data.digits("test")
    x, y = x[:5], y[:5]
    s = input_saliency(model, x, y)
    assert torch.allclose(s, model[1].weight[y].reshape(5, 1, 8, 8))


def test_alignment_is_a_correlation():
    x, _ = data.digits("test")
    x = x[:6]
    assert torch.allclose(saliency_alignment(x, x), torch.ones(6), atol=1e-6)
    assert torch.allclose(saliency_alignment(3 * x + 0.0, x), torch.ones(6), atol=1e-6)
    flat = saliency_alignment(torch.ones_like(x), x)
    assert torch.equal(flat, torch.zeros(6)), "a constant map has no correlation"
    noise = torch.randn(x.shape, generator=seeded(0))
    assert saliency_alignment(noise, x).abs().mean() < 0.3


def test_deletion_and_insertion_curves():
    model = models.pretrained("digits-cnn")
    x, y = data.digits("test")
    x, y = x[:60], y[:60]
    good = deletion_insertion(model, x, y, input_saliency(model, x, y) * x, steps=8)
    rand = deletion_insertion(model, x, y, torch.rand(x.shape, generator=seeded(1)), steps=8)
    assert good.fractions[0] == 0 and good.fractions[-1] == 1 and len(good.deletion) == 9
    # at fraction 0 deletion is the clean image, insertion the blank one; at 1 the other way round
    assert torch.allclose(good.deletion[0], good.insertion[-1])
    assert torch.allclose(good.deletion[-1], good.insertion[0])
    assert good.deletion_auc < rand.deletion_auc and good.insertion_auc > rand.insertion_auc
    assert "deletion" in good.table()


def test_robust_model_saliency_follows_the_strokes():
    x, y = data.digits("test")
    x, y = x[:120], y[:120]
    align = {name: saliency_alignment(input_saliency(models.pretrained(name), x, y), x).mean().item()
             for name in ("digits-cnn", "digits-cnn-pgd")}
    assert align["digits-cnn-pgd"] > align["digits-cnn"] + 0.1, align


def test_model_left_as_found_and_bad_input():
    model = messy_model()
    before = snapshot(model)
    x, y = data.digits("test")
    x, y = x[:4], y[:4]
    s = input_saliency(model, x, y)
    deletion_insertion(model, x, y, s, steps=2)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="saliency"):
        saliency_alignment(s[:, :, :4], x)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, x, y, s, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        deletion_insertion(model, x, y, s, baseline=2.0)
