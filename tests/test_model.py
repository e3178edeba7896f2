"""robustlab/_model.py: every forward pass the library makes, and the inputs it accepts."""

import pytest
import torch

from robustlab import attacks as A


# issue 7: gradient attacks failed with "element 0 of tensors does not require grad"
def test_inference_mode_says_why(digits_cnn, eight):
    x, y = eight
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        A.pgd(digits_cnn, x, y, eps=0.1, alpha=0.01, steps=1)


# issue 7: an inference tensor made outside the block must still be attackable
def test_an_inference_tensor_can_be_attacked_outside_inference_mode(digits_cnn, eight):
    x, y = eight
    with torch.inference_mode():
        x_inf = x.clone()
    assert x_inf.is_inference()
    x_adv = A.fgsm(digits_cnn, x_inf, y, eps=0.1)
    assert torch.equal(x_adv, A.fgsm(digits_cnn, x, y, eps=0.1))
