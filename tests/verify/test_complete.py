"""What the complete verifiers (milp, reluplex, branch_and_bound) share: their inputs are
checked the same way (verify/_complete.py) and they leave model and inputs as found."""

import pytest
import torch
from torch import nn

from robustlab.verify import branch_and_bound, milp, reluplex

from ..conftest import leaves_as_found, messy_model
from .conftest import boundary_suite

COMPLETE = [milp, reluplex, branch_and_bound]


@pytest.mark.parametrize("verifier", COMPLETE, ids=lambda f: f.__name__)
def test_labels_and_layers_are_checked(verifier):
    _, model, x, y, _ = boundary_suite()[0]
    with pytest.raises(ValueError, match="y"):
        verifier(model, x, torch.tensor([0, 1]), eps=0.1)
    with pytest.raises(ValueError, match="y"):
        verifier(model, x, torch.tensor([5]), eps=0.1)
    with pytest.raises(ValueError, match="Tanh"):
        verifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh()), x, y, eps=0.1)


@pytest.mark.parametrize("verifier", [reluplex, branch_and_bound], ids=lambda f: f.__name__)
def test_case_splitting_verifiers_refuse_max_pooling(verifier):
    pool = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="MaxPool2d"):
        verifier(pool, torch.rand(1, 1, 5, 5), torch.tensor([0]), eps=0.1)


@pytest.mark.parametrize("verifier", COMPLETE, ids=lambda f: f.__name__)
def test_leaves_model_and_inputs_as_found(verifier, digits_test):
    model = messy_model()
    x, y = digits_test[0][:2].clone(), digits_test[1][:2].clone()
    verdicts = leaves_as_found(lambda: verifier(model, x, y, eps=0.01), model, x, y)
    assert isinstance(verdicts, list) and len(verdicts) == 2
    assert all(v.status in ("verified", "falsified") for v in verdicts)
