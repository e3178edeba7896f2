import torch

from robustlab import models, zoo


def test_recipe_is_reproducible():
    """The zoo script trains the same weights from the same seed (here: the MLP, fast)."""
    a, acc_a = zoo.train_one("digits-mlp", seed=0, progress=False)
    b, acc_b = zoo.train_one("digits-mlp", seed=0, progress=False)
    assert acc_a == acc_b
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert abs(acc_a - models.manifest()["digits-mlp"]["test_accuracy"]) < zoo.ACCURACY_TOL


def test_verify_passes(capsys):
    assert zoo.verify()
    assert "digits-cnn: ok" in capsys.readouterr().out
