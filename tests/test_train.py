import copy

import pytest
import torch
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.train import cross_entropy, evaluate, fit, predict

from .conftest import leaves_as_found, nested_modes
from .syncs import explain, grows


def test_fit_learns_and_is_reproducible():
    train, test = data.digits("train"), data.digits("test")

    def run():
        seed_everything(1)
        m = models.MLP((1, 8, 8), (32,), 10)
        hist = fit(m, train, epochs=5, lr=5e-3, eval_data=test, progress=False, seed=1)
        return m, hist

    m1, h1 = run()
    m2, h2 = run()
    assert h1 == h2
    assert h1[-1]["loss"] < h1[0]["loss"]
    assert h1[-1]["test_acc"] > 0.85
    assert not m1.training  # fit leaves the model in eval mode


def test_pluggable_objective_is_called():
    calls = []

    def objective(model, x, y):
        calls.append(len(x))
        return cross_entropy(model, x, y)

    x, y = data.digits("test")
    fit(models.MLP(), (x[:100], y[:100]), epochs=2, objective=objective, batch_size=50,
        progress=False)
    assert calls == [50, 50, 50, 50]


def test_evaluate_rejects_wrong_output_shape():
    class Bad(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1)  # (N,) instead of (N, K)

    with pytest.raises(ValueError, match=r"logits of shape \(N, K\)"):
        evaluate(Bad(), data.digits("test"))


def test_evaluate_restores_mode_and_predict_batches():
    m = models.pretrained("digits-cnn").train()
    x, y = data.digits("test")
    acc = evaluate(m, (x, y))
    assert m.training
    m.eval()
    assert torch.allclose(predict(m, x, batch_size=7), m(x), atol=1e-5)
    assert (predict(m, x).argmax(1) == y).float().mean().item() == pytest.approx(acc)


def test_fit_bad_arguments():
    with pytest.raises(ValueError, match="epochs"):
        fit(models.MLP(), data.digits("test"), epochs=0)
    with pytest.raises(TypeError, match="data must be"):
        fit(models.MLP(), 3, epochs=1)


def _digits_batches(n: int = 64, size: int = 32):
    x, y = data.digits("test")
    return [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]


@pytest.mark.parametrize("empty", [
    [],
    (torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)),
], ids=["empty list", "empty tensors"])
def test_fit_refuses_empty_data(empty):
    with pytest.raises(ValueError, match="data is empty"):
        fit(models.MLP(), empty, epochs=1, progress=False)


def test_fit_refuses_one_shot_generator():
    batches = (b for b in _digits_batches())
    with pytest.raises(ValueError, match="no batches in epoch 2.*re-iterable"):
        fit(models.MLP(), batches, epochs=2, progress=False)
    # a list of the same batches is re-iterable: both epochs train
    hist = fit(models.MLP(), _digits_batches(), epochs=2, progress=False)
    assert len(hist) == 2 and all(h["loss"] > 0 for h in hist)


def test_fit_stops_on_non_finite_loss():
    batches = _digits_batches(n=96)
    x, y = batches[1]
    batches[1] = (x.clone().fill_(float("nan")), y)  # NaN input in the second batch
    with pytest.raises(FloatingPointError, match="epoch 1, batch 2"):
        fit(models.MLP(), batches, epochs=3, progress=False)
    model = models.MLP()  # SGD with lr = 1e10 overflows within a few steps
    with pytest.raises(FloatingPointError, match=r"not finite at epoch \d+, batch \d+"):
        fit(model, _digits_batches(), epochs=5, progress=False,
            optimizer=torch.optim.SGD(model.parameters(), lr=1e10))


def test_fit_averages_objective_logs():
    def objective(model, x, y):
        loss = cross_entropy(model, x, y)
        return loss, {"twice": 2 * loss.detach(), "size": float(len(x))}

    x, y = data.digits("test")
    hist = fit(models.MLP(), (x[:48], y[:48]), epochs=2, objective=objective, batch_size=32,
               progress=False)
    for row in hist:
        assert row["twice"] == pytest.approx(2 * row["loss"], rel=1e-5)
        assert row["size"] == pytest.approx((32 * 32 + 16 * 16) / 48)  # example-weighted
    with pytest.raises(ValueError, match="may not use the names.*'loss'"):
        fit(models.MLP(), (x[:48], y[:48]), epochs=1, progress=False,
            objective=lambda m, x, y: (cross_entropy(m, x, y), {"loss": 1.0}))
    with pytest.raises(TypeError, match="objective log 'note' must be a number, got str"):
        fit(models.MLP(), (x[:48], y[:48]), epochs=1, progress=False,
            objective=lambda m, x, y: (cross_entropy(m, x, y), {"note": "hi"}))


def test_fit_reads_losses_once_per_epoch(monkeypatch):
    """GPU readiness: no loss.item() per batch; the running sums are read once per epoch."""
    reads = []
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append("tolist") or real_tolist(t))
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append("item") or real_item(t))
    model = models.MLP()
    # SGD: Adam itself reads its step counter with .item() on the CPU
    fit(model, _digits_batches(n=160), epochs=2, progress=False,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert reads == ["tolist", "tolist"]


# issue 7: train.evaluate restored only the top-level train/eval mode
def test_evaluate_restores_nested_modes(eight):
    x, y = eight
    wrapped, net = nested_modes()
    leaves_as_found(lambda: evaluate(wrapped, (x, y)), wrapped, x, y)
    assert net.training and not wrapped.training


# issue 9: loop defences hand fit a whole training step; callbacks run after each epoch
def test_fit_step_replaces_objective_and_after_epoch_can_stop():
    batches = _digits_batches(n=64)
    model = models.MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls, steps = [], []
    opt.register_step_post_hook(lambda *_: steps.append(1))

    def step(model, x, y, optimizer):
        calls.append(optimizer)
        for _ in range(2):  # two optimiser steps per batch: only a step can do that
            optimizer.zero_grad()
            loss = cross_entropy(model, x, y)
            loss.backward()
            optimizer.step()
        return loss.detach(), {"twice": 2 * loss.detach()}

    def after(model, row):
        row["seen"] = len(calls)
        return row["epoch"] == 2  # stop after the second of five epochs

    hist = fit(model, batches, epochs=5, step=step, optimizer=opt, progress=False,
               after_epoch=after)
    assert [r["epoch"] for r in hist] == [1, 2] and [r["seen"] for r in hist] == [2, 4]
    assert all(o is opt for o in calls) and len(steps) == 2 * 2 * 2  # epochs x batches x 2
    assert hist[1]["twice"] == pytest.approx(2 * hist[1]["loss"])
    with pytest.raises(ValueError, match="objective or a step"):
        fit(model, batches, epochs=1, step=step, objective=lambda m, x, y: m(x).sum())


# issue 15: all-NaN images labelled 0 scored accuracy 1.0 (the argmax of NaN logits is 0)
def test_evaluate_and_fit_refuse_nan_images():
    x, y = data.digits("test")
    x, y = x[:64].clone(), torch.zeros(64, dtype=torch.long)
    x[40:] = float("nan")  # the second batch of 32
    model = models.MLP()
    with pytest.raises(ValueError, match=r"data holds NaN or infinite images \(batch 2\)"):
        evaluate(model, (x, y), batch_size=32)
    x[40:] = float("inf")
    with pytest.raises(ValueError, match="data holds NaN or infinite images"):
        evaluate(model, [(x[:32], y[:32]), (x[32:], y[32:])])
    train = data.digits("test")
    with pytest.raises(ValueError, match=r"eval_data holds NaN or infinite images \(batch 1\)"):
        fit(model, (train[0][:32], train[1][:32]), epochs=1, eval_data=(x[40:], y[40:]),
            progress=False)


def same_state(a, b) -> bool:
    """Whether two state dicts (nested containers of tensors and numbers) are equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k])
                                                                      for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def _stop_in_epoch_2(model, row):
    if row["epoch"] == 2:
        raise RuntimeError("callback failed")


# issue 15: a failing fit left the weights NaN (the optimiser had stepped before the loss was
# read) or half trained; now any exception leaves model, optimiser and scheduler as passed in
@pytest.mark.parametrize("failure", ["nan data", "after_epoch raises"])
def test_failing_fit_leaves_model_optimizer_and_scheduler_as_passed(failure):
    seed_everything(0)
    model = models.MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    fit(model, _digits_batches(), epochs=1, optimizer=opt, scheduler=sched, progress=False)
    model.train()  # as a caller might hand it over: mode, .grad and optimiser state all set
    batches, after = _digits_batches(n=96), _stop_in_epoch_2
    if failure == "nan data":
        x, y = batches[2]
        batches[2], after = (torch.full_like(x, float("nan")), y), None
    opt_before, sched_before = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())

    def failing_fit():
        with pytest.raises((FloatingPointError, RuntimeError)):
            fit(model, batches, epochs=3, optimizer=opt, scheduler=sched, progress=False,
                after_epoch=after)

    leaves_as_found(failing_fit, model)
    assert same_state(opt.state_dict(), opt_before)
    assert same_state(sched.state_dict(), sched_before)
    assert opt.param_groups[0]["lr"] == opt_before["param_groups"][0]["lr"]


# issue 16: evaluate read each batch's label range on the host (one sync per batch, which
# stalls a GPU once per batch); the counts and checks now stay on the device until the end
def test_evaluate_syncs_do_not_grow_with_the_batches(digits_cnn, digits_test):
    x, y = digits_test
    few, many = grows(lambda n: evaluate(digits_cnn, (x[:n], y[:n]), batch_size=16), 32, 256)
    assert few.total == many.total, explain(few, many)


def test_evaluate_names_the_batch_with_a_bad_label(digits_cnn, digits_test):
    x, y = (t[:64].clone() for t in digits_test)
    y[50] = 10
    with pytest.raises(ValueError, match=r"data holds labels outside \[0, 10\) \(batch 4\)"):
        evaluate(digits_cnn, (x, y), batch_size=16)
    y[50] = -1
    with pytest.raises(ValueError, match=r"outside \[0, 10\) \(batch 4\)"):
        evaluate(digits_cnn, (x, y), batch_size=16)
