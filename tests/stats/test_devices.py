"""Every public statistical measure on each device (`device` fixture): CLEVER, naive Monte Carlo
and multi-level splitting, the coverage criteria, the complexity measures. The result lies on
the input's device (save what a method returns on the CPU by contract, named per case), is
identical twice on the CPU and equals the CPU's on CUDA within each case's tolerance.

Concolic testing's coverage curve is a CPU float64 tensor by contract: its loop solves an LP in
scipy per step, and the tests it generates run (and stay) on the device.

CLEVER returns CPU float64 results by contract: its reverse-Weibull fit runs in scipy, once per
example after the sampling, which is what runs on the device.
"""

import functools

import pytest
import torch

from robustlab import data, models, stats
from robustlab.stats import coverage as C

from ..conftest import seeded
from ..devices import Case, check_case


@functools.cache
def _digits():
    x, y = data.digits("test")
    return x[:3].clone(), y[:3].clone()


def setup(device):
    x, y = _digits()
    torch.manual_seed(0)
    model = models.MLP((1, 8, 8), (16, 12), 10).eval()
    return model.to(device), x.to(device), y.to(device)


def _clever(device):
    model, x, _ = setup(device)
    return stats.clever(model, x, norm=2, radius=1.0, n_batches=10, batch_size=16,
                        generator=seeded())


def _monte_carlo(device):
    model, x, y = setup(device)
    return stats.monte_carlo(model, x, y, eps=0.3, n=512, batch_size=256, generator=seeded())


def _splitting(device):
    model, x, y = setup(device)
    return stats.splitting(model, x[:1], y[:1], eps=0.3, n_particles=64, mh_steps=2,
                           max_levels=4, generator=seeded())


def _coverage(device):
    model, x, _ = setup(device)
    train = data.digits("train")[0][:20].to(device)
    prof = C.profile(model, train)
    return (stats.neuron_coverage(model, x, threshold=0.1), prof,
            C.coverage(model, x, "k_multisection", train=train, k=4),
            C.coverage(model, x, "sign_sign"))


def _fuzz(device):
    model, x, y = setup(device)
    return stats.fuzz(model, x, y, budget=48, eps=0.3, batch_size=16, generator=seeded())


def _random_testing(device):
    model, x, _ = setup(device)
    return stats.random_testing(model, x, budget=48, eps=5, norm="l0", batch_size=16,
                                generator=seeded())


def _concolic(device):
    model, x, _ = setup(device)
    return stats.concolic(model, x, budget=6, eps=0.3)


def _measures(device):
    model, x, y = setup(device)
    torch.manual_seed(1)
    initial = models.MLP((1, 8, 8), (16, 12), 10).to(device)
    return stats.measures(model, initial, train=(x, y), test=(x, y))


def _rank_networks(device):
    # two tiny networks trained one epoch where the data is; every result a number on the host
    _, x, y = setup(device)
    builders = {"MLP 4": lambda: models.MLP((1, 8, 8), (4,), 10),
                "MLP 8": lambda: models.MLP((1, 8, 8), (8,), 10)}
    return stats.rank_networks(builders, (x, y), (x, y), epochs=1, batch_size=2,
                               keys=["PFN", "NoP", "PB"])


CASES = {
    "Clever": Case(_clever, host=True),
    "clever": Case(_clever, host=True),
    "MonteCarlo": Case(_monte_carlo, atol=0.0),
    "monte_carlo": Case(_monte_carlo, atol=0.0),
    "Splitting": Case(_splitting, atol=1e-4, frac=0.1),
    "splitting": Case(_splitting, atol=1e-4, frac=0.1),
    "Coverage": Case(_coverage, atol=1e-5),
    "Profile": Case(_coverage, atol=1e-5),
    "neuron_coverage": Case(_coverage, atol=1e-5),
    "measures": Case(_measures, atol=1e-6),
    "Testing": Case(_fuzz, atol=1e-6),
    "fuzz": Case(_fuzz, atol=1e-6),
    "random_testing": Case(_random_testing, atol=1e-6),
    # the LP runs in scipy on the CPU, so concolic's curve is host-side; its tests run on the device
    "concolic": Case(_concolic, atol=1e-5, host=(".curve",)),
    "rank_networks": Case(_rank_networks, atol=1e-4, frac=0.2, host=True),
    "Ranking": Case(_rank_networks, atol=1e-4, frac=0.2, host=True),
}
NOT_ON_A_DEVICE = {
    "kendall": "a rank correlation of two lists of numbers, one per network: no tensor",
    "kendall_table": "a table of kendall results: no tensor",
    "KendallResult": "kendall's result: numbers only",
    "KendallTable": "kendall_table's result: numbers only",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stats_on_device(name, device):
    check_case(CASES[name], device)
