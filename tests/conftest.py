"""Fixtures and the hygiene kit shared by every test: models that are messy on purpose, a
snapshot of a model's state, and checks that a call leaves model and inputs as found."""

import copy

import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from robustlab import data, models
from robustlab.norms import flat_norm


@pytest.fixture(scope="session")
def digits_test():
    return data.digits("test")


@pytest.fixture(scope="session")
def digits_cnn():
    return models.pretrained("digits-cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    return models.pretrained("digits-mlp")


@pytest.fixture(scope="session")
def digits_train():
    return data.digits("train")


@pytest.fixture(scope="session")
def digits_resnet():
    return models.pretrained("digits-resnet")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The models here are tiny: intra-op threads gain nothing and, when the two cores of a CI
    machine are busy, their OpenMP spin-waits cost 10x or more."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):  # scipy's L-BFGS-B, HiGHS: tiny vectors too
        yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def messy_model(seed: int = 0) -> nn.Module:
    """A small digits model with dropout and batch norm, left in train mode, one frozen layer,
    and stale gradients: everything an attack must leave as it found it."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 64, 10))
    m(torch.rand(16, 1, 8, 8))  # give batch norm non-trivial running statistics
    m.train()
    m[0].weight.requires_grad_(False)
    for p in m.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    return m


def nested_modes() -> tuple[nn.Module, nn.Module]:
    """``(wrapped, net)``: a messy network in train mode inside a wrapper in eval mode, a mix
    that only a per-submodule save and restore of the modes leaves as found."""
    net = messy_model()
    wrapped = nn.Sequential(net)
    wrapped.eval()
    net.train()
    return wrapped, net


class Sqrt(nn.Module):
    """A model with an infinite input gradient at 0: sqrt(x) feeds a linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1).sqrt())


class CountingModel(nn.Module):
    """Counts the images it sees, and refuses to run where autograd could record the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        if torch.is_grad_enabled():
            raise AssertionError("the model was called with gradients enabled")
        self.images += len(x)
        return self.model(x)


def linear_classifier(k: int = 10, d: int = 64, seed: int = 0) -> nn.Module:
    """An affine classifier z = W x + b on (N, 1, 8, 8) inputs, for exact analytic answers."""
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    return nn.Sequential(nn.Flatten(), lin).eval()


def seeded(seed: int = 0) -> torch.Generator:
    """A fresh CPU generator: the attacks draw on the CPU and move the draws to x's device."""
    return torch.Generator().manual_seed(seed)


def snapshot(model: nn.Module):
    return {
        "state": copy.deepcopy(model.state_dict()),
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "flags": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def assert_unchanged(model: nn.Module, before) -> None:
    after = snapshot(model)
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"the call changed {k}"
    for g0, g1 in zip(before["grads"], after["grads"]):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1), "the call changed a .grad"
    assert before["flags"] == after["flags"], "the call changed requires_grad flags"
    assert before["modes"] == after["modes"], "the call changed a submodule's train/eval mode"


def leaves_as_found(fn, model: nn.Module, *inputs: torch.Tensor):
    """Call ``fn()`` and check it left `model` (parameters, buffers, .grad, requires_grad,
    every submodule's mode) and the tensors `inputs` exactly as found; return its result.

    The hygiene rule of DESIGN.md section 3 for attacks, evaluators, defences and verifiers."""
    before, copies = snapshot(model), [t.clone() for t in inputs]
    out = fn()
    assert_unchanged(model, before)
    for t, t0 in zip(inputs, copies):
        assert torch.equal(t, t0), "the call changed its input in place"
    return out


def check_conventions(attack, x, y, *, ball=None, model=None, **kw):
    """Run `attack(model, x, y, **kw)` on a messy model and check every convention.

    - output: same shape, dtype, device as x; inside [0, 1]; inside the ball ``(eps, norm)``,
      which defaults to ``(kw["eps"], kw.get("norm", "linf"))`` when the attack takes eps
    - a black-box attack returns ``(x_adv, queries)``, queries (N,) long counts on x's device
    - x, parameters, buffers, .grad, requires_grad and train/eval mode all unchanged
    - works inside torch.no_grad()
    Returns what the attack returned: x_adv, or ``(x_adv, queries)``.
    """
    model = messy_model() if model is None else model
    x0, before = x.clone(), snapshot(model)
    with torch.no_grad():
        out = attack(model, x, y, **kw)
    x_adv = out
    if isinstance(out, tuple):
        x_adv, queries = out
        assert queries.shape == (len(x),) and queries.dtype == torch.long
        assert queries.device == x.device and (queries >= 0).all()
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert torch.equal(x, x0), "attack changed its input in place"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "x_adv leaves [0, 1]"
    if ball is None and "eps" in kw:
        ball = (kw["eps"], kw.get("norm", "linf"))
    if ball is not None:
        eps, norm = ball
        dist = flat_norm(x_adv - x, norm)
        assert (dist <= eps * (1 + 1e-5) + 1e-6).all(), f"x_adv leaves the {norm} ball: {dist.max()}"
    assert_unchanged(model, before)
    return out


@pytest.fixture
def batch(digits_test):
    x, y = digits_test
    return x[:16].clone(), y[:16].clone()


@pytest.fixture
def eight(digits_test):
    x, y = digits_test
    return x[:8].clone(), y[:8].clone()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device the tests can run on: the CPU, and CUDA when this machine has it."""
    return request.param


def _other_seed(item) -> bool:
    """Whether `item` is a run of a seed-parametrised test with a seed other than the smallest of
    its list (`@pytest.mark.parametrize("seed", [0, 1, 2])`: the runs with 1 and 2)."""
    value = getattr(item, "callspec", None) and item.callspec.params.get("seed")
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    for mark in item.iter_markers("parametrize"):
        if mark.args and mark.args[0] == "seed":
            seeds = [v for v in mark.args[1] if isinstance(v, int) and not isinstance(v, bool)]
            return bool(seeds) and value != min(seeds)
    return False


def pytest_collection_modifyitems(config, items):
    """nbval re-runs each stored lesson in its quick mode (FAST = True in the `parameters` cell):
    the outputs it compares (cells tagged nbval-check-output, listed with their reasons in
    tests/test_lessons.py) are the same in both modes, and the full mode of every lesson runs in
    `make lessons` and `make gpu-check`, not on each `make test`.

    A test parametrised over seeds runs its first seed in `make test` and the others in
    `make check` (marked `matrix`), as the lessons do: the bands hold for every seed, and each
    seed is another full training or attack run."""
    for item in items:
        if _other_seed(item):
            item.add_marker(pytest.mark.matrix)
        cell = getattr(item, "cell", None)
        if cell is not None and "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = cell.source.replace("FAST = False", "FAST = True", 1)
