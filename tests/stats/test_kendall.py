"""Kendall's tau: the tutorial's Table 2 recomputed from its printed numbers, ties, bad input."""

import math

import pytest
import scipy.stats
import torch

from robustlab.stats import kendall, kendall_table

# The tutorial's Table 2, "Complexity measures for CIFAR-10" (shared/seed text), from Jin et al.,
# "How does weight correlation affect the generalisation ability of deep neural networks?"
# (NeurIPS 2020): typed in as printed, networks FCN1, FCN2, VGG11, VGG16, VGG19, ResNet18,
# ResNet34, ResNet50, DenseNet121.
TABLE2 = {
    "PFN": [8.1e7, 3.3e7, 8.5e10, 5.1e15, 1.1e19, 2.5e22, 9.9e34, 1.4e76, 5.9e176],
    "PSN": [1.4e4, 8.5e3, 1.4e5, 1.3e7, 2.9e8, 1.1e12, 4.9e16, 7.5e46, 1.4e151],
    "NoP": [3.7e7, 4.2e7, 9.7e6, 1.5e7, 2.1e7, 1.1e7, 2.1e7, 2.3e7, 6.8e6],
    "SoSP": [1.6e9, 1.61e9, 2.4e8, 5.2e8, 8.1e8, 8.4e8, 3.1e9, 6.1e9, 1.5e10],
    "PB": [1.1e4, 8.8e3, 2.0e3, 2.6e3, 3.3e3, 4.7e3, 1.0e4, 1.6e7, 1.0e9],
    "PBC": [1.14e5, 1.24e5, 3.41e4, 3.73e4, 4.26e4, 1.34e5, 1.30e5, 1.62e7, 1.04e9],
    "WC": [0.297, 0.296, 0.273, 0.275, 0.274, 0.732, 0.733, 0.278, 0.357],
}
GE = [2.056, 2.354, 0.929, 0.553, 0.678, 2.681, 2.552, 2.807, 1.437]
# The printed rows: concordant, discordant, tau (printed to two decimals, cut rather than
# rounded: 6/36 = 0.1667 prints as 0.16).
PRINTED = {"PFN": (21, 15, 0.16), "PSN": (21, 15, 0.16), "NoP": (22, 14, 0.22),
           "SoSP": (26, 10, 0.44), "PB": (24, 12, 0.33), "PBC": (29, 7, 0.61),
           "WC": (24, 12, 0.33)}


@pytest.mark.parametrize("name", ["PFN", "PSN", "SoSP", "PB", "PBC", "WC"])
def test_reproduces_table2(name):
    r = kendall(TABLE2[name], GE, name=name)
    concordant, discordant, tau = PRINTED[name]
    assert (r.concordant, r.discordant, r.ties) == (concordant, discordant, 0)
    assert r.tau == pytest.approx((concordant - discordant) / 36)
    assert math.floor(r.tau * 100) / 100 == pytest.approx(tau)


def test_nop_tie_in_the_printed_numbers():
    """VGG19 and ResNet34 both print as 2.1e7 parameters: one tied pair, which the tutorial,
    counting from the unrounded 20,548,289 and 21,276,865, scores as concordant (22/14)."""
    r = kendall(TABLE2["NoP"], GE)
    assert (r.concordant, r.discordant, r.ties, r.ties_measure, r.ties_gap) == (21, 14, 1, 1, 0)
    assert r.tau == pytest.approx(7 / math.sqrt(35 * 36))
    assert kendall(TABLE2["NoP"], GE, variant="a").tau == pytest.approx(7 / 36)
    unrounded = list(TABLE2["NoP"])
    unrounded[4], unrounded[6] = 20_548_289, 21_276_865
    assert (kendall(unrounded, GE).concordant, kendall(unrounded, GE).discordant) == (22, 14)


def test_tau_b_matches_scipy_with_ties():
    m, g = [1, 2, 2, 3, 5, 5, 4], [0.1, 0.3, 0.2, 0.2, 0.9, 0.4, 0.4]
    assert kendall(m, g).tau == pytest.approx(scipy.stats.kendalltau(m, g).statistic)


def test_hand_counts_and_extremes():
    # pairs of (1, 3, 2) vs (1, 2, 3): (1,3)(1,2) concordant twice, (3,2) vs (2,3) discordant
    r = kendall(torch.tensor([1.0, 3.0, 2.0]), [1, 2, 3])
    assert (r.concordant, r.discordant, r.ties, r.pairs) == (2, 1, 0, 3)
    assert r.tau == pytest.approx(1 / 3)
    assert kendall([1, 2, 3, 4], [4, 3, 2, 1]).tau == -1.0
    assert kendall([1, 1, 1], [1, 2, 3]).tau == 0.0  # every pair tied: no evidence either way


def test_table_layout():
    t = kendall_table({k: TABLE2[k] for k in ("PFN", "PBC")}, GE)
    assert t["PBC"].concordant == 29
    text = t.table()
    assert "| Concordant pairs | 21 | 29 |" in text and "| Kendall's tau | 0.17 | 0.61 |" in text
    assert "tau_b" in str(kendall([1, 2], [1, 2]))


@pytest.mark.parametrize("args, kw, match", [
    (([1, 2, 3], [1, 2]), {}, "one value per network"),
    (([1], [1]), {}, "at least 2"),
    (([1, float("nan")], [1, 2]), {}, "measure holds NaN"),
    (([1, 2], [[1, 2]]), {}, "gap must be one-dimensional"),
    (([1, 2], [1, 2]), {"variant": "c"}, "variant must be one of"),
])
def test_bad_input(args, kw, match):
    with pytest.raises(ValueError, match=match):
        kendall(*args, **kw)


def test_bad_types():
    with pytest.raises(TypeError, match="measure must be a sequence of numbers"):
        kendall("abc", [1, 2, 3])
    with pytest.raises(ValueError, match="measures must be a non-empty mapping"):
        kendall_table({}, [1, 2])
