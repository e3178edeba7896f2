"""Bugs found by using the library as a hostile user would (issue 7): one test each."""

import copy

import pytest
import torch
from torch import nn

from robustlab import attacks as A
from robustlab import models, train
from robustlab.attacks import Oracle
from robustlab.evaluate import compare_attacks, robust_accuracy, worst_case

from .conftest import leaves_as_found, messy_model


def fgsm_at(m, x, y, eps):
    return A.fgsm(m, x, y, eps=eps)


@pytest.fixture
def eight(digits_test):
    x, y = digits_test
    return x[:8].clone(), y[:8].clone()


@pytest.fixture
def resnet_in_train_mode():
    m = models.pretrained("digits-resnet")
    m.train()
    return m


EVALUATORS = {
    "robust_accuracy": lambda m, x, y: robust_accuracy(m, x, y, fgsm_at, eps_list=[0.0, 0.1]),
    "worst_case": lambda m, x, y: worst_case(m, x, y, eps=0.1, attacks={"fgsm": lambda m, x, y:
                                                                         A.fgsm(m, x, y, eps=0.1)}),
    "compare_attacks": lambda m, x, y: compare_attacks(m, x, y, {"fgsm": lambda m, x, y:
                                                                 A.fgsm(m, x, y, eps=0.1)}),
}


@pytest.mark.parametrize("name", EVALUATORS)
def test_evaluators_use_eval_mode_and_leave_the_model_as_found(name, resnet_in_train_mode, eight):
    """In train mode, batch norm used batch statistics (clean accuracy 0.75 instead of 1.0)
    and updated its running statistics."""
    x, y = eight
    m = resnet_in_train_mode
    leaves_as_found(lambda: EVALUATORS[name](m, x, y), m, x, y)
    if name == "robust_accuracy":
        assert robust_accuracy(m, x, y, fgsm_at, eps_list=[0.0]).accuracy[0] == 1.0


def test_nested_modes_are_restored(eight):
    """single_pixel_search and train.evaluate restored only the top-level mode."""
    x, y = eight
    net = messy_model()
    wrapped = nn.Sequential(net)
    wrapped.eval()
    net.train()  # a mix: the wrapper in eval mode, the network inside in train mode
    leaves_as_found(lambda: A.single_pixel_search(wrapped, x[:1], y[:1]), wrapped, x, y)
    leaves_as_found(lambda: train.evaluate(wrapped, (x, y)), wrapped, x, y)
    assert net.training and not wrapped.training


def test_robust_accuracy_when_every_example_is_misclassified(digits_cnn, eight):
    x, y = eight
    wrong = (train.predict(digits_cnn, x).argmax(1) + 1) % 10
    curve = robust_accuracy(digits_cnn, x, wrong, fgsm_at, eps_list=[0.0, 0.1])
    assert curve.accuracy == [0.0, 0.0]


@pytest.mark.parametrize("name", EVALUATORS)
@pytest.mark.parametrize("label,match", [(12, r"outside \[0, 10\)"), (-1, "negative label")])
def test_evaluators_check_labels_against_the_classes(name, label, match, digits_cnn, eight):
    x, y = eight
    with pytest.raises(ValueError, match=match):
        EVALUATORS[name](digits_cnn, x, torch.full_like(y, label))


class Sqrt(nn.Module):
    """A model with an infinite input gradient at 0: sqrt(x) feeds a linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1).sqrt())


NAN_PRONE = {
    "fgm": lambda m, x, y: A.fgsm(m, x, y, eps=0.5, norm="l2"),
    "pgd-l2": lambda m, x, y: A.pgd(m, x, y, eps=0.5, alpha=0.1, steps=3, norm="l2",
                                    random_start=False),
    "deepfool": lambda m, x, y: A.deepfool(m, x, y, steps=3),
}


@pytest.mark.parametrize("name", NAN_PRONE)
def test_infinite_gradient_gives_no_nan(name, eight):
    x, y = eight  # digits have many pixels at exactly 0, where sqrt' is infinite
    assert (x == 0).any()
    x_adv = NAN_PRONE[name](Sqrt(), x, y)
    assert not x_adv.isnan().any()


@pytest.mark.parametrize("name", ["robust_accuracy", "worst_case", "compare_attacks"])
def test_evaluators_refuse_nan_naming_the_attack(name, digits_cnn, eight):
    x, y = eight

    def nan_attack(m, x, y, eps=0.1):
        out = x.clone()
        out[0, 0, 0, 0] = float("nan")
        return out
    calls = {"robust_accuracy": lambda: robust_accuracy(digits_cnn, x, y, nan_attack, eps_list=[0.1]),
             "worst_case": lambda: worst_case(digits_cnn, x, y, eps=0.1, attacks={"bad": nan_attack}),
             "compare_attacks": lambda: compare_attacks(digits_cnn, x, y, {"bad": nan_attack})}
    with pytest.raises(ValueError, match=r"(nan_attack|'bad').*NaN"):
        calls[name]()


def test_cw_accepts_an_input_that_requires_grad(digits_cnn, eight):
    x, y = eight
    x_adv = A.cw(digits_cnn, x.clone().requires_grad_(True), y, steps=5, binary_steps=1)
    assert x_adv.shape == x.shape and not x_adv.requires_grad


def test_norm_true_is_not_l1(digits_cnn, eight):
    x, y = eight
    with pytest.raises(ValueError, match="norm"):
        A.pgd(digits_cnn, x, y, eps=0.1, alpha=0.01, steps=1, norm=True)


@pytest.mark.parametrize("call", [
    lambda m, x, y: A.guap(m, x, y, eps=0.1, steps=2),
    lambda m, x, y: A.zoo(m, x, y, coords_per_step=4, max_queries=20),
    lambda m, x, y: A.fgsm(m, x, y, eps=0.1),
])
def test_half_precision_is_refused_clearly(call, digits_cnn, eight):
    x, y = eight
    with pytest.raises(TypeError, match="float16.*float32 or float64"):
        call(copy.deepcopy(digits_cnn).half(), x.half(), y)


def test_dtype_mismatch_between_x_and_model(digits_cnn, eight):
    x, y = eight
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters"):
        A.fgsm(digits_cnn, x.double(), y, eps=0.1)


def test_inference_mode_says_why(digits_cnn, eight):
    x, y = eight
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        A.pgd(digits_cnn, x, y, eps=0.1, alpha=0.01, steps=1)


@pytest.mark.parametrize("args,error,match", [
    (lambda x, y: (x[:0], y[:0]), ValueError, "empty"),
    (lambda x, y: (x, y[:3]), ValueError, "y must have shape"),
    (lambda x, y: (x, y.float()), TypeError, "integer class indices"),
    (lambda x, y: (x * 255, y), ValueError, r"\[0, 1\]"),
    (lambda x, y: (x, torch.full_like(y, 10)), ValueError, "labels outside"),
])
def test_fooling_rate_checks_its_arguments(args, error, match, digits_cnn, eight):
    with pytest.raises(error, match=match):
        A.fooling_rate(digits_cnn, *args(*eight))


@pytest.mark.parametrize("idx,error,match", [
    (torch.tensor([0, -1]), ValueError, "negative"),
    (torch.tensor([0.0, 1.7]), TypeError, "integer"),
])
def test_oracle_idx_is_checked(idx, error, match, digits_cnn, eight):
    x, _ = eight
    with pytest.raises(error, match=match):
        Oracle(digits_cnn)(x[:2], idx)


def test_oracle_states_what_it_knows_up_front(digits_cnn):
    oracle = Oracle(digits_cnn)
    assert (oracle.num_classes, oracle.device, oracle.dtype) == (10, torch.device("cpu"), torch.float32)
    assert len(oracle.queries) == 0
    with pytest.raises(ValueError, match="num_classes"):
        Oracle(nn.Flatten())


def test_an_inference_tensor_can_be_attacked_outside_inference_mode(digits_cnn, eight):
    x, y = eight
    with torch.inference_mode():
        x_inf = x.clone()
    assert x_inf.is_inference()
    x_adv = A.fgsm(digits_cnn, x_inf, y, eps=0.1)
    assert torch.equal(x_adv, A.fgsm(digits_cnn, x, y, eps=0.1))
