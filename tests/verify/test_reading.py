"""The verifiers read what runs and answer for the model in its own dtype (issue 15): a reused
module is read as often as it runs; subclasses with their own forward, replaced forwards and
hooks are refused by name; a computation the reader cannot see is caught by comparing forwards;
"verified" beats the model's rounding bound; counterexamples stay misclassified alone, in a
batch and in float64; min_distortion keeps what it proved; one-logit models get a clear error."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from robustlab.data import digits
from robustlab.models import pretrained
from robustlab.verify import branch_and_bound, crown, interval, milp, min_distortion, read_network, reluplex
from robustlab.verify import distortion as distortion_module
from robustlab.verify.rounding import as_float64, read_exact, rounding_bound, unit_roundoff

from .conftest import ShiftReLU, TripleLinear, labelled_points, tiny_mlps

COMPLETE = (milp, reluplex, branch_and_bound)


@pytest.fixture(scope="module")
def mlp_parts():
    model = pretrained("digits-mlp")
    return [m for m in model if isinstance(m, nn.Linear)]


@pytest.fixture(scope="module")
def test_digits():
    return digits("test")


def shared_relu(lins):
    act = nn.ReLU()
    return nn.Sequential(nn.Flatten(), lins[0], act, lins[1], act, lins[2]).eval()


def test_a_reused_instance_is_read_each_time_it_runs(mlp_parts, test_digits):
    x, _ = test_digits
    model = shared_relu(mlp_parts)
    net = read_network(model, (1, 8, 8))
    assert sum(type(layer).__name__ == "ReLU" for layer in net.layers) == 2
    with torch.no_grad():
        z = model(x)
    assert interval(model, x, eps=0.0).contains(z).all()
    assert crown(model, x, eps=0.0).contains(z).all()


def test_the_reused_relu_model_is_not_verified_where_pgd_breaks_it(mlp_parts, test_digits):
    x, y = test_digits
    (verdict,) = milp(shared_relu(mlp_parts), x[300:301], y[300:301], eps=0.1)
    assert verdict.status == "falsified"


class SneakyConv(nn.Conv2d):
    """Keeps Conv2d's forward but changes the convolution it calls: the forward comparison sees it."""

    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight, bias) + 0.5


def hostile(mlp_parts):
    lin1, lin2, lin3 = mlp_parts
    hooked = nn.Linear(32, 10)
    hooked.load_state_dict(lin3.state_dict())
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    pre = nn.ReLU()
    pre.register_forward_pre_hook(lambda m, i: (i[0] + 1,))
    replaced = nn.ReLU()
    replaced.forward = lambda x: torch.relu(x) + 1
    triple = TripleLinear(32, 10)
    triple.load_state_dict(lin3.state_dict())
    return {
        "ShiftReLU": nn.Sequential(nn.Flatten(), lin1, ShiftReLU(), lin2, ShiftReLU(), lin3),
        "TripleLinear": nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2, nn.ReLU(), triple),
        "forward hooks": nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2, nn.ReLU(), hooked),
        "forward pre hooks": nn.Sequential(nn.Flatten(), lin1, pre, lin2, nn.ReLU(), lin3),
        "replaced on the instance": nn.Sequential(nn.Flatten(), lin1, replaced, lin2, nn.ReLU(), lin3),
    }


@pytest.mark.parametrize("kind", ["ShiftReLU", "TripleLinear", "forward hooks", "forward pre hooks",
                                  "replaced on the instance"])
def test_what_the_reader_cannot_read_exactly_is_refused_by_name(mlp_parts, test_digits, kind):
    x, y = test_digits
    model = hostile(mlp_parts)[kind].eval()
    for verify in (lambda: interval(model, x[:2], eps=0.05), lambda: crown(model, x[:2], eps=0.05),
                   lambda: milp(model, x[276:277], y[276:277], eps=0.08)):
        with pytest.raises(ValueError, match=kind.split()[0]):
            verify()


def test_global_hooks_are_refused(mlp_parts, test_digits):
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(ValueError, match="global forward hooks"):
            interval(shared_relu(mlp_parts), test_digits[0][:1], eps=0.0)
    finally:
        handle.remove()


def test_a_subclass_overriding_a_helper_of_forward_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(SneakyConv(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    with pytest.raises(ValueError, match="overrides _conv_forward"):
        interval(model, torch.rand(2, 1, 8, 8), eps=0.01)


def test_a_computation_the_reader_cannot_see_is_caught_by_the_forward_comparison(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    relu = torch.nn.functional.relu
    monkeypatch.setattr(torch.nn.functional, "relu", lambda z, inplace=False: relu(z) + 0.1)
    read_network(model, (1, 8, 8))  # the chain itself looks fine
    with pytest.raises(ValueError, match="does not compute what its forward computes"):
        interval(model, x, eps=0.01)
    with pytest.raises(ValueError, match="does not compute what its forward computes"):
        milp(model, x, torch.zeros(2, dtype=torch.long), eps=0.01)


def test_parametrised_layers_keep_their_forward_and_are_read(mlp_parts, test_digits):
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w
    lin = nn.Linear(32, 10)
    lin.load_state_dict(mlp_parts[2].state_dict())
    parametrize.register_parametrization(lin, "weight", Double())
    model = nn.Sequential(nn.Flatten(), mlp_parts[0], nn.ReLU(), mlp_parts[1], nn.ReLU(), lin).eval()
    x = test_digits[0][:20]
    with torch.no_grad():
        assert interval(model, x, eps=0.0).contains(model(x)).all()


def cancellation():
    """Issue 15, item 3: large terms that cancel, so the float32 model misclassifies much of a ball
    where the exact network keeps its class by 2.3e-5."""
    l1, l2 = nn.Linear(1, 2), nn.Linear(2, 2)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1e4], [3e4]]))
        l1.bias.copy_(torch.tensor([1e4, 3e4]))
        l2.weight.copy_(torch.tensor([[1.0, -1 / 3], [0.0, 0.0]]))
        l2.bias.copy_(torch.tensor([5e-4, 0.0]))
    return nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2).eval()


def test_cancellation_is_never_verified_in_float32():
    model, x = cancellation(), torch.full((1, 1, 1, 1), 0.5)
    y = torch.tensor([0])
    grid = torch.linspace(0.4, 0.6, 20001).view(-1, 1, 1, 1)
    with torch.no_grad():
        assert (model(grid).argmax(1) != y).sum() > 1000  # the float32 model really is broken
    for verify in COMPLETE:
        (verdict,) = verify(model, x, y, eps=0.1)
        assert verdict.status != "verified", (verify.__name__, verdict)
        if verdict.status == "falsified":
            assert model(verdict.counterexample[None]).argmax(1).item() != 0


def test_the_rounding_bound_covers_float32_against_float64():
    model = pretrained("digits-mlp")
    x = digits("test")[0]
    net, u = read_exact(model, x, x)
    net = as_float64(net)
    assert u == 2.0 ** -24 == unit_roundoff(torch.float32)
    with torch.no_grad():
        err = (model(x).double() - net(x.double())).abs()
    bound = rounding_bound(net, x.double(), x.double(), u)
    assert (err <= bound).all() and err.max() > 0
    assert bound.max() < 1e-2  # worst-case (Higham), far above the 4e-6 seen, but not vacuous


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_min_distortion_counterexamples_stay_misclassified(norm):
    model, shape = tiny_mlps()["9-12-4"]
    x, y = labelled_points(model, shape, 6, seed=7)
    res = min_distortion(model, x, y, norm=norm, time_limit=10)
    checked = 0
    for i, adv in enumerate(res.counterexamples):
        if adv is None:
            continue
        with torch.no_grad():
            alone = model(adv[None]).argmax(1).item()
            batch = model(torch.stack([x[0], adv, x[1], adv]))[[1, 3]].argmax(1)
            exact = copy.deepcopy(model).double()(adv[None].double()).argmax(1).item()
            z = model(adv[None])[0]
        assert alone != y[i] and (batch != y[i]).all() and exact != y[i]
        assert z.max() > z[y[i]]  # never a tie broken by argmax's index order
        gap = (adv.double() - x[i].double()).abs()
        dist = (gap.max() if norm == "linf" else gap.sum()).item()
        assert dist == pytest.approx(res.distortion[i].item(), abs=1e-12)  # the checked point's distance
        assert dist >= res.lower[i].item()
        checked += 1
    assert checked >= 4


def test_min_distortion_keeps_the_lower_bounds_of_finished_rounds(monkeypatch, test_digits):
    x, y = test_digits
    model = pretrained("digits-mlp")
    original = distortion_module._round

    def out_of_time(*args):
        args = list(args)
        if args[7] > 0.125:  # the round past 0.125 starts with no time left
            args[-1] = -1e9
        return original(*args)
    monkeypatch.setattr(distortion_module, "_round", out_of_time)
    res = min_distortion(model, x[1:2], y[1:2], time_limit=30)
    assert res.status == ["unknown"] and res.lower[0].item() == pytest.approx(0.125)


@pytest.mark.parametrize("verify", [milp, reluplex, branch_and_bound, min_distortion])
def test_one_logit_models_get_a_clear_error(verify):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)).eval()
    x = torch.rand(2, 1, 2, 2)
    kwargs = {} if verify is min_distortion else {"eps": 0.1}
    with pytest.raises(ValueError, match="at least 2"):
        verify(model, x, torch.zeros(2, dtype=torch.long), **kwargs)


def test_rounding_false_gives_the_exact_arithmetic_bounds(mlp_parts, test_digits):
    x = test_digits[0][:8]
    model = shared_relu(mlp_parts)
    box = ((x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1))
    net, u = read_exact(model, *box)
    err = rounding_bound(net, *box, u)
    for verify in (interval, crown):
        sound, exact = verify(model, x, eps=0.02), verify(model, x, eps=0.02, rounding=False)
        torch.testing.assert_close(sound.lower, exact.lower - 2 * err, rtol=1e-5, atol=1e-4)
        with pytest.raises(TypeError, match="rounding"):
            verify(model, x, eps=0.02, rounding="no")
