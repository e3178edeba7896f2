"""Bounds, Verdict and the margin specification."""

import pytest
import torch

from robustlab.verify import Bounds, Verdict, margin_spec


def test_bounds_unpack_width_contains_and_refuse_crossing():
    lo, up = torch.zeros(2, 3), torch.ones(2, 3)
    b = Bounds(lo, up)
    lower, upper = b
    assert lower is lo and upper is up
    assert torch.equal(b.width, torch.ones(2, 3))
    z = torch.tensor([[0.5, 0.5, 0.5], [0.5, 1.5, 0.5]])
    assert b.contains(z).tolist() == [True, False]
    Bounds(up + 1e-7, up)  # rounding where the two meet is tolerated
    with pytest.raises(ValueError, match="lower exceeds upper"):
        Bounds(up, lo)
    with pytest.raises(ValueError, match="one shape"):
        Bounds(lo, up[:1])


def test_verdict_states():
    assert Verdict("verified", seconds=0.1).verified
    v = Verdict("falsified", counterexample=torch.zeros(1, 8, 8))
    assert not v.verified and v.counterexample.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="status must be one of"):
        Verdict("proved")
    with pytest.raises(ValueError, match="counterexample"):
        Verdict("falsified")
    with pytest.raises(ValueError, match="counterexample"):
        Verdict("verified", counterexample=torch.zeros(1))
    with pytest.raises(ValueError, match="reason"):
        Verdict("unknown")
    assert Verdict("unknown", reason="time limit").reason == "time limit"


def test_margin_spec_rows_are_y_minus_each_other_class():
    y = torch.tensor([0, 2])
    C = margin_spec(y, 3)
    assert C.shape == (2, 2, 3)
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    margins = torch.einsum("nsk,nk->ns", C, z)
    assert margins.tolist() == [[2.0, 3.0], [5.0, 4.0]]


def test_margin_spec_makes_no_host_sync():
    """Built by index arithmetic: a boolean-mask index made the host wait for its size, once
    per call (IBP and CROWN-IBP training build it every batch)."""
    from tests.syncs import count

    y = torch.tensor([0, 3, 9, 3])
    syncs = count(lambda: margin_spec(y, 10))
    assert syncs.total == 0, syncs.calls
    C = margin_spec(y, 10)
    for i, label in enumerate(y.tolist()):
        others = [j for j in range(10) if j != label]
        assert torch.equal(C[i, :, label], torch.ones(9))
        assert torch.equal(C[i].argmin(1), torch.tensor(others))
