import pytest
import torch
from torch import nn

from robustlab import data, models, seed_everything
from robustlab.train import cross_entropy, evaluate, fit, predict


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
