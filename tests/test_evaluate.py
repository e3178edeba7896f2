import math

import pytest
import torch

from robustlab import models
from robustlab.attacks import cw, deepfool, fgsm, pgd, square
from robustlab.evaluate import (
    compare_attacks,
    default_attacks,
    distortion_stats,
    query_stats,
    robust_accuracy,
    worst_case,
)
from robustlab.norms import flat_norm
from robustlab.train import evaluate, predict

from .conftest import leaves_as_found


@pytest.fixture(scope="module")
def small(digits_test):
    x, y = digits_test
    return x[:64].clone(), y[:64].clone()


def pgd_at(model, x, y, eps):
    return pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10,
               generator=torch.Generator().manual_seed(0))


def never_called(model, x, y, eps):
    raise AssertionError("no attack may run at eps = 0")


def test_eps_zero_is_clean_accuracy(digits_cnn, small):
    x, y = small
    curve = robust_accuracy(digits_cnn, x, y, never_called, eps_list=[0.0])
    assert curve.eps == [0.0]
    assert curve.accuracy[0] == pytest.approx(evaluate(digits_cnn, (x, y)))


def test_robust_accuracy_is_monotone_in_eps(digits_cnn, small):
    x, y = small
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    curve = robust_accuracy(digits_cnn, x, y, pgd_at, eps_list=eps, batch_size=40)
    acc = curve.accuracy
    assert all(a >= b for a, b in zip(acc, acc[1:])), acc
    assert acc[0] > 0.9 and acc[-1] < 0.1
    assert curve.robust.shape == (len(eps), len(x))
    # robust at eps > 0 implies correct at eps = 0
    assert not (curve.robust[1:] & ~curve.robust[0]).any()
    text = curve.table()
    assert "0.05" in text and text.count("\n") == len(eps) + 1


def test_plot_draws_the_curve(digits_cnn, small):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, y = small
    curve = robust_accuracy(digits_cnn, x[:16], y[:16], pgd_at, eps_list=[0, 0.1])
    ax = curve.plot()
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0, 0.1]
    assert list(line.get_ydata()) == curve.accuracy
    plt.close(ax.figure)


def test_attack_leaving_the_ball_is_refused(digits_cnn, small):
    x, y = small

    def cheat(model, x, y, eps, norm="linf"):
        return (x + 2 * eps).clamp(0, 1)

    with pytest.raises(ValueError, match="distance"):
        robust_accuracy(digits_cnn, x, y, cheat, eps_list=[0.1])
    with pytest.raises(ValueError, match="cheat"):
        worst_case(digits_cnn, x, y, eps=0.1,
                   attacks={"cheat": lambda m, x, y: cheat(m, x, y, 0.1)})


def _check_worst_case(model, x, y, result, eps, norm):
    """Every example counted broken is misclassified at a point inside the ball."""
    broken = ~result.robust & (model(x).argmax(1) == y)
    assert (model(result.x_adv[broken]).argmax(1) != y[broken]).all()
    assert (flat_norm(result.x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.equal(result.x_adv[result.robust], x[result.robust])
    accs = [s["robust_accuracy"] for s in result.stages]
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] == pytest.approx(result.robust_accuracy)


def test_worst_case_is_never_weaker_than_a_member(digits_cnn, small):
    """Deterministic members: the ensemble's robust set is inside each member's robust set."""
    x, y = small
    eps = 0.1
    members = {
        "fgsm": lambda m, x, y: fgsm(m, x, y, eps=eps),
        "bim-ce": lambda m, x, y: pgd(m, x, y, eps=eps, alpha=eps / 8, steps=20, random_start=False),
        "bim-dlr": lambda m, x, y: pgd(m, x, y, eps=eps, alpha=eps / 8, steps=20, loss="dlr",
                                       random_start=False),
    }
    result = worst_case(digits_cnn, x, y, eps=eps, attacks=members)
    _check_worst_case(digits_cnn, x, y, result, eps, "linf")
    assert [s["attack"] for s in result.stages] == list(members)
    for name, attack in members.items():
        alone = robust_accuracy(digits_cnn, x, y, lambda m, x, y, eps, f=attack: f(m, x, y),
                                eps_list=[eps])
        assert not (result.robust & ~alone.robust[0]).any(), name
        assert result.robust_accuracy <= alone.accuracy[0]
    assert "bim-dlr" in result.table() and "seconds" not in result.table()
    assert [line.split(" | ")[0] for line in result.timings().splitlines()[2:]] == [
        f"| {name}" for name in members]


def test_worst_case_takes_black_box_members(digits_cnn, small):
    x, y = small
    plain = worst_case(digits_cnn, x, y, eps=0.1, attacks={"fgsm": lambda m, x, y: fgsm(m, x, y, eps=0.1)})
    pair = worst_case(digits_cnn, x, y, eps=0.1, attacks={
        "fgsm": lambda m, x, y: (fgsm(m, x, y, eps=0.1), torch.ones(len(x)))})
    assert torch.equal(plain.robust, pair.robust) and torch.equal(plain.x_adv, pair.x_adv)


@pytest.mark.filterwarnings("ignore:worst_case runs without")
def test_default_ensemble_beats_each_member(digits_cnn, small):
    x, y = small
    eps = 0.1

    def members():
        return default_attacks(eps=eps, steps=10, top_k=2, square_queries=200,
                               generator=torch.Generator().manual_seed(0))

    result = worst_case(digits_cnn, x, y, eps=eps, attacks=members())
    _check_worst_case(digits_cnn, x, y, result, eps, "linf")
    for name, attack in members().items():
        alone = robust_accuracy(digits_cnn, x, y, lambda m, x, y, eps, f=attack: f(m, x, y),
                                eps_list=[eps])
        assert result.robust_accuracy <= alone.accuracy[0], name


def test_distortion_stats_by_hand():
    x = torch.zeros(4, 2, 3, 3)
    x_adv = x.clone()
    x_adv[0, :, 1, 1] = 0.5          # one pixel, both channels: L0 1, L1 1, L2 sqrt(.5), Linf .5
    x_adv[1, 0, 0, :] = 0.1          # three pixels of 0.1:      L0 3, L1 .3, L2 sqrt(.03), Linf .1
    x_adv[1, 0, 2, 2] = 0.4          # and a fourth of 0.4:      L0 4, L1 .7, L2 sqrt(.19), Linf .4
    x_adv[2, 1, :, :] = 0.2          # all nine pixels:          L0 9, L1 1.8, L2 .6, Linf .2
    x_adv[3] = 1.0                   # a failure: ignored
    s = distortion_stats(x, x_adv, torch.tensor([True, True, True, False]))
    assert s["success_rate"] == 0.75 and s["n_success"] == 3
    assert s["l0_mean"] == pytest.approx(14 / 3) and s["l0_median"] == 4
    assert s["l1_mean"] == pytest.approx(3.5 / 3) and s["l1_median"] == pytest.approx(1.0)
    assert s["l2_mean"] == pytest.approx((math.sqrt(.5) + math.sqrt(.19) + .6) / 3)
    assert s["l2_median"] == pytest.approx(0.6)
    assert s["linf_mean"] == pytest.approx(1.1 / 3) and s["linf_median"] == pytest.approx(0.4)
    none = distortion_stats(x, x_adv, torch.zeros(4, dtype=torch.bool))
    assert none["success_rate"] == 0 and math.isnan(none["l2_mean"])


def test_l0_ignores_round_off():
    x = torch.full((1, 1, 2, 2), 0.5)
    s = distortion_stats(x, x + 1e-7, torch.tensor([True]))
    assert s["l0_mean"] == 0


def test_query_stats_by_hand():
    s = query_stats(torch.tensor([10, 30, 5000, 20]), torch.tensor([True, True, False, True]))
    assert s == {"success_rate": 0.75, "n_success": 3, "queries_mean": 20.0, "queries_median": 20.0}
    s = query_stats(torch.tensor([1, 4]), torch.tensor([True, True]))
    assert s["queries_median"] == 2.5


def test_compare_attacks_table(digits_cnn, small):
    x, y = small

    def fake_black_box(model, x, y):
        return pgd(model, x, y, eps=0.2, alpha=0.05, steps=10), torch.full((len(x),), 7)

    cmp = compare_attacks(digits_cnn, x, y, {
        "fgsm": lambda m, x, y: fgsm(m, x, y, eps=0.2),
        "identity": lambda m, x, y: x.clone(),
        "black-box": fake_black_box,
    })
    rows = {r["attack"]: r for r in cmp.rows}
    assert rows["identity"]["success_rate"] == 0 and math.isnan(rows["identity"]["l2_mean"])
    assert rows["fgsm"]["linf_mean"] == pytest.approx(0.2, abs=1e-5)
    assert rows["fgsm"]["success_rate"] < rows["black-box"]["success_rate"]
    assert rows["black-box"]["queries_mean"] == 7 and "queries_mean" not in rows["fgsm"]
    text = cmp.table()
    assert text.splitlines()[0].startswith("| attack | success rate")
    assert len(text.splitlines()) == 2 + 3
    # the printed table is machine-independent: timings live in their own table
    assert "seconds" not in text and "| identity | 0.000 | - | - | - | - |" in text
    assert cmp.timings().splitlines()[0] == "| attack | seconds |"
    assert [line.split(" | ")[0] for line in cmp.timings().splitlines()[2:]] == [
        "| fgsm", "| identity", "| black-box"]


def test_compare_with_the_other_attacks(digits_cnn, small):
    """Integration with the minimum-norm and black-box attacks."""
    x, y = small[0][:16], small[1][:16]
    attacks = {"cw": lambda m, x, y: cw(m, x, y, steps=100, binary_steps=5), "deepfool": deepfool,
               "square": lambda m, x, y: square(m, x, y, eps=0.2, max_queries=200,
                                                generator=torch.Generator().manual_seed(0))}
    rows = {r["attack"]: r for r in compare_attacks(digits_cnn, x, y, attacks).rows}
    for name in attacks:
        assert rows[name]["success_rate"] > 0.5, name
    assert 0 < rows["square"]["queries_mean"] <= 200


@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: robust_accuracy(m, x, y, pgd_at, eps_list=[]), "eps_list"),
    (lambda m, x, y: robust_accuracy(m, x, y, pgd_at, eps_list=0.1), "eps_list"),
    (lambda m, x, y: robust_accuracy(m, x, y, pgd_at, eps_list=[0.1, -0.1]), r"eps_list\[1\]"),
    (lambda m, x, y: robust_accuracy(m, x, y, "pgd", eps_list=[0.1]), "attack must be callable"),
    (lambda m, x, y: robust_accuracy(m, x, y[:5], pgd_at, eps_list=[0.1]), "y must have shape"),
    (lambda m, x, y: worst_case(m, x, y, eps=-1.0), "eps"),
    (lambda m, x, y: worst_case(m, x, y, eps=0.1, norm="l7"), "norm"),
    (lambda m, x, y: worst_case(m, x, y, eps=0.1, attacks={}), "attacks"),
    (lambda m, x, y: worst_case(m, x, y, eps=0.1, attacks={"a": 3}), r"attacks\['a'\]"),
    (lambda m, x, y: compare_attacks(m, x, y, {"a": None}), "callable"),
    (lambda m, x, y: default_attacks(eps=0.1, steps=0), "steps"),
    (lambda m, x, y: distortion_stats(x, x[:3], torch.ones(64, dtype=torch.bool)), "same shape"),
    (lambda m, x, y: distortion_stats(x, x, torch.ones(64)), "bool"),
    (lambda m, x, y: distortion_stats(x, x, torch.ones(3, dtype=torch.bool)), "success must have"),
    (lambda m, x, y: query_stats(torch.tensor([-1, 2]), torch.ones(2, dtype=torch.bool)), ">= 0"),
])
def test_bad_arguments(digits_cnn, small, call, match):
    x, y = small
    with pytest.raises((ValueError, TypeError), match=match):
        call(digits_cnn, x, y)


def test_robust_accuracy_takes_a_black_box_attack(digits_cnn, small):
    """Black-box attacks return (x_adv, queries); robust_accuracy uses x_adv."""
    x, y = small[0][:8], small[1][:8]
    curve = robust_accuracy(digits_cnn, x, y, square, eps_list=[0.0, 0.2], max_queries=100,
                            generator=torch.Generator().manual_seed(0))
    assert curve.accuracy[1] < curve.accuracy[0]


def fgsm_at(m, x, y, eps):
    return fgsm(m, x, y, eps=eps)


@pytest.fixture
def resnet_in_train_mode():
    m = models.pretrained("digits-resnet")
    m.train()
    return m


EVALUATORS = {
    "robust_accuracy": lambda m, x, y: robust_accuracy(m, x, y, fgsm_at, eps_list=[0.0, 0.1]),
    "worst_case": lambda m, x, y: worst_case(m, x, y, eps=0.1, attacks={"fgsm": lambda m, x, y:
                                                                         fgsm(m, x, y, eps=0.1)}),
    "compare_attacks": lambda m, x, y: compare_attacks(m, x, y, {"fgsm": lambda m, x, y:
                                                                 fgsm(m, x, y, eps=0.1)}),
}


# issue 7: in train mode, batch norm used batch statistics and updated its running statistics
@pytest.mark.parametrize("name", EVALUATORS)
def test_evaluators_use_eval_mode_and_leave_the_model_as_found(name, resnet_in_train_mode, eight):
    """In train mode, batch norm used batch statistics (clean accuracy 0.75 instead of 1.0)
    and updated its running statistics."""
    x, y = eight
    m = resnet_in_train_mode
    leaves_as_found(lambda: EVALUATORS[name](m, x, y), m, x, y)
    if name == "robust_accuracy":
        assert robust_accuracy(m, x, y, fgsm_at, eps_list=[0.0]).accuracy[0] == 1.0


# issue 7: robust_accuracy raised "x is empty" when every clean prediction was wrong
def test_robust_accuracy_when_every_example_is_misclassified(digits_cnn, eight):
    x, y = eight
    wrong = (predict(digits_cnn, x).argmax(1) + 1) % 10
    curve = robust_accuracy(digits_cnn, x, wrong, fgsm_at, eps_list=[0.0, 0.1])
    assert curve.accuracy == [0.0, 0.0]


# issue 7: labels outside [0, K) were silently counted as misclassified
@pytest.mark.parametrize("name", EVALUATORS)
@pytest.mark.parametrize("label,match", [(12, r"outside \[0, 10\)"), (-1, "negative label")])
def test_evaluators_check_labels_against_the_classes(name, label, match, digits_cnn, eight):
    x, y = eight
    with pytest.raises(ValueError, match=match):
        EVALUATORS[name](digits_cnn, x, torch.full_like(y, label))


# issue 7: a NaN adversarial input passed the ball check and counted as a successful attack
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
