"""The transfer matrix (Papernot et al. 2016): its definition checked entry by entry, exact
special cases, hygiene, and transfer between the zoo's digit models."""

import copy
import functools

import pytest
import torch
from torch import nn

from robustlab.attacks import fgsm, pgd
from robustlab.evaluate import TransferResult, robust_accuracy, transfer_matrix

from .conftest import leaves_as_found, messy_model, nested_modes, seeded

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PGD = dict(eps=0.2, alpha=0.05, steps=5, random_start=False)


def by_definition(models, x, y, attack, **kw):
    """rate[s][t] = #{i: f_t(x_i) = y_i, f_t(x_adv^s_i) != y_i} / #{i: f_t(x_i) = y_i}, by hand."""
    def label(model, z):
        with torch.no_grad():
            return model(z).argmax(1)
    rates = []
    for source in models.values():
        x_adv = attack(source, x, y, **kw)
        right = [label(target, x) == y for target in models.values()]
        rates.append([((label(target, x_adv) != y) & r).sum().item() / r.sum().item()
                      for target, r in zip(models.values(), right)])
    return rates


def test_matrix_follows_its_definition(digits_cnn, digits_mlp, digits_resnet, digits_test):
    x, y = (t[:48] for t in digits_test)
    zoo = {"cnn": digits_cnn, "mlp": digits_mlp, "resnet": digits_resnet}
    result = transfer_matrix(zoo, x, y, fgsm, eps=0.15)
    assert isinstance(result, TransferResult) and result.names == ["cnn", "mlp", "resnet"]
    assert result.matrix.shape == (3, 3) and result.fooled.shape == (3, 3, 48)
    assert result.counted.shape == (3, 48)
    assert ((result.matrix >= 0) & (result.matrix <= 1)).all()
    torch.testing.assert_close(result.matrix, torch.tensor(by_definition(zoo, x, y, fgsm, eps=0.15),
                                                         dtype=torch.float64))
    table = result.table()
    assert table.splitlines()[0] == "| source \\ target (fgsm) | cnn | mlp | resnet |"
    assert len(table.splitlines()) == 2 + 3 and str(result) == table


def test_diagonal_is_white_box_success_on_the_source(digits_cnn, digits_mlp, digits_test):
    """rate[s][s] = 1 - robust accuracy / clean accuracy of the source under the same attack."""
    x, y = (t[:64] for t in digits_test)
    zoo = {"cnn": digits_cnn, "mlp": digits_mlp}
    result = transfer_matrix(zoo, x, y, pgd, **PGD)
    for s, model in enumerate(zoo.values()):
        curve = robust_accuracy(model, x, y, pgd, eps_list=[0.0, PGD["eps"]],
                                **{k: v for k, v in PGD.items() if k != "eps"})
        clean, robust = curve.accuracy
        assert result.rate[s][s] == pytest.approx(1 - robust / clean, abs=1e-9)
    # white box beats transfer, and transfer is real: both columns
    m = result.matrix
    assert m[0, 0] >= m[1, 0] and m[1, 1] >= m[0, 1]
    assert m[0, 1] > 0.1 and m[1, 0] > 0.1, f"PGD examples should transfer between cnn and mlp:\n{result}"
    print(result)


def test_exact_special_cases(digits_cnn, digits_test):
    x, y = (t[:32] for t in digits_test)
    twin = copy.deepcopy(digits_cnn)
    # the same model twice: every entry is the white-box rate, rows and columns agree
    result = transfer_matrix({"a": digits_cnn, "b": twin}, x, y, pgd, **PGD)
    assert result.rate[0] == result.rate[1] and result.rate[0][0] == result.rate[0][1]
    # an attack that changes nothing fools no example anywhere
    def identity(model, x, y):
        return x.clone()
    assert transfer_matrix({"a": digits_cnn, "b": twin}, x, y, identity).rate == [[0.0, 0.0]] * 2


def test_a_target_right_nowhere_gives_nan_and_a_dash(digits_cnn, digits_test):
    x, y = digits_test
    keep = y != 1
    x, y = x[keep][:16], y[keep][:16]
    always_one = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        always_one[1].weight.zero_()
        always_one[1].bias.copy_(torch.arange(10) == 1)
    result = transfer_matrix({"cnn": digits_cnn, "const": always_one}, x, y, fgsm, eps=0.1)
    assert result.rate[0][1] != result.rate[0][1] and result.rate[1][1] != result.rate[1][1]
    assert result.table().splitlines()[2].endswith("| - |")


def test_targeted_counts_every_example(digits_cnn, digits_mlp, digits_test):
    x, y = (t[:32] for t in digits_test)
    targets = (y + 1) % 10
    result = transfer_matrix({"cnn": digits_cnn, "mlp": digits_mlp}, x, targets, pgd, targeted=True,
                             **PGD)
    assert result.counted.all()
    with torch.no_grad():
        x_adv = pgd(digits_cnn, x, targets, targeted=True, **PGD)
        reached = (digits_mlp(x_adv).argmax(1) == targets).float().mean().item()
    assert result.rate[0][1] == pytest.approx(reached)


def test_models_are_left_as_found_inside_no_grad(digits_test):
    x, y = (t[:16] for t in digits_test)
    wrapped, net = nested_modes()
    other = messy_model(1)
    zoo = {"wrapped": wrapped, "other": other}
    with torch.no_grad():
        leaves_as_found(lambda: leaves_as_found(
            lambda: transfer_matrix(zoo, x, y, pgd, eps=0.1, alpha=0.05, steps=2, generator=seeded()),
            other, x, y), wrapped)
    a = transfer_matrix(zoo, x, y, pgd, eps=0.1, alpha=0.05, steps=2, generator=seeded())
    b = transfer_matrix(zoo, x, y, pgd, eps=0.1, alpha=0.05, steps=2, generator=seeded())
    assert a.rate == b.rate, "a fixed generator gives the same matrix twice"
    # batches: the attack sees at most batch_size examples at a time, results unchanged
    seen = []

    def recording(model, x, y, **kw):
        seen.append(len(x))
        return fgsm(model, x, y, **kw)
    small = transfer_matrix(zoo, x, y, recording, eps=0.1, batch_size=5)
    assert seen == [5, 5, 5, 1] * 2
    assert small.rate == transfer_matrix(zoo, x, y, fgsm, eps=0.1).rate


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_data_device(device, digits_cnn, digits_mlp, digits_test):
    x, y = (t[:16].to(device) for t in digits_test)
    zoo = {n: copy.deepcopy(m).to(device) for n, m in [("cnn", digits_cnn), ("mlp", digits_mlp)]}
    on_device = transfer_matrix(zoo, x, y, fgsm, eps=0.1)
    on_cpu = transfer_matrix({"cnn": digits_cnn, "mlp": digits_mlp}, x.cpu(), y.cpu(), fgsm, eps=0.1)
    assert on_device.fooled.device.type == "cpu"
    torch.testing.assert_close(on_device.matrix, on_cpu.matrix, rtol=0, atol=2 / 16)


def test_bad_input_is_named(digits_cnn, digits_test):
    x, y = (t[:8] for t in digits_test)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        transfer_matrix({}, x, y, fgsm, eps=0.1)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        transfer_matrix([digits_cnn], x, y, fgsm, eps=0.1)
    with pytest.raises(TypeError, match=r"models\['b'\] must be a torch.nn.Module"):
        transfer_matrix({"a": digits_cnn, "b": "cnn"}, x, y, fgsm, eps=0.1)
    with pytest.raises(TypeError, match=r"models\['b'\]: x has dtype torch.float32 but the model"):
        transfer_matrix({"a": digits_cnn, "b": copy.deepcopy(digits_cnn).double()}, x, y, fgsm, eps=0.1)
    with pytest.raises(ValueError, match=r"models\['b'\]: x is on cpu but the model is on meta"):
        transfer_matrix({"a": digits_cnn, "b": copy.deepcopy(digits_cnn).to("meta")}, x, y, fgsm, eps=0.1)
    with pytest.raises(TypeError, match="attack must be callable"):
        transfer_matrix({"a": digits_cnn}, x, y, "pgd", eps=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        transfer_matrix({"a": digits_cnn}, x, y, fgsm, eps=0.1, batch_size=0)
    with pytest.raises(ValueError, match="labels outside"):
        transfer_matrix({"a": digits_cnn}, x, torch.full_like(y, 10), fgsm, eps=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        transfer_matrix({"a": digits_cnn}, x * 2, y, fgsm, eps=0.1)


def test_bad_attack_output_is_named(digits_cnn, digits_test):
    x, y = (t[:8] for t in digits_test)

    def nan(model, x, y, **kw):
        return torch.full_like(x, float("nan"))
    with pytest.raises(ValueError, match=r"attack 'nan' on models\['a'\] returned NaN"):
        transfer_matrix({"a": digits_cnn}, x, y, nan, eps=0.1)
    too_far = functools.partial(fgsm, eps=0.3)
    with pytest.raises(ValueError, match=r"distance .* > eps = 0.1"):
        transfer_matrix({"a": digits_cnn}, x, y, lambda m, x, y, eps: too_far(m, x, y), eps=0.1)
    # check_ball=False lets an attack with its own notion of budget through
    transfer_matrix({"a": digits_cnn}, x, y, lambda m, x, y, eps: too_far(m, x, y), eps=0.1,
                    check_ball=False)
