"""Coverage criteria, each against a hand computation on a hand-built two-layer ReLU network."""

import pytest
import torch
from torch import nn

from robustlab.stats import coverage as cov
from tests.conftest import leaves_as_found, messy_model
from tests.syncs import explain, grows


def hand_network(inplace: bool = False) -> nn.Module:
    """pre1 = x - 0.5; pre2 = (h1a + h1b, h1a - h1b); float64, so every value below is exact."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace), nn.Linear(2, 2), nn.ReLU(inplace),
                        nn.Linear(2, 2)).double()
    with torch.no_grad():
        for layer, w, b in ((net[0], [[1, 0], [0, 1]], [-0.5, -0.5]),
                            (net[2], [[1, 1], [1, -1]], [0, 0]), (net[4], [[1, 0], [0, 1]], [0, 0])):
            layer.weight.copy_(torch.tensor(w, dtype=torch.float64))
            layer.bias.copy_(torch.tensor(b, dtype=torch.float64))
    return net.eval()


# outputs (layer 1 | layer 2):  x1 (0, 0 | 0, 0)   x2 (.5, 0 | .5, .5)
#                               x3 (.125, .5 | .625, 0 [pre -.375])   x4 (.5, .25 | .75, .25)
X = torch.tensor([[0.25, 0.25], [1.0, 0.25], [0.625, 1.0], [1.0, 0.75]], dtype=torch.float64)
X1, X2, X3, X4 = (X[i:i + 1] for i in range(4))


def mask(*values):
    return torch.tensor(values, dtype=torch.bool)


def test_neuron_coverage():
    net = hand_network()
    r = cov.neuron_coverage(net, torch.cat([X1, X3]), threshold=0.0)
    assert torch.equal(r.covered, mask(1, 1, 1, 0)) and (r.n_covered, r.total, r.value) == (3, 4, 0.75)
    assert cov.neuron_coverage(net, X, threshold=0.5).value == 0.25  # only n21 exceeds 0.5 (0.75)
    assert cov.neuron_coverage(net, X1, threshold=0.0).value == 0.0
    assert list(r.per_layer()) == ["1", "3"]
    assert "| neuron | 3 | 4 | 0.7500 |" in str(r)
    assert torch.equal(r.per_layer()["3"], mask(1, 0))


def test_neuron_coverage_scaled_per_layer():
    # x3: layer 1 (.125, .5) -> (0, 1), layer 2 (.625, 0) -> (1, 0); x1's all-zero layers -> 0
    r = cov.neuron_coverage(hand_network(), torch.cat([X1, X3]), threshold=0.5, scale=True)
    assert torch.equal(r.covered, mask(0, 1, 1, 0))


def test_coverage_grows_by_or():
    net = hand_network()
    a, b = cov.neuron_coverage(net, X1), cov.neuron_coverage(net, X3)
    assert torch.equal((a | b).covered, cov.neuron_coverage(net, torch.cat([X1, X3])).covered)
    with pytest.raises(ValueError, match="cannot combine neuron coverage"):
        a | cov.top_k_coverage(net, X1)


def test_deepgauge_criteria_against_the_profile():
    # training ranges from x2, x4: n11 [.5, .5], n12 [0, .25], n21 [.5, .75], n22 [.25, .5];
    # test outputs x1, x3: n11 {0, .125}, n12 {0, .5}, n21 {0, .625}, n22 {0, 0}
    net, train, test = hand_network(), torch.cat([X2, X4]), torch.cat([X1, X3])
    p = cov.profile(net, train)
    assert torch.equal(p.low, torch.tensor([0.5, 0.0, 0.5, 0.25], dtype=torch.float64))
    assert torch.equal(p.high, torch.tensor([0.5, 0.25, 0.75, 0.5], dtype=torch.float64))
    k = cov.k_multisection_coverage(net, test, train=p, k=2)
    # n12: 0 in section 0; n21: .625 in section 1 of [.5, .625), [.625, .75]; the rest outside
    assert torch.equal(k.covered, mask(0, 0, 1, 0, 0, 1, 0, 0)) and k.value == 0.25
    assert torch.equal(k.per_layer()["1"], mask([0, 0], [1, 0]))
    b = cov.boundary_coverage(net, test, train=train)  # the training inputs work as well
    assert torch.equal(b.covered, mask(1, 0, 0, 1, 1, 0, 1, 0)) and b.value == 0.5
    s = cov.strong_activation_coverage(net, test, train=p)
    assert torch.equal(s.covered, mask(0, 1, 0, 0)) and s.value == 0.25


def test_k_multisection_counts_the_top_end_and_a_point_range():
    net = hand_network()
    # test = train: every value lies at its range's ends; n11's range is the point .5
    r = cov.k_multisection_coverage(net, torch.cat([X2, X4]), train=torch.cat([X2, X4]), k=4)
    assert torch.equal(r.per_layer()["1"], mask([1, 0, 0, 0], [1, 0, 0, 1]))
    assert torch.equal(r.per_layer()["3"], mask([1, 0, 0, 1], [1, 0, 0, 1]))


def test_top_k_coverage():
    net = hand_network()
    assert torch.equal(cov.top_k_coverage(net, X3, k=1).covered, mask(0, 1, 1, 0))
    # x2's layer 2 ties (.5, .5): both count, whatever order a sort would give
    assert torch.equal(cov.top_k_coverage(net, X2, k=1).covered, mask(1, 0, 1, 1))
    assert cov.top_k_coverage(net, X3, k=5).value == 1.0  # k past the layer's size: all of it


@pytest.mark.parametrize("kind, ratio, expected", [
    # (x1, x2) flips n11 alone and both of layer 2; (x2, x3) flips n12 alone and n22
    ("sign_sign", 1.25, [[1, 1], [0, 1]]),
    # (x3, x4): no flip in layer 1, n11 (.125 -> .5) and n12 (.5 -> .25) change; n22 flips
    ("value_sign", 1.25, [[0, 1], [0, 1]]),
    # (x2, x4) flips n12 alone; n21 (.5 -> .75) and n22 (.5 -> .25) change by more than 1.25
    # ((x2, x3): n21 .5 -> .625 is a factor 1.25 exactly, not more)
    ("sign_value", 1.25, [[0, 0], [1, 1]]),
    ("value_value", 1.25, [[0, 0], [0, 0]]),
    # at 1.1, (x3, x4)'s n21 (.625 -> .75) changes too
    ("value_value", 1.1, [[1, 0], [1, 0]]),
])
def test_mcdc(kind, ratio, expected):
    r = cov.coverage(hand_network(), X, kind, ratio=ratio)
    assert r.criterion == kind and r.total == 4
    assert torch.equal(r.per_layer()["1->3"], torch.tensor(expected, dtype=torch.bool))
    # an in-place ReLU overwrites its input: the pre-activations must be read before it runs
    assert torch.equal(cov.mcdc_coverage(hand_network(True), X, kind=kind, ratio=ratio).covered,
                       r.covered)


def test_mcdc_small_chunks_agree():
    """Pairs of inputs are compared in chunks of rows; chunks of 3 give what one chunk gives."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4),
                        nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(60, 3)
    layers, found = cov.activations(net, x), 0
    for kind in cov.MCDC:
        whole = cov.mcdc_coverage(net, x, kind=kind, ratio=1.5)
        assert [name for name, _ in whole.blocks] == ["1->3", "3->5"] and whole.total == 6 * 5 + 5 * 4
        pieces = [cov._pair_cover(a, b, kind, 1.5, chunk=3) for a, b in zip(layers, layers[1:])]
        assert torch.equal(torch.cat([p.flatten() for p in pieces]), whole.covered)
        found += whole.n_covered
    assert found > 0  # not all empty: the chunks had pairs to agree on


def test_conv_reading():
    # a 1x1 convolution x - 0.5 on two pixels (.25, 1): outputs (0, .5), the map's mean .25
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-0.5)
    x = torch.tensor([[[[0.25, 1.0]]]], dtype=torch.float64)
    assert cov.neuron_coverage(net, x, threshold=0.3).total == 1
    assert cov.neuron_coverage(net, x, threshold=0.3).value == 0.0
    assert torch.equal(cov.neuron_coverage(net, x, threshold=0.3, conv="unit").covered, mask(0, 1))


def test_shared_relu_reads_two_layers():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 3), relu, nn.Linear(3, 2), relu, nn.Linear(2, 2))
    r = cov.neuron_coverage(net, torch.rand(5, 2))
    assert [name for name, _ in r.blocks] == ["1", "1#2"] and r.total == 5


def messy_relu_net() -> nn.Module:
    """The hygiene kit's messy model (train mode, a frozen layer, stale .grad, batch norm,
    dropout) with a second ReLU layer on top, so MC/DC has a layer pair."""
    torch.manual_seed(0)
    return nn.Sequential(messy_model(), nn.ReLU(), nn.Linear(10, 10))


@pytest.mark.parametrize("criterion, params", [
    ("neuron", {"threshold": 0.1}), ("k_multisection", {"k": 3}), ("boundary", {}),
    ("strong", {}), ("top_k", {"k": 2}), ("sign_sign", {}), ("value_value", {}),
])
def test_hygiene(criterion, params):
    model, x = messy_relu_net(), torch.rand(6, 1, 8, 8)
    if criterion in ("k_multisection", "boundary", "strong"):
        params = {**params, "train": torch.rand(6, 1, 8, 8)}
    with torch.no_grad():
        r = leaves_as_found(lambda: cov.coverage(model, x, criterion, batch_size=4, **params), model, x)
    assert 0.0 <= r.value <= 1.0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class SkipsOnSmallBatches(nn.Module):
    """Runs its second ReLU layer only on batches of more than one input."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    def forward(self, x):
        h = self.a(x)
        return self.b(h) if len(x) > 1 else h


def test_layers_that_differ_between_batches_are_refused():
    with pytest.raises(ValueError, match="called its ReLU modules in another order"):
        cov.neuron_coverage(SkipsOnSmallBatches().double(), X[:3], batch_size=2)


def test_hooks_removed_when_the_forward_fails():
    net = hand_network()
    with pytest.raises(RuntimeError):
        cov.neuron_coverage(net, torch.rand(2, 3, dtype=torch.float64))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


@pytest.mark.parametrize("criterion", ["neuron", "k_multisection", "top_k", "sign_sign"])
def test_host_syncs_do_not_grow_with_batches(criterion):
    torch.manual_seed(0)
    net, x = messy_relu_net(), torch.rand(32, 1, 8, 8)
    params = {"train": cov.profile(net, x)} if criterion == "k_multisection" else {}

    def run(batches):
        return cov.coverage(net, x, criterion, batch_size=len(x) // batches, **params)
    few, many = grows(run, 2, 16)
    assert few.total == many.total, explain(few, many)


@pytest.mark.parametrize("call, error, match", [
    (lambda n: cov.coverage(n, X, "branch"), ValueError, "criterion must be one of"),
    (lambda n: cov.top_k_coverage(n, X, k=0), ValueError, "k must be > 0"),
    (lambda n: cov.k_multisection_coverage(n, X, train=X, k=0), ValueError, "k must be > 0"),
    (lambda n: cov.neuron_coverage(n, X[:0]), ValueError, "x is empty"),
    (lambda n: cov.k_multisection_coverage(n, X, train=X[:0]), ValueError, "train is empty"),
    (lambda n: cov.neuron_coverage(n, X, threshold=-1), ValueError, "threshold must be a finite"),
    (lambda n: cov.neuron_coverage(n, X, conv="pixel"), ValueError, "conv must be one of"),
    (lambda n: cov.neuron_coverage(n, X, scale="yes"), TypeError, "scale must be True or False"),
    (lambda n: cov.mcdc_coverage(n, X, kind="sign"), ValueError, "kind must be one of"),
    (lambda n: cov.mcdc_coverage(n, X, ratio=1.0), ValueError, "ratio must be a number > 1"),
    (lambda n: cov.neuron_coverage(n, X.float()), TypeError, "x has dtype torch.float32"),
    (lambda n: cov.neuron_coverage(nn.Sequential(nn.Linear(2, 2), nn.Tanh()).double(), X),
     ValueError, r"model uses 1 \(Tanh\)"),
    (lambda n: cov.neuron_coverage(nn.Sequential(nn.Linear(2, 2)).double(), X), ValueError,
     "model has no nn.ReLU module"),
    (lambda n: cov.mcdc_coverage(nn.Sequential(nn.Linear(2, 2), nn.ReLU()).double(), X),
     ValueError, "model has 1 ReLU layer"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(hand_network())


def test_profile_of_another_model_is_refused():
    other = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with pytest.raises(ValueError, match="train profiles other layers"):
        cov.boundary_coverage(hand_network(), X, train=cov.profile(other, X))


def _flips(pre, s, t):
    return [bool((pre[s, i] > 0) != (pre[t, i] > 0)) for i in range(pre.shape[1])]


def _value_changes(pre, post, s, t, ratio):
    return [bool(pre[s, i] > 0 and pre[t, i] > 0
                 and max(post[s, i], post[t, i]) > ratio * min(post[s, i], post[t, i]))
            for i in range(pre.shape[1])]


def brute_force_mcdc(layers, kind, ratio):
    """Sun et al.'s definitions read literally: every ordered pair of inputs, every neuron pair."""
    condition, decision = cov.MCDC[kind]
    blocks = []
    for (_, pa, va), (_, pb, vb) in zip(layers, layers[1:]):
        covered = torch.zeros(pa.shape[1], pb.shape[1], dtype=torch.bool)
        for s in range(len(pa)):
            for t in range(len(pa)):
                fa = _flips(pa, s, t)
                causes = ([f and sum(fa) == 1 for f in fa] if condition == "sign" else
                          [c and sum(fa) == 0 for c in _value_changes(pa, va, s, t, ratio)])
                effects = _flips(pb, s, t) if decision == "sign" else _value_changes(pb, vb, s, t, ratio)
                covered |= torch.tensor(causes)[:, None] & torch.tensor(effects)[None, :]
        blocks.append(covered.flatten())
    return torch.cat(blocks)


@pytest.mark.parametrize("seed", [5])
@pytest.mark.parametrize("kind", list(cov.MCDC))
def test_mcdc_matches_the_definitions_read_literally(kind, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3),
                        nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(24, 3)
    expected = brute_force_mcdc(cov.activations(net, x), kind, 1.5)
    assert expected.any()  # a network chosen (by its seed) to cover some pairs of every kind
    assert torch.equal(cov.mcdc_coverage(net, x, kind=kind, ratio=1.5).covered, expected)
