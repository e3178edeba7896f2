import pytest
import torch
from torch import nn

from robustlab.attacks import Oracle, QueryBudgetError, QueryLedger, hop_skip_jump, square, zoo
from robustlab.attacks.oracle import CHECKS, segments

from ..conftest import CountingModel, assert_unchanged, messy_model, snapshot
from ..conftest import seeded as gen


def test_oracle_budget_and_outputs(digits_cnn, digits_test):
    x, y = digits_test
    x = x[:4]
    model = CountingModel(digits_cnn)
    scores = Oracle(model, budget=2)
    p = scores(x)
    assert p.shape == (4, 10) and torch.allclose(p.sum(1), torch.ones(4))
    scores(x[:2], torch.tensor([0, 3]))
    assert scores.queries.tolist() == [2, 1, 1, 2] and scores.remaining(4).tolist() == [0, 1, 1, 0]
    with pytest.raises(QueryBudgetError, match=r"budget of 2 .* example\(s\) \[0\]"):
        scores(x[:2])
    assert model.images == 6, "a refused query must not reach the model"
    scores.reset()
    scores(x[:2])
    label = Oracle(model, output="label")
    out = label(x)
    assert out.dtype == torch.long and out.shape == (4,)
    assert torch.equal(out, digits_cnn(x).argmax(1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label(x * 2)


def test_oracle_hygiene():
    model = messy_model()
    before = snapshot(model)
    out = Oracle(model)(torch.rand(5, 1, 8, 8))
    assert not out.requires_grad
    assert_unchanged(model, before)


def test_hard_label_oracle_is_enough_for_hsj_but_not_for_score_attacks(digits_cnn, batch):
    x, y = batch
    label = Oracle(digits_cnn, output="label", budget=50)
    adv, q = hop_skip_jump(label, x[:3], y[:3], max_queries=50, generator=gen())
    assert (q <= 50).all()
    for attack, kw in ((square, dict(eps=0.1)), (zoo, {})):
        with pytest.raises(ValueError, match="scores"):
            attack(label, x, y, **kw)


def test_bad_oracle_arguments(digits_cnn, batch):
    x, y = batch
    with pytest.raises(ValueError, match="budget"):
        Oracle(digits_cnn, budget=0)
    with pytest.raises(ValueError, match="output"):
        Oracle(digits_cnn, output="logits")
    with pytest.raises(TypeError, match="model"):
        Oracle("not a model")
    with pytest.raises(ValueError, match="y holds label"):
        square(digits_cnn, x, torch.full_like(y, 12), eps=0.1, max_queries=5)


# issue 7: a negative idx gave a raw bincount error, a float idx was silently truncated
@pytest.mark.parametrize("idx,error,match", [
    (torch.tensor([0, -1]), ValueError, "negative"),
    (torch.tensor([0.0, 1.7]), TypeError, "integer"),
])
def test_oracle_idx_is_checked(idx, error, match, digits_cnn, eight):
    x, _ = eight
    with pytest.raises(error, match=match):
        Oracle(digits_cnn)(x[:2], idx)


# issue 7: device, dtype and num_classes were set as a side effect of the first call
def test_oracle_states_what_it_knows_up_front(digits_cnn):
    oracle = Oracle(digits_cnn)
    assert (oracle.num_classes, oracle.device, oracle.dtype) == (10, torch.device("cpu"), torch.float32)
    assert len(oracle.queries) == 0
    with pytest.raises(ValueError, match="num_classes"):
        Oracle(nn.Flatten())


# issue 15: the counter was a dense tensor up to the largest index, so index 10**8 took 800 MB
# (and 10**15 fails to allocate); it now holds one count per example actually seen
def test_oracle_counts_only_the_examples_it_sees(digits_cnn, eight):
    x, _ = eight
    oracle = Oracle(digits_cnn, budget=2)
    far = torch.tensor([10**15, 10**8])
    oracle(x[:2], far)
    oracle(x[:1], far[1:])
    assert oracle.seen.tolist() == [10**8, 10**15]
    assert oracle.count(torch.tensor([10**15, 10**8, 7])).tolist() == [1, 2, 0]
    with pytest.raises(QueryBudgetError, match=r"example\(s\) \[100000000\]"):
        oracle(x[:1], far[1:])
    assert oracle.count(far).tolist() == [1, 2], "a refused call charges nothing"


# issue 16: an attack's queries synced with the host at every call (check_images, idx.cpu(),
# counts on the CPU); they now go through the ledger, counted on the device
def test_ledger_charges_live_rows_on_the_device_and_the_oracle_once(digits_cnn, eight):
    x, y = eight
    x, y = x[:4], y[:4]
    model = CountingModel(digits_cnn)
    oracle = Oracle(model, budget=10)
    oracle(x[:1])  # example 0 has spent one query before the attack
    ledger = QueryLedger(oracle, x, y, max_queries=6)
    assert ledger.left().tolist() == [6, 6, 6, 6], "the call's cap, within the Oracle's budget"
    rows = torch.arange(4)
    out = ledger.ask(x.repeat_interleave(2, 0), rows, torch.tensor([True, False, True, False]))
    assert out.shape == (8, 10) and torch.allclose(out[::2], digits_cnn(x).softmax(1))
    assert ledger.left().tolist() == [4, 6, 4, 6] and oracle.queries.tolist() == [1, 0, 0, 0]
    assert oracle.discarded == 4, "the rows nobody paid for are counted apart"
    _, q = ledger.result(x)
    assert q.tolist() == [2, 0, 2, 0] and oracle.queries.tolist() == [3, 0, 2, 0]
    assert model.images == 1 + 8


def test_segments_cut_any_loop_into_the_same_number_of_ranges():
    for n in (0, 1, 5, 300, 10_000):
        parts = segments(n)
        assert len(parts) == len(CHECKS) + 1
        assert [i for p in parts for i in p] == list(range(n))
    # at most about twice the iterations needed: a loop done after i < n stops by 2i + 1
    parts = segments(10_000)
    ends = [p.stop for p in parts]
    assert all(b <= 2 * a + 1 for a, b in zip(ends, ends[1:]) if a)
