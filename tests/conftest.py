import pytest
import torch

from robustlab import data, models


@pytest.fixture(scope="session")
def digits_test():
    return data.digits("test")


@pytest.fixture(scope="session")
def digits_cnn():
    return models.pretrained("digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    return models.pretrained("digits-mlp")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
