"""The core on each device (`device` fixture): fit with a checkpoint and a resume that restores
the CUDA random state too, evaluate, predict, the generators; then every public evaluator; and a
test that every public callable of attacks, defences, verify and evaluate has a device case (a
new method must be added to its package's test_devices.py, or named here with the reason it has
no device).
"""

import inspect

import pytest
import torch

import robustlab
from robustlab import attacks as A
from robustlab import data, models
from robustlab import evaluate as E
from robustlab.defences import RandomResizePad, median_filter, pgd_at
from robustlab.norms import random_in_ball
from robustlab.train import evaluate, fit, predict

from .attacks import test_devices as attack_cases
from .conftest import seeded
from .defences import test_devices as defence_cases
from .devices import Case, check_case, cnn_setup
from .stats import test_devices as stats_cases
from .verify import test_devices as verify_cases


def setup(device):
    """A fresh copy of the CNN and 8 digits, on `device`."""
    return cnn_setup(device, 8)


def mlp(device):
    torch.manual_seed(0)
    return models.MLP((1, 8, 8), (16,), 10).to(device)


def _fit_resume(device, tmp):
    """Two epochs of PGD-AT with random starts from the global RNG (the CUDA one on a GPU),
    straight, and as one epoch plus a resume from its checkpoint: the resumed run must equal
    the straight one exactly, which needs the checkpoint to restore the device's RNG state."""
    x, y = data.digits("train")
    train = (x[:64].to(device), y[:64].to(device))

    def run(epochs, **kw):
        torch.manual_seed(1)  # and every CUDA device's stream
        model = mlp(device)
        objective = pgd_at(eps=0.1, alpha=0.05, steps=2)  # no generator: the global stream
        hist = fit(model, train, epochs=epochs, batch_size=32, objective=objective, lr=1e-2,
                   progress=False, device=device, **kw)
        return model, hist

    straight, _ = run(2)
    run(1, checkpoint=tmp / "run.pt")
    torch.manual_seed(7)  # a resumed run must not depend on the state it starts in
    resumed, hist = run(2, checkpoint=tmp / "run.pt", resume=True)
    (tmp / "run.pt").unlink()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), f"resume changed {key}"
    assert next(resumed.parameters()).device.type == torch.device(device).type
    return resumed, [row["loss"] for row in hist]


def _generators(device):
    """robustlab.generator on the data's device draws there (the device's own stream);
    seed_everything seeds it too."""
    g = robustlab.generator(3, device=device)
    robustlab.seed_everything(3)
    return torch.rand(5, generator=g, device=g.device), torch.rand(5, device=device)


def _reproducible_draws(device):
    """A CPU generator is the reproducible-across-devices mode: the draws are the same numbers
    whatever the data's device (here, a random start in the ball and a random resize)."""
    x = setup(device)[1]
    return (random_in_ball(x, 0.1, "linf", robustlab.generator(3)),
            RandomResizePad(generator=robustlab.generator(3))(x))


def _zoo_beyond(device):
    """Stored models beyond images loaded onto the device (the GCN with its graph, the GRU
    reading the tokenizer's ids, the DGCNN on test clouds), and the lessons' entry point."""
    from robustlab import zoo_beyond
    from robustlab.pointcloud_data import shapes
    from robustlab.text_data import sentiment_corpus

    gcn, graph = zoo_beyond.load("sbm-gcn", device=device)
    gru, tokenizer = zoo_beyond.stored_or_trained("sentiment-word-gru", device=device)
    dgcnn = zoo_beyond.load("shapes-dgcnn", device=device)
    ids = tokenizer.encode(sentiment_corpus("test")[0][:8]).to(device)
    return (gcn(graph.features, graph.adjacency), gru(ids), dgcnn(shapes("test")[0][:4].to(device)))


CORE = {
    "evaluate": Case(lambda d: evaluate(*(lambda m, x, y: (m, (x, y)))(*setup(d)), batch_size=3)),
    "predict": Case(lambda d: predict(*setup(d)[:2], batch_size=3), atol=1e-5),
    "generator": Case(_generators, across_devices=False),
    "generator-cpu": Case(_reproducible_draws, atol=1e-6),
    "default_device": Case(lambda d: torch.zeros(2, device=robustlab.default_device(d))),
    "zoo_beyond": Case(_zoo_beyond, atol=1e-4),
}


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_on_device(name, device):
    check_case(CORE[name], device)


def test_fit_checkpoint_resume_on_device(device, tmp_path):
    """On CUDA the random starts come from the CUDA stream: the resumed run is compared with a
    second CUDA run, not with the CPU's draws."""
    check_case(Case(lambda d: _fit_resume(d, tmp_path), across_devices=False, atol=1e-5), device)


def _fgsm(model, x, y, eps=0.1, **kw):
    return A.fgsm(model, x, y, eps=eps, **kw)


def _pgd(model, x, y, eps=0.1, **kw):
    return A.pgd(model, x, y, eps=eps, alpha=eps / 2, steps=3, generator=seeded(), **kw)


def _square(model, x, y, eps=0.1, **kw):
    return A.square(model, x, y, eps=eps, max_queries=20, generator=seeded(), **kw)


def _masks(device):
    model, x, y = setup(device)
    clean = predict(model, x).argmax(1) == y
    x_adv, queries = _square(model, x, y)
    success = predict(model, x_adv).argmax(1) != y
    return (E.robust_mask(model, x, y, _pgd, 0.1, clean),
            E.check_adversarial(x, x_adv, "square", 0.1),
            E.distortion_stats(x, x_adv, success), E.query_stats(queries, success))


def _transfer(device):
    model, x, y = setup(device)
    return E.transfer_matrix({"cnn": model, "mlp": mlp(device).eval()}, x, y, _fgsm, eps=0.1)


def _worst(device):
    model, x, y = setup(device)
    members = E.default_attacks(eps=0.1, steps=3, square_queries=20, generator=seeded())
    return E.worst_case(model, x, y, eps=0.1, attacks=members)


def _break(device):
    model, x, y = setup(device)
    defences = {"median": lambda t: median_filter(t, 3),
                "resize": RandomResizePad(generator=seeded())}
    return (E.break_transforms(model, x, y, defences, eps=0.1, steps=2, eot_samples=2, draws=2,
                               generator=seeded()),
            [E.is_random(t, x) for t in defences.values()])


def _saliency_curves(device):
    model, x, y = setup(device)
    return E.deletion_insertion(model, x, y, E.input_saliency(model, x, y), steps=4)


# adversarial examples of the searches inside (Square, the ensemble's members) may take another
# path for one image in a near tie (tests/attacks/test_devices.py's SEARCH); every single
# number (an accuracy, a mean distortion) must agree within atol
EVALUATORS = dict(atol=1e-5, frac=0.3)
EVALUATE = {
    "robust_accuracy": Case(lambda d: E.robust_accuracy(*setup(d), _pgd, eps_list=[0.0, 0.1]),
                            **EVALUATORS),
    "RobustCurve": Case(lambda d: E.robust_accuracy(*setup(d), _fgsm, eps_list=[0.05, 0.1]),
                        **EVALUATORS),
    "robust_mask": Case(_masks, **EVALUATORS),
    "check_adversarial": Case(_masks, **EVALUATORS),
    "distortion_stats": Case(_masks, **EVALUATORS),
    "query_stats": Case(_masks, **EVALUATORS),
    "compare_attacks": Case(lambda d: E.compare_attacks(*setup(d), {"fgsm": _fgsm, "pgd": _pgd,
                                                                     "square": _square}),
                            **EVALUATORS),
    "Comparison": Case(lambda d: E.compare_attacks(*setup(d), {"fgsm": _fgsm}), **EVALUATORS),
    "transfer_matrix": Case(_transfer, **EVALUATORS),
    "TransferResult": Case(_transfer, **EVALUATORS),
    "worst_case": Case(_worst, **EVALUATORS),
    "default_attacks": Case(_worst, **EVALUATORS),
    "WorstCase": Case(_worst, **EVALUATORS),
    "break_transforms": Case(_break, **EVALUATORS),
    "TransformBreak": Case(_break, **EVALUATORS),
    "is_random": Case(_break, **EVALUATORS),
    "budget_results": Case(lambda d: E.budget_results(
        {"cnn": setup(d)[0]}, *setup(d)[1:], eps_list=[0.0, 0.1], attack=_pgd,
        members=lambda e: E.default_attacks(eps=e, steps=3, square_queries=20, generator=seeded())),
        **EVALUATORS),
    # PGD's smallest successful radius, per example: bisection brackets on x's device
    "pgd_distortion": Case(lambda d: E.pgd_distortion(*setup(d), high=1.0, bisections=4, steps=5),
                           **EVALUATORS),
    "PGDDistortion": Case(lambda d: E.pgd_distortion(*setup(d), high=1.0, bisections=4, steps=5),
                          **EVALUATORS),
    "jacobian_norms": Case(lambda d: E.jacobian_norms(*setup(d)[:2]), atol=1e-4),
    # a table of mean losses, one number per (direction, alpha): kept on the host
    "weight_landscape": Case(lambda d: E.weight_landscape(*setup(d), alphas=[-0.5, 0.0, 0.5],
                                                          attack=_pgd, directions=2,
                                                          generator=seeded()),
                             atol=1e-4, host=True),
    # saliency (evaluate/saliency.py)
    "input_saliency": Case(lambda d: E.input_saliency(*setup(d)), atol=1e-4),
    "saliency_alignment": Case(lambda d: E.saliency_alignment(E.input_saliency(*setup(d)), setup(d)[1]),
                               atol=1e-4),
    "deletion_insertion": Case(_saliency_curves, atol=1e-4),
    "SaliencyScores": Case(_saliency_curves, atol=1e-4),
    # the toy distributions of evaluate/theory.py: data drawn with a CPU generator, moved to d
    "tsipras_data": Case(lambda d: E.tsipras_data(8, d=4, generator=seeded(), device=d)),
    "schmidt_data": Case(lambda d: E.schmidt_data(8, d=4, sigma=1.0, generator=seeded(), device=d)),
    "mean_classifier": Case(lambda d: E.mean_classifier(*E.schmidt_data(8, d=4, sigma=1.0,
                                                                        generator=seeded(), device=d))),
    "linear_robust_fit": Case(lambda d: E.linear_robust_fit(*E.tsipras_data(16, d=4, generator=seeded(),
                                                                            device=d), eps=0.5, steps=5),
                              atol=1e-9),
    "tsipras_bayes": Case(lambda d: E.tsipras_bayes(d=4, p=0.9, eta=0.5), host=True),
    # closed forms: numbers on the host, from weights on the device
    "linear_accuracy_tsipras": Case(lambda d: E.linear_accuracy_tsipras(torch.ones(5, device=d), p=0.9,
                                                                        eta=0.5, eps=0.1), host=True),
    "linear_accuracy_schmidt": Case(lambda d: E.linear_accuracy_schmidt(
        torch.ones(4, device=d), theta=torch.ones(4, device=d), sigma=1.0, eps=0.1), host=True),
    "tsipras_bound": Case(lambda d: E.tsipras_bound(0.99, p=0.9), host=True),
}
NOT_ON_A_DEVICE = {
    "Attack": "a type alias (Callable), nothing to run",
    "Tabular": "the base class of the result tables: printing only",
    "markdown_table": "formats numbers as text: no tensor, no device",
}


@pytest.mark.parametrize("name", sorted(EVALUATE))
def test_evaluator_on_device(name, device):
    check_case(EVALUATE[name], device)


def public_callables(package) -> set[str]:
    return {name for name in package.__all__ if callable(getattr(package, name))
            and not inspect.ismodule(getattr(package, name))}


PACKAGES = {
    "attacks": (robustlab.attacks, set(attack_cases.CASES), {}),
    "defences": (robustlab.defences, defence_cases.COVERED, defence_cases.NOT_ON_A_DEVICE),
    "verify": (robustlab.verify, set(verify_cases.CASES), verify_cases.NOT_ON_A_DEVICE),
    "evaluate": (robustlab.evaluate, set(EVALUATE), NOT_ON_A_DEVICE),
    "stats": (robustlab.stats, set(stats_cases.CASES), stats_cases.NOT_ON_A_DEVICE),
}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_public_callable_has_a_device_case(package):
    """A public callable without a case in tests/<package>/test_devices.py (or a reason it has
    no device) fails here: a method added to the package must be added to its device tests."""
    module, covered, exempt = PACKAGES[package]
    missing = public_callables(module) - covered - set(exempt)
    assert not missing, f"robustlab.{package}: no device case for {sorted(missing)}"
    stale = set(exempt) & covered | set(exempt) - public_callables(module)
    assert not stale, f"robustlab.{package}: exempt names that are covered or gone: {stale}"
