"""reluplex: the same answer as milp on instances at the decision boundary (L-inf and L1),
re-checked counterexamples, nothing verified broken by PGD, time limit, bad input, hygiene."""

import functools

import pytest
import torch

from robustlab.attacks import pgd
from robustlab.verify import milp, reluplex

from .conftest import boundary_suite
from .test_milp import assert_counterexample


@functools.cache
def verdicts(norm: str) -> tuple:
    """reluplex's and milp's verdicts on the boundary suite (every third instance for L1)."""
    suite = boundary_suite(norm) if norm == "linf" else boundary_suite(norm)[::3]
    return tuple((inst, reluplex(*inst[1:4], eps=inst[4], norm=norm)[0],
                  milp(*inst[1:4], eps=inst[4], norm=norm)[0]) for inst in suite)


def pgd_breaks(model, x, y, eps, norm):
    for r in range(2):
        adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=20, norm=norm, loss="margin", l1_top=0.25,
                  generator=torch.Generator().manual_seed(r))
        with torch.no_grad():
            if (model(adv).argmax(1) != y).any():
                return True
    return False


def assert_agrees_with_milp(rows, norm: str) -> None:
    """rows: (instance, verdict, milp's verdict). The same status everywhere, both statuses met,
    every counterexample checked, nothing verified that PGD breaks."""
    seen = set()
    for (name, model, x, y, eps), v, ref in rows:
        assert v.status == ref.status, (name, eps, v, ref)
        assert v.seconds > 0 and v.reason
        seen.add(v.status)
        if v.status == "falsified":
            assert_counterexample(model, x[0], y.item(), v, eps, norm)
        elif norm == "linf":
            assert not pgd_breaks(model, x, y, eps, norm), f"{name}: verified at eps={eps} but PGD breaks it"
    assert seen == {"verified", "falsified"}


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_agrees_with_milp_at_the_boundary(norm):
    assert_agrees_with_milp(verdicts(norm), norm)


def test_splits_are_needed_and_counted():
    """Some instance needs case splits (more than one case), and says how many it solved."""
    cases = [v.reason for _, v, _ in verdicts("linf")]
    counts = [int(r.split("(")[1].split(" cases")[0]) for r in cases if " cases" in r]
    assert max(counts) > 1


def test_time_limit_gives_unknown_with_a_reason():
    hard = [inst for inst, v, _ in verdicts("linf") if " cases" in v.reason]
    _, model, x, y, eps = hard[0]
    (v,) = reluplex(model, x, y, eps=eps, time_limit=1e-4)
    assert v.status == "unknown" and "time limit" in v.reason


def test_misclassified_input_is_its_own_counterexample():
    _, model, x, y, _ = boundary_suite()[0]
    (v,) = reluplex(model, x, (y + 1) % 3, eps=0.0)
    assert v.status == "falsified" and torch.equal(v.counterexample, x[0])


def test_bad_input_names_the_argument():
    _, model, x, y, _ = boundary_suite()[0]
    for kw, name in [({"eps": -0.1}, "eps"), ({"eps": 0.1, "norm": "l2"}, "norm"),
                     ({"eps": 0.1, "bounds": "lp"}, "bounds"), ({"eps": 0.1, "time_limit": 0}, "time_limit")]:
        with pytest.raises(ValueError, match=name):
            reluplex(model, x, y, **kw)
