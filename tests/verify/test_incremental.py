"""reverify: after fine-tuning, the same verdicts as the complete verifier from scratch, with the
previous verdicts reused where a sound check confirms them; changed verdicts counted; a stale
counterexample goes back to the solver; bad input and hygiene."""

import copy
import functools

import pytest
import torch

from robustlab import data, models
from robustlab.norms import flat_norm
from robustlab.train import fit
from robustlab.verify import Verdict, milp, reverify
from robustlab.verify.incremental import HOW

from ..conftest import leaves_as_found


@functools.cache
def _models() -> tuple:
    """A 12-unit digits MLP and a copy fine-tuned for one epoch on 300 training digits."""
    torch.manual_seed(0)
    x, y = data.digits("train")
    old = models.MLP((1, 8, 8), (12,), 10)
    fit(old, (x[:600], y[:600]), epochs=4, lr=1e-2, progress=False, device="cpu")
    new = copy.deepcopy(old)
    fit(new, (x[600:900], y[600:900]), epochs=1, lr=3e-3, progress=False, device="cpu")
    return old.eval(), new.eval()


def points():
    x, y = data.digits("test")
    return x[:8], y[:8]


@pytest.mark.parametrize("eps", [0.03, 0.05, 0.08])
def test_same_verdicts_as_from_scratch_after_fine_tuning(eps):
    old, new = _models()
    x, y = points()
    before = milp(old, x, y, eps=eps)
    scratch = milp(new, x, y, eps=eps)
    r = reverify(new, x, y, eps=eps, previous=before)
    assert [v.status for v in r.verdicts] == [v.status for v in scratch]
    assert "unknown" not in r.before and set(r.how) <= set(HOW)
    assert r.changed == sum(a.status != b.status for a, b in zip(before, scratch))
    assert r.reused == sum(h != "solver" for h in r.how) and r.seconds > 0
    for v, h, b in zip(r.verdicts, r.how, before):
        if h == "counterexample":
            assert b.status == "falsified"
        if h == "crown":
            assert b.status == "verified" and v.verified
        assert v.seconds >= 0
    for v, xi, yi in zip(r.verdicts, x, y):
        if v.status == "falsified":
            assert v.counterexample.min() >= 0 and v.counterexample.max() <= 1
            assert flat_norm((v.counterexample - xi)[None], "linf").item() <= eps + 1e-7
            with torch.no_grad():
                assert new(v.counterexample[None]).argmax(1).item() != yi
    # measured on the CPU: statuses changed 2 / 2 / 0 times, reused 6 / 6 / 7 of 8
    assert r.reused >= 5
    assert "| example | before | now | how | seconds |" in r.table()


def test_stale_counterexample_and_missing_previous_go_to_the_solver():
    _, new = _models()
    x, y = points()
    fake = Verdict("falsified", x[0].clone(), reason="a point the model classifies right")
    r = reverify(new, x[:2], y[:2], eps=0.01, previous=[fake, None])
    assert r.how == ["solver", "solver"] and r.reused == 0
    assert [v.status for v in r.verdicts] == [v.status for v in milp(new, x[:2], y[:2], eps=0.01)]
    far = Verdict("falsified", (x[1] + 0.5).clamp(0, 1), reason="outside the ball")
    assert reverify(new, x[1:2], y[1:2], eps=0.01, previous=[far]).how == ["solver"]


def test_bad_input_and_hygiene():
    _, new = _models()
    x, y = points()
    previous = milp(new, x[:2], y[:2], eps=0.05)
    leaves_as_found(lambda: reverify(new, x[:2], y[:2], eps=0.05, previous=previous), new, x, y)
    with pytest.raises(ValueError, match="previous must hold one Verdict"):
        reverify(new, x[:2], y[:2], eps=0.05, previous=previous[:1])
    with pytest.raises(ValueError, match="previous must hold one Verdict"):
        reverify(new, x[:2], y[:2], eps=0.05, previous=["verified", None])
    with pytest.raises(ValueError, match="eps"):
        reverify(new, x[:2], y[:2], eps=-1.0, previous=previous)
    with pytest.raises(ValueError, match="l2"):
        reverify(new, x[:2], y[:2], eps=0.05, norm="l2", previous=previous)
