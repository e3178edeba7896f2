"""Lesson 03c: its exercise checks reject wrong answers and accept the solution, its widget works
headless, and the library pieces it added (wrm_surrogate, jacobian_norms,
weight_landscape, budget_results, read_markdown_table) keep their promises.

Each check cell of lessons/03c-more-defences.ipynb runs here, outside the notebook, once with the
lesson's own solution (it must pass) and once with each planted wrong answer (it must fail with an
AssertionError), so a check that cannot fail is caught.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab import attacks, data, models, train
from robustlab.defences import BjorckLinear, GroupSort, gnp_radius, wrm_surrogate
from robustlab.evaluate import budget_results, default_attacks, jacobian_norms, weight_landscape, worst_case
from robustlab.tables import markdown_table, read_markdown_table
from robustlab.widgets import defence_budgets

from .lesson_cells import Lesson

LESSON = Lesson("03c-more-defences.ipynb")
exercise, run = LESSON.exercise, LESSON.run


@pytest.fixture(scope="module")
def digits():
    x, y = data.digits("test")
    return x[:64], y[:64]


@pytest.fixture(scope="module")
def trained_mlp():
    x, y = data.digits("train")
    torch.manual_seed(0)
    model = models.MLP((1, 8, 8), (32,), 10)
    train.fit(model, (x, y), epochs=3, lr=5e-3, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def bjorck_net():
    x, y = data.digits("train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), BjorckLinear(64, 32), GroupSort(2), BjorckLinear(32, 10))
    train.fit(model, (x, y), epochs=3, lr=5e-3, progress=False)
    return model.eval()


# --- exercise 1: the WRM certificate -------------------------------------------------------------

def wrong_bounds():
    return {
        "largest instead of smallest": lambda p, rho: max(g * rho + v for g, v in p.items()),
        "forgets γρ": lambda p, rho: min(p.values()),
        "γ / ρ": lambda p, rho: min(g / max(rho, 1e-12) + v for g, v in p.items()),
        "one γ only (the first)": lambda p, rho: next(g * rho + v for g, v in p.items()),
        "ρ² instead of ρ": lambda p, rho: min(g * rho ** 2 + v for g, v in p.items()),
        "√ρ, the L2 radius, instead of ρ": lambda p, rho: min(g * rho ** 0.5 + v for g, v in p.items()),
        "the γ of the smallest surrogate": lambda p, rho: (lambda g: g * rho + p[g])(min(p, key=p.get)),
    }


# section 2's values as the check receives them: a certificate and attacks below it
CERT = {"phi_mean": {1.0: 1.10, 2.0: 1.05, 5.0: 1.02, 10.0: 1.01, 20.0: 1.005},
        "rhos": [0.02, 0.05, 0.1], "attacked": [0.99, 1.0, 1.05]}


def test_exercise1_accepts_the_solution():
    LESSON.check("def wrm_bound", dict(CERT))


@pytest.mark.parametrize("name", list(wrong_bounds()))
def test_exercise1_rejects_a_wrong_bound(name):
    _, check = exercise("def wrm_bound")
    with pytest.raises(AssertionError):
        run(check, dict(CERT, wrm_bound=wrong_bounds()[name]))


# --- exercise 2: the Lipschitz radius --------------------------------------------------------------

def wrong_radii():
    def make(scale=2 ** 0.5, wrong_zero=True, square=False, second="runner-up"):
        def radius(logits, y, L):
            top = logits.topk(2, dim=1)
            if second == "mean":
                gap = top.values[:, 0] - logits.mean(1)
            else:
                gap = top.values[:, 0] - top.values[:, 1]
            r = gap / (scale * (L ** 2 if square else L))
            return torch.where(top.indices[:, 0] == y, r, torch.zeros_like(r)) if wrong_zero else r
        return radius

    return {"no √2": make(scale=1.0), "2 instead of √2": make(scale=2.0),
            "wrong predictions keep a radius": make(wrong_zero=False), "L²": make(square=True),
            "gap to the mean logit": make(second="mean"), "√2 multiplied": make(scale=2 ** -0.5),
            "L ignored": lambda logits, y, L: make()(logits, y, 1.0),
            "one number for the batch": lambda logits, y, L: make()(logits, y, L).min()}


@pytest.fixture(scope="module")
def exercise2_inputs(bjorck_net):
    x, y = data.digits("test")

    def pgd20(model, x=x, y=y, eps=0.1, norm="linf"):
        return attacks.pgd(model, x, y, eps=eps, alpha=eps / 8, steps=20, norm=norm,
                           generator=torch.Generator().manual_seed(9))

    return {"torch": torch, "math": math, "gnp_radius": gnp_radius, "pgd20": pgd20,
            "x_test": x, "y_test": y, "trained": {"Björck + GroupSort": bjorck_net}}


def test_exercise2_accepts_the_solution(exercise2_inputs):
    LESSON.check("def certified_radius", dict(exercise2_inputs))


@pytest.mark.parametrize("name", list(wrong_radii()))
def test_exercise2_rejects_a_wrong_radius(exercise2_inputs, name):
    _, check = exercise("def certified_radius")
    with pytest.raises(AssertionError):
        run(check, dict(exercise2_inputs, certified_radius=wrong_radii()[name]))


# --- the widget ----------------------------------------------------------------------------------

RESULTS = {"standard": {0.05: {"clean": 0.95, "pgd": 0.6, "worst": 0.55},
                        0.1: {"clean": 0.95, "pgd": 0.4, "worst": 0.3}},
           "PGD-AT": {0.05: {"clean": 0.92, "pgd": 0.8, "worst": 0.79},
                      0.1: {"clean": 0.92, "pgd": 0.7, "worst": 0.66},
                      0.2: {"clean": 0.92, "pgd": 0.3, "worst": 0.2}}}


def test_widget_reads_the_stored_results():
    w = defence_budgets(RESULTS, defence="standard", eps=0.1)
    assert w.state == {"defence": "standard", "eps": 0.1, "clean": 0.95, "pgd": 0.4, "worst": 0.3,
                       "gap": pytest.approx(0.1)}
    w.eps.value = 0.05
    assert w.state["pgd"] == 0.6 and w.state["eps"] == 0.05
    w.defence.value = "PGD-AT"   # its budgets differ: the slider follows, keeping ε = 0.05
    assert list(w.eps.options) == [0.05, 0.1, 0.2]
    assert w.state["defence"] == "PGD-AT" and w.state["eps"] == 0.05 and w.state["worst"] == 0.79
    w.eps.value = 0.2
    assert w.state["worst"] == 0.2
    w.defence.value = "standard"   # 0.2 is not stored for it: the middle budget is shown
    assert w.state["eps"] in (0.05, 0.1) and w.state["defence"] == "standard"


@pytest.mark.parametrize("bad, match", [({}, "non-empty"), ({"a": {}}, "non-empty"),
                                        ({"a": {0.1: {"clean": 1.0}}}, "lacks")])
def test_widget_refuses_malformed_results(bad, match):
    with pytest.raises(ValueError, match=match):
        defence_budgets(bad)


def test_widget_refuses_unknown_choices():
    with pytest.raises(ValueError, match="defence"):
        defence_budgets(RESULTS, defence="nope")
    with pytest.raises(ValueError, match="eps"):
        defence_budgets(RESULTS, defence="standard", eps=0.3)


# --- library pieces ------------------------------------------------------------------------------

def test_wrm_surrogate_bounds_the_loss_of_any_point(trained_mlp, digits):
    """phi_gamma(x) >= loss(x') - gamma ||x' - x||^2 for every x', x itself included, and equals
    that value at the maximiser it returns."""
    x, y = digits
    before = copy.deepcopy(trained_mlp.state_dict())
    phi, x_star = wrm_surrogate(trained_mlp, x, y, gamma=5.0)
    assert phi.shape == (len(x),) and x_star.shape == x.shape
    assert x_star.min() >= 0 and x_star.max() <= 1
    with torch.no_grad():
        clean = F.cross_entropy(trained_mlp(x), y, reduction="none")
        at_star = F.cross_entropy(trained_mlp(x_star), y, reduction="none")
    assert (phi >= clean - 1e-5).all()
    assert torch.allclose(phi, at_star - 5.0 * (x_star - x).flatten(1).norm(dim=1) ** 2, atol=1e-5)
    assert all(torch.equal(v, trained_mlp.state_dict()[k]) for k, v in before.items())
    # the certificate holds against an L2 attack of transport cost rho
    rho = 0.1
    x_adv = attacks.pgd(trained_mlp, x, y, eps=rho ** 0.5, alpha=rho ** 0.5 / 8, steps=20, norm="l2",
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attacked = F.cross_entropy(trained_mlp(x_adv), y).item()
    assert attacked <= 5.0 * rho + phi.mean().item()


def test_wrm_surrogate_checks_its_arguments(trained_mlp, digits):
    with pytest.raises(ValueError, match="gamma"):
        wrm_surrogate(trained_mlp, *digits, gamma=0.0)
    with pytest.raises(ValueError, match="steps"):
        wrm_surrogate(trained_mlp, *digits, gamma=1.0, steps=0)


def test_jacobian_norms_of_a_linear_model_are_its_spectral_norm(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    norms = jacobian_norms(model, x[:5])
    expected = torch.linalg.matrix_norm(model[1].weight.detach(), ord=2)
    assert norms.shape == (5,) and torch.allclose(norms, expected.expand(5), rtol=1e-5)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_weight_landscape_is_the_loss_at_zero_and_leaves_the_model(trained_mlp, digits):
    x, y = digits
    before = copy.deepcopy(trained_mlp.state_dict())
    losses = weight_landscape(trained_mlp, x, y, alphas=[-0.5, 0.0, 0.5], directions=2,
                              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = F.cross_entropy(trained_mlp(x), y).item()
    assert losses.shape == (2, 3)
    assert torch.allclose(losses[:, 1], torch.full((2,), clean), atol=1e-6)
    assert (losses[:, [0, 2]] > clean).all()   # a trained model sits near a minimum
    assert all(torch.equal(v, trained_mlp.state_dict()[k]) for k, v in before.items())

    def fgsm(m, xb, yb):
        return attacks.fgsm(m, xb, yb, eps=0.1)

    adversarial = weight_landscape(trained_mlp, x, y, alphas=[0.0], attack=fgsm,
                                   generator=torch.Generator().manual_seed(0))
    assert adversarial[0, 0] > clean
    with pytest.raises(ValueError, match="alphas"):
        weight_landscape(trained_mlp, x, y, alphas=[])


def test_read_markdown_table_reads_what_markdown_table_writes():
    text = "some words\n\n" + markdown_table(["a", "b c"], [[1, "x"], [2.5, "y | z"[:1]]]) + "\n\nafter"
    rows = read_markdown_table(text)
    assert rows == [{"a": "1", "b c": "x"}, {"a": "2.5", "b c": "y"}]
    with pytest.raises(ValueError, match="no markdown table"):
        read_markdown_table("nothing here")


def test_budget_results_feed_the_widget(trained_mlp, digits):
    x, y = digits

    def pgd(m, xb, yb, eps):
        return attacks.pgd(m, xb, yb, eps=eps, alpha=eps / 4, steps=5,
                           generator=torch.Generator().manual_seed(1))

    def members(eps):
        return default_attacks(eps=eps, steps=5, square_queries=20,
                               generator=torch.Generator().manual_seed(2))

    table = budget_results({"mlp": trained_mlp}, x, y, eps_list=[0.0, 0.1], attack=pgd,
                           members=members)
    clean = train.evaluate(trained_mlp, (x, y))
    assert table["mlp"][0.0] == {"clean": clean, "pgd": clean, "worst": clean}
    row = table["mlp"][0.1]
    assert row["pgd"] == train.evaluate(trained_mlp, (pgd(trained_mlp, x, y, 0.1), y))
    assert row["worst"] == worst_case(trained_mlp, x, y, eps=0.1, attacks=members(0.1)).robust_accuracy
    assert defence_budgets(table, eps=0.1).state["worst"] == row["worst"]
    with pytest.raises(ValueError, match="models"):
        budget_results({}, x, y, eps_list=[0.1], attack=pgd, members=members)
    with pytest.raises(TypeError, match="attack"):
        budget_results({"mlp": trained_mlp}, x, y, eps_list=[0.1], attack=None, members=members)
