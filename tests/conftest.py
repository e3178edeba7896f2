import pytest
import torch
from threadpoolctl import threadpool_limits

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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The models here are tiny: intra-op threads gain nothing and, when the two cores of a CI
    machine are busy, their OpenMP spin-waits cost 10x or more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):  # scipy's L-BFGS-B, HiGHS: tiny vectors too
        yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
