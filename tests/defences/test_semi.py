"""Robust self-training (defences/semi.py): the pseudo-labels are the teacher's argmax and leave
it untouched; the algorithm equals its three steps written out with `fit` (under torch.equal);
with 100 labelled digits it beats PGD-AT on those 100 alone; bad input is named."""

import copy
import functools

import pytest
import torch

from robustlab import data, models
from robustlab.defences import pgd_at, pseudo_labels, robust_self_training
from robustlab.train import evaluate, fit

from ..conftest import assert_unchanged, seeded, snapshot
from ..syncs import count
from .conftest import pgd_accuracy

EPS = 0.1


@functools.cache
def _split(seed: int, n_labelled: int = 100):
    x, y = data.digits("train")
    perm = torch.randperm(len(x), generator=seeded(seed))
    lab, unl = perm[:n_labelled], perm[n_labelled:]
    return (x[lab], y[lab]), x[unl], y[unl]


def mlp(seed: int = 0):
    torch.manual_seed(seed)
    return models.MLP((1, 8, 8), (64,), 10)


def objective(seed: int):
    return pgd_at(eps=EPS, alpha=EPS / 2, steps=3, generator=seeded(seed))


def test_pseudo_labels_are_the_argmax_and_leave_the_model_as_found():
    model = mlp().train()
    x = data.digits("test")[0][:40]
    before = snapshot(model)
    labels = pseudo_labels(model, x, batch_size=7)
    assert_unchanged(model, before)
    with torch.no_grad():
        expect = model.eval()(x).argmax(1)
    assert labels.dtype == torch.long and torch.equal(labels, expect)


def test_pseudo_labels_read_nothing_back_per_batch():
    """The forward passes in batches stay on the device: as many syncs for 1 batch as for 8."""
    model, x = mlp(), data.digits("test")[0][:64]
    one = count(lambda: pseudo_labels(model, x, batch_size=64)).total
    eight = count(lambda: pseudo_labels(model, x, batch_size=8)).total
    assert eight == one


def test_self_training_is_its_three_steps():
    """Step 1 a standard teacher from the same initial weights, step 2 its argmax, step 3 `fit`
    on the union: the model equals the steps written out, bit for bit."""
    labelled, unlabelled, _ = _split(0, 60)
    unlabelled = unlabelled[:100]
    model = mlp(1)
    start = copy.deepcopy(model)
    run = robust_self_training(model, labelled, unlabelled, objective=objective(3), epochs=2,
                               teacher_epochs=3, lr=1e-2, batch_size=32, seed=5, device="cpu")
    teacher = copy.deepcopy(start)
    fit(teacher, labelled, epochs=3, lr=1e-2, batch_size=32, seed=5, device="cpu", progress=False)
    labels = pseudo_labels(teacher, unlabelled)
    by_hand = copy.deepcopy(start)
    fit(by_hand, (torch.cat([labelled[0], unlabelled]), torch.cat([labelled[1], labels])),
        epochs=2, objective=objective(3), lr=1e-2, batch_size=32, seed=5, device="cpu",
        progress=False)
    assert torch.equal(run.labels, labels)
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(run.history) == 2 and all(torch.equal(a, b) for a, b in
                                         zip(run.teacher.state_dict().values(),
                                             teacher.state_dict().values()))


def test_a_given_teacher_is_used_and_left_as_found():
    labelled, unlabelled, _ = _split(0, 60)
    teacher = mlp(2).train()
    before = snapshot(teacher)
    run = robust_self_training(mlp(), labelled, unlabelled[:50], objective=objective(0), epochs=1,
                               teacher=teacher, batch_size=32)
    assert_unchanged(teacher, before)
    assert run.teacher is teacher and torch.equal(run.labels, pseudo_labels(teacher, unlabelled[:50]))


def test_same_seed_same_model():
    labelled, unlabelled, _ = _split(1, 60)
    a, b = mlp(), mlp()
    for m in (a, b):
        robust_self_training(m, labelled, unlabelled[:80], objective=objective(4), epochs=1,
                             teacher_epochs=2, batch_size=32, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unlabelled_data_buys_robustness_with_100_labels(seed):
    """Carmon et al.'s claim at small scale: 100 labelled digits and ~1300 pseudo-labelled ones
    against PGD-AT on the 100 alone (measured: robust 0.70-0.75 against 0.56-0.61, clean 0.89-0.92
    against 0.85-0.90); the teacher's labels are mostly right (0.88-0.91)."""
    labelled, unlabelled, truth = _split(seed)
    x_test, y_test = data.digits("test")
    alone, rst = mlp(seed), mlp(seed)
    fit(alone, labelled, epochs=60, objective=objective(seed), lr=3e-3, batch_size=32, seed=seed,
        progress=False, device="cpu")
    run = robust_self_training(rst, labelled, unlabelled, objective=objective(seed), epochs=8,
                               teacher_epochs=60, lr=3e-3, batch_size=32, seed=seed, device="cpu")
    assert 0.8 < (run.labels == truth).double().mean().item() < 0.97
    gain = pgd_accuracy(rst, x_test, y_test, eps=EPS) - pgd_accuracy(alone, x_test, y_test, eps=EPS)
    assert gain > 0.05
    assert evaluate(rst, (x_test, y_test)) > evaluate(alone, (x_test, y_test)) - 0.02


def test_bad_input_is_named():
    labelled, unlabelled, _ = _split(0, 60)
    obj = objective(0)
    with pytest.raises(TypeError, match="labelled"):
        robust_self_training(mlp(), labelled[0], unlabelled, objective=obj, epochs=1)
    with pytest.raises(ValueError, match="unlabelled"):
        robust_self_training(mlp(), labelled, unlabelled[:, :, :4], objective=obj, epochs=1)
    with pytest.raises(TypeError, match="unlabelled"):
        robust_self_training(mlp(), labelled, unlabelled.long(), objective=obj, epochs=1)
    with pytest.raises(ValueError, match="labelled\\[1\\]"):
        robust_self_training(mlp(), (labelled[0], labelled[1][:5]), unlabelled, objective=obj,
                             epochs=1)
    with pytest.raises(TypeError, match="objective"):
        robust_self_training(mlp(), labelled, unlabelled, objective="pgd", epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        robust_self_training(mlp(), labelled, unlabelled, objective=obj, epochs=0)
    with pytest.raises(ValueError, match="teacher_epochs"):
        robust_self_training(mlp(), labelled, unlabelled, objective=obj, epochs=1, teacher_epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        pseudo_labels(mlp(), unlabelled, batch_size=0)
    with pytest.raises(TypeError, match="x"):
        pseudo_labels(mlp(), [1.0, 2.0])
