"""`stats.rank_networks`, Table 2 on networks trained here: each row is what training the
network by hand with the same seed and measuring it gives, the Kendall table is
`stats.kendall_table` of those rows, and the caller's random state is left alone."""

import copy

import pytest
import torch

from robustlab import data, models, stats, train

BUILDERS = {"MLP 8": lambda: models.MLP(hidden=(8,)), "MLP 16-8": lambda: models.MLP(hidden=(16, 8)),
            "CNN 2": lambda: models.SmallCNN(width=2, hidden=8)}


@pytest.fixture(scope="module")
def small():
    x, y = data.digits("train")
    xt, yt = data.digits("test")
    return (x[:60], y[:60]), (xt[:40], yt[:40])


@pytest.fixture(scope="module")
def ranked(small):
    return stats.rank_networks(BUILDERS, *small, epochs=2, seed=3)


def test_each_row_is_the_network_trained_and_measured_by_hand(small, ranked):
    tr, te = small
    for name, build in BUILDERS.items():
        torch.manual_seed(3)
        net = build()
        init = copy.deepcopy(net.state_dict())
        train.fit(net, tr, epochs=2, lr=2e-3, batch_size=32, seed=3, progress=False, device="cpu")
        want = stats.measures(net.eval(), init, train=tr, test=te)
        want["test accuracy"] = (train.predict(net, te[0]).argmax(1) == te[1]).double().mean().item()
        assert ranked.values[name] == pytest.approx(want, rel=1e-6), name


def test_kendall_table_is_of_the_rows(ranked):
    keys = list(stats.ranking.TABLE2)
    assert ranked.keys == tuple(keys) and list(ranked.kendall.results) == keys
    again = stats.kendall_table({k: [m[k] for m in ranked.values.values()] for k in keys}, ranked.gap)
    for k in keys:
        assert ranked.kendall[k] == again[k]
        assert ranked.kendall[k].concordant + ranked.kendall[k].discordant + ranked.kendall[k].ties == 3
    rows = ranked.table().splitlines()
    assert len(rows) == 2 + len(BUILDERS) and rows[0].startswith("| network | PFN")


def test_leaves_the_callers_random_state(small):
    torch.manual_seed(11)
    before = torch.get_rng_state()
    stats.rank_networks(dict(list(BUILDERS.items())[:2]), *small, epochs=1, keys=["NoP", "PFN"])
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("builders, kwargs, error, match", [
    ({"one": BUILDERS["MLP 8"]}, {}, ValueError, "at least 2"),
    ([BUILDERS["MLP 8"], BUILDERS["CNN 2"]], {}, ValueError, "builders must map"),
    ({"a": BUILDERS["MLP 8"], "b": lambda: "not a net"}, {}, TypeError, r"builders\['b'\]"),
    (BUILDERS, dict(epochs=0), ValueError, "epochs must be > 0"),
    (BUILDERS, dict(keys=["PFN", "VC"]), ValueError, "keys must name"),
    (BUILDERS, dict(lr=-1.0), ValueError, "lr must be > 0"),
])
def test_bad_input_is_named(small, builders, kwargs, error, match):
    with pytest.raises(error, match=match):
        stats.rank_networks(builders, *small, **{"epochs": 1, **kwargs})


def test_train_and_test_must_be_pairs(small):
    with pytest.raises(TypeError, match="test must be an"):
        stats.rank_networks(BUILDERS, small[0], small[1][0], epochs=1)
