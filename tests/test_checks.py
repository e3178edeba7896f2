"""The central argument checks: each failure names the argument at fault."""

import math

import pytest
import torch

from robustlab._checks import (
    check_bool,
    check_choice,
    check_eps,
    check_generator,
    check_images,
    check_in_range,
    check_label_range,
    check_labels,
    check_nonnegative,
    check_norm,
    check_positive,
    check_seed,
)


@pytest.mark.parametrize("norm,name", [("linf", "linf"), ("Linf", "linf"), ("inf", "linf"),
                                       (math.inf, "linf"), (2, "l2"), ("l2", "l2"), (1, "l1")])
def test_check_norm_accepts_the_documented_names(norm, name):
    assert check_norm(norm, ("linf", "l2", "l1")) == name


@pytest.mark.parametrize("norm", [True, False, "l3", 3, None, [2], "l1"])
def test_check_norm_refuses_anything_else(norm):
    with pytest.raises(ValueError, match="norm must be one of"):
        check_norm(norm, ("linf", "l2"))


@pytest.mark.parametrize("check,value,error,match", [
    (lambda v: check_choice(v, ("a", "b"), "solver"), "c", ValueError, r"solver must be one of \['a', 'b'\]"),
    (lambda v: check_choice(v, (0, 1), "flag"), True, ValueError, "flag"),
    (lambda v: check_nonnegative(v, "kappa"), -0.5, ValueError, "kappa must be a finite number >= 0"),
    (lambda v: check_nonnegative(v, "c"), math.nan, ValueError, "c must be"),
    (lambda v: check_nonnegative(v, "c"), "1", TypeError, "c must be a number"),
    (lambda v: check_in_range(v, "p", 0, 1, low_open=True), 0, ValueError, r"p must lie in \(0, 1\]"),
    (lambda v: check_in_range(v, "p", 0, 1), 1.5, ValueError, r"p must lie in \[0, 1\]"),
    (lambda v: check_in_range(v, "p", 0, 1), math.nan, ValueError, "p must lie in"),
    (lambda v: check_in_range(v, "p", 0, 1), None, TypeError, "p must be a number"),
    (lambda v: check_in_range(v, "rank", 0, 1, integer=True), 1.0, TypeError, "rank must be an int"),
    (lambda v: check_positive(v, "steps", integer=True), 2.0, TypeError, "steps must be an int"),
    (lambda v: check_positive(v, "lr"), 0, ValueError, "lr must be > 0"),
    (lambda v: check_eps(v), torch.ones(2), ValueError, "single number"),
])
def test_checks_name_the_argument(check, value, error, match):
    with pytest.raises(error, match=match):
        check(value)


@pytest.mark.parametrize("check,value", [
    (lambda v: check_choice(v, ("a", "b"), "solver"), "a"),
    (lambda v: check_nonnegative(v, "kappa"), 0),
    (lambda v: check_in_range(v, "p", 0, 1, low_open=True), 1),
    (lambda v: check_positive(v, "steps", integer=True), 3),
])
def test_checks_return_good_values(check, value):
    assert check(value) == value


def test_check_images():
    x = torch.rand(2, 1, 4, 4)
    assert check_images(x) is x
    for bad, match in [(x[:0], "empty"), (x[0], r"\(N, C, H, W\)"), (x * 3, r"\[0, 1\]"),
                       (x.half(), "float32 or float64"), (x.long(), "floating")]:
        with pytest.raises((TypeError, ValueError), match=match):
            check_images(bad)


def test_labels_are_checked_against_the_classes_in_one_place():
    x = torch.rand(3, 1, 4, 4)
    assert check_labels(torch.tensor([0, 1, 2], dtype=torch.int32), x).dtype == torch.long
    with pytest.raises(ValueError, match=r"outside \[0, 3\): range \[0, 3\]"):
        check_labels(torch.tensor([0, 1, 3]), x, num_classes=3)
    with pytest.raises(ValueError, match="negative label"):
        check_label_range(torch.tensor([0, -2]))
    check_label_range(torch.tensor([], dtype=torch.long), 3)


@pytest.mark.parametrize("check,value,error,match", [
    (lambda v: check_seed(v), "a", TypeError, "seed must be an int, got str"),
    (lambda v: check_seed(v, "--seed"), True, TypeError, "--seed must be an int, got bool"),
    (lambda v: check_seed(v), -1, ValueError, r"seed must lie in \[0, 2\*\*32\), got -1"),
    (lambda v: check_bool(v, "random_start"), "no", TypeError,
     "random_start must be True or False, got str"),
    (lambda v: check_bool(v, "flag"), 1, TypeError, "flag must be True or False, got int"),
])
def test_seed_and_bool_checks_name_the_argument(check, value, error, match):
    with pytest.raises(error, match=match):
        check(value)


def test_seed_and_bool_checks_return_good_values():
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1
    assert check_bool(False, "flag") is False and check_bool(True, "flag") is True


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_image_and_label_checks_read_the_host_once_each(dtype):
    # both ends of the range in one read: each read stalls a GPU, and the black-box Oracle
    # checks its images at every query
    from tests.syncs import count

    x = torch.linspace(0, 1, 48, dtype=torch.float64).view(3, 1, 4, 4)
    y = torch.tensor([0, 2, 1], dtype=dtype)
    assert count(lambda: check_images(x)).total == 1
    assert count(lambda: check_label_range(y, 3)).total == 1
    with pytest.raises(ValueError, match=r"range \[0, 2\]"):
        check_label_range(y, 2)
    with pytest.raises(ValueError, match=r"got range \[-0.5, 1\]"):
        check_images(torch.cat([x, x - 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        check_images(x.clone().index_fill_(0, torch.tensor([1]), math.nan))


def test_check_generator():
    g = torch.Generator()
    assert check_generator(g) is g and check_generator(None) is None
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        check_generator(0)
