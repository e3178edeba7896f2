"""branch_and_bound: the same answer as milp at the decision boundary, verifying instances CROWN
alone cannot (with and without LP bounds), re-checked counterexamples, nothing verified broken
by PGD, the branch budget, bad input and hygiene."""

import functools

import pytest
import torch

from robustlab.verify import branch_and_bound, crown, margin_spec, milp

from .conftest import boundary_suite
from .test_reluplex import assert_agrees_with_milp


@functools.cache
def verdicts(norm: str) -> tuple:
    """(instance, branch_and_bound's verdict, milp's verdict, CROWN proves it) on the suite."""
    suite = boundary_suite(norm) if norm == "linf" else boundary_suite(norm)[::3]
    out = []
    for inst in suite:
        _, model, x, y, eps = inst
        with torch.no_grad():
            k = model(x).shape[1]
        by_crown = crown(model, x, eps=eps, norm=norm, C=margin_spec(y, k)).lower.min() > 0
        out.append((inst, branch_and_bound(model, x, y, eps=eps, norm=norm)[0],
                    milp(model, x, y, eps=eps, norm=norm)[0], bool(by_crown)))
    return tuple(out)


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_agrees_with_milp_at_the_boundary(norm):
    assert_agrees_with_milp([(instance, v, ref) for instance, v, ref, _ in verdicts(norm)], norm)


def test_verifies_what_crown_alone_cannot():
    """With LP bounds every instance CROWN cannot prove but milp verifies is verified; with
    CROWN's bounds alone (exact LPs only at the leaves) the small budget may run out, but never
    into a wrong answer, and splitting still proves some of them."""
    hard = [inst for inst, _, ref, by_crown in verdicts("linf") if ref.verified and not by_crown]
    assert len(hard) >= 4
    assert all(v.verified for _, v, ref, by_crown in verdicts("linf") if ref.verified and not by_crown)
    proved = 0
    for name, model, x, y, eps in hard:
        (v,) = branch_and_bound(model, x, y, eps=eps, lp=False, max_branches=150)
        assert v.status in ("verified", "unknown"), (name, v)
        if v.status == "unknown":
            assert "max_branches=150" in v.reason
        proved += v.verified
    assert proved >= 2


def test_branch_budget_gives_unknown_with_a_reason():
    hard = [inst for inst, v, _, _ in verdicts("linf") if v.verified and "branches" in v.reason
            and int(v.reason.split("(")[1].split(" branches")[0]) > 2]
    _, model, x, y, eps = hard[0]
    (v,) = branch_and_bound(model, x, y, eps=eps, max_branches=1, batch=1)
    assert v.status == "unknown" and "max_branches=1" in v.reason


def test_bad_input_names_the_argument():
    _, model, x, y, _ = boundary_suite()[0]
    for kw, name in [({"eps": -0.1}, "eps"), ({"eps": 0.1, "norm": "l2"}, "norm"),
                     ({"eps": 0.1, "max_branches": 0}, "max_branches"), ({"eps": 0.1, "batch": 0}, "batch"),
                     ({"eps": 0.1, "time_limit": -1.0}, "time_limit")]:
        with pytest.raises(ValueError, match=name):
            branch_and_bound(model, x, y, **kw)
    with pytest.raises(TypeError, match="lp"):
        branch_and_bound(model, x, y, eps=0.1, lp="yes")
