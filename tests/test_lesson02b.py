"""Lesson 02b's exercises 4-6: each check rejects wrong answers and accepts the solution.

The check cell of exercise 4 runs here, outside the notebook, on transfer matrices with the zoo's
three models: once with the lesson's own solution on a matrix where it is right (it must pass),
and with planted wrong answers or a matrix where the solution is wrong (it must fail with an
AssertionError), so a check that cannot fail is caught. Exercises 5 (one step of the universal
perturbation's Algorithm 1) and 6 (design an evaluation of a stacked defence within a budget) run
on the zoo's CNN, with planted wrong steps and wrong designs, plain PGD among them.
"""

import ast
import functools

import pytest
import torch

from robustlab.evaluate import TransferResult
from robustlab.norms import project

from .lesson_cells import Lesson

LESSON = Lesson("02b-spatial-universal.ipynb")
NAMES = ["digits-cnn", "digits-mlp", "digits-resnet"]
# rows: source; columns: target. The stored run's shape: resnet hardest from the CNN, the MLP
# the best source for it.
STORED = [[0.995, 0.687, 0.596], [0.765, 0.995, 0.621], [0.617, 0.605, 0.995]]


def matrix(rate) -> TransferResult:
    n = len(rate)
    return TransferResult(list(NAMES), [list(r) for r in rate], torch.zeros(n, n, 1, dtype=torch.bool),
                          torch.ones(n, 1, dtype=torch.bool), "pgd")


def run_check(answers: dict | None, transfer: TransferResult) -> None:
    LESSON.check("hardest_from_cnn = ", {"transfer": transfer}, answers)


def test_the_solution_passes():
    run_check(None, matrix(STORED))


WRONG = {
    "hardest: the easiest target": {"hardest_from_cnn": "digits-mlp"},
    "hardest: the source itself": {"hardest_from_cnn": "digits-cnn"},
    "hardest: not a zoo name": {"hardest_from_cnn": "resnet"},
    "best source: the weaker one": {"best_source_for_cnn": "digits-resnet"},
    "best source: the CNN itself": {"best_source_for_cnn": "digits-cnn"},
}


@pytest.mark.parametrize("answers", WRONG.values(), ids=list(WRONG))
def test_a_wrong_answer_fails(answers):
    with pytest.raises(AssertionError):
        run_check(answers, matrix(STORED))


@pytest.mark.parametrize("swap", ["row", "column"])
def test_the_check_reads_the_matrix_not_a_fixed_answer(swap):
    """On a matrix whose row (or column) of the CNN is swapped, the stored solution is wrong."""
    rate = [list(r) for r in STORED]
    if swap == "row":
        rate[0][1], rate[0][2] = rate[0][2], rate[0][1]
    else:
        rate[1][0], rate[2][0] = rate[2][0], rate[1][0]
    with pytest.raises(AssertionError):
        run_check(None, matrix(rate))


# Exercises 5 and 6 run on the zoo's CNN. Their checks need functions that earlier cells of the
# lesson define; `definitions` takes only the imports, functions and classes of such a cell, so
# that the lesson's own code is used without re-running its experiments.

def definitions(marker: str) -> str:
    """The imports, function and class definitions of the lesson cell holding `marker`."""
    source = next(s for s in LESSON.cells() if marker in s)
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    module = ast.parse(source)
    module.body = [node for node in module.body if isinstance(node, keep)]
    return ast.unparse(module)


@pytest.fixture(scope="module")
def zoo_cnn():
    import robustlab
    from robustlab import attacks, data, evaluate, models, train
    from robustlab.attacks import BPDA, EOT
    from robustlab.defences import Defended, RandomResizePad, bit_depth

    x_train, y_train = data.digits("train")
    x_test, y_test = data.digits("test")
    cnn = models.pretrained("digits-cnn")
    return {"robustlab": robustlab, "attacks": attacks, "evaluate": evaluate, "train": train,
            "torch": torch, "nn": torch.nn, "BPDA": BPDA, "EOT": EOT, "Defended": Defended,
            "RandomResizePad": RandomResizePad, "bit_depth": bit_depth, "SEED": 0, "cnn": cnn,
            "x_train": x_train, "x_test": x_test, "y_test": y_test,
            "pred": {"digits-cnn": train.predict(cnn, x_test).argmax(1)}}


# Exercise 5: one step of Algorithm 1. The check tries the step on single digits, then rebuilds
# attacks.uap's v with it; here on 80 training digits (the lesson uses 200) to keep the test short.

@pytest.fixture(scope="module")
def uap_inputs(zoo_cnn):
    ns = dict(zoo_cnn, N_UAP=80, UAP_PASSES=2)
    attacks, cnn = ns["attacks"], ns["cnn"]
    ns["p_uap"] = ns["train"].predict(cnn, ns["x_train"][:80]).argmax(1)
    ns["v_uap"] = attacks.uap(cnn, ns["x_train"][:80], ns["p_uap"], eps=0.3, max_passes=2,
                              generator=ns["robustlab"].generator(0))
    ns["uap_fooling"] = attacks.fooling_rate(cnn, (ns["x_test"] + ns["v_uap"]).clamp(0, 1),
                                             ns["pred"]["digits-cnn"])
    return ns


def step_with(update):
    """A uap_step that is right except for how it turns v and DeepFool's r into the new v."""
    from robustlab import attacks, train

    def uap_step(model, x_i, label, v, xi):
        x_v = (x_i + v).clamp(0, 1)
        if train.predict(model, x_v).argmax(1) != label:
            return v
        return update(v, attacks.deepfool(model, x_v, label) - x_v, xi, model, x_i, label)
    return uap_step


def deepfool_from_the_clean_image(v, r, xi, model, x_i, label):
    from robustlab import attacks
    return (v + attacks.deepfool(model, x_i, label) - x_i).clamp(-xi, xi)


def update_even_when_fooled(model, x_i, label, v, xi):
    """Algorithm 1 without its test: DeepFool's step is added whether or not v fools x_i."""
    from robustlab import attacks
    x_v = (x_i + v).clamp(0, 1)
    return (v + attacks.deepfool(model, x_v, label) - x_v).clamp(-xi, xi)


def reset_when_fooled(model, x_i, label, v, xi):
    from robustlab import train
    x_v = (x_i + v).clamp(0, 1)
    if train.predict(model, x_v).argmax(1) != label:
        return torch.zeros_like(v)
    return step_with(lambda v, r, xi, *_: (v + r).clamp(-xi, xi))(model, x_i, label, v, xi)


WRONG_STEPS = {
    "no projection": step_with(lambda v, r, xi, *_: v + r),
    "the L2 projection": step_with(lambda v, r, xi, *_: project(v + r, xi, "l2")),
    "away from the boundary": step_with(lambda v, r, xi, *_: (v - r).clamp(-xi, xi)),
    "DeepFool from the clean image, not from x + v": step_with(deepfool_from_the_clean_image),
    "r replaces v instead of adding to it": step_with(lambda v, r, xi, *_: r.clamp(-xi, xi)),
    "v changes on an image it already fools": update_even_when_fooled,
    "v starts again from zero on an image it already fools": reset_when_fooled,
}


def test_uap_step_solution_passes(uap_inputs):
    LESSON.check("def uap_step", uap_inputs)


@pytest.mark.parametrize("step", WRONG_STEPS.values(), ids=list(WRONG_STEPS))
def test_uap_step_rejects_a_wrong_step(uap_inputs, step):
    with pytest.raises(AssertionError):
        LESSON.check("def uap_step", uap_inputs, {"uap_step": step})


# Exercise 6: design an evaluation of the stacked defence. Section 4's definitions (quantiser,
# random resize-pad, pgd_on, MeanOverDraws) come from the lesson; the setup cell of the exercise
# runs as it is; the fast mode's sizes (100 digits, 10 judging draws, 8 EOT draws).

@pytest.fixture(scope="module")
def design_inputs(zoo_cnn):
    ns = dict(zoo_cnn, N_DEF=100, EVAL_DRAWS=10, EOT_SAMPLES=8, partial=functools.partial)
    ns["xd"], ns["yd"] = ns["x_test"][:100], ns["y_test"][:100]
    for marker in ("def quantise", "def resize_pad", "class MeanOverDraws"):
        LESSON.run(definitions(marker), ns)
    ns["quantised"] = ns["Defended"](ns["cnn"], ns["quantise"])
    LESSON.run(next(s for s in LESSON.cells() if "class NetworkEvaluations" in s), ns)
    return ns


def naive_pgd(ns):
    return {"PGD": ns["pgd_on"](None, ns["E"])}


def eot_without_bpda(ns):
    randomised_quantised = ns["Defended"](ns["quantised"], ns["resize_pad"](1))
    return {"EOT + PGD": ns["pgd_on"](ns["EOT"](randomised_quantised, samples=8), ns["E"])}


def eot_on_every_digit_with_many_draws(ns):
    """Strong enough, but 32 draws x 20 steps on every digit is over the budget."""
    surrogate = ns["Defended"](ns["BPDA"](ns["cnn"], ns["quantise"]), ns["resize_pad"](1))
    return {"BPDA + EOT + PGD": ns["pgd_on"](ns["EOT"](surrogate, samples=32), ns["E"])}


WRONG_DESIGNS = {
    "plain PGD only": naive_pgd,
    "EOT without BPDA (the gradient stays zero)": eot_without_bpda,
    "over the budget": eot_on_every_digit_with_many_draws,
    "no attack at all": lambda ns: {},
    "a list, not a dict": lambda ns: list(naive_pgd(ns).values()),
}


def test_design_solution_passes(design_inputs):
    LESSON.check("my_attacks = {", design_inputs)


@pytest.mark.parametrize("design", WRONG_DESIGNS.values(), ids=list(WRONG_DESIGNS))
def test_design_rejects_a_wrong_design(design_inputs, design):
    with pytest.raises(AssertionError):
        LESSON.check("my_attacks = {", design_inputs, {"my_attacks": design(design_inputs)})


def test_the_evaluation_counter_counts_and_leaves_the_model_as_found(design_inputs):
    """NetworkEvaluations counts every image through the CNN while an attack runs, nothing after."""
    ns = design_inputs
    counter = ns["NetworkEvaluations"]()
    ten = ns["xd"][:10]
    attack = counter.wrap(lambda model, x, y: (model(x), model(x.repeat(3, 1, 1, 1)), x)[-1])
    attack(ns["cnn"], ten, ns["yd"][:10])
    assert counter.images == 40
    ns["cnn"](ten)
    assert counter.images == 40 and not ns["cnn"]._forward_hooks
