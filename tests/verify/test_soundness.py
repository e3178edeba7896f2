"""Soundness of every verifier against the model as torch runs it, in float32.

A property test over seeded random networks, readable and hostile: shared module instances,
subclasses with their own forward, forward hooks and pre-hooks, instance-level forwards,
nested Sequentials, hand-written modules and cancellation networks whose float32 rounding is
larger than their margin. Each network is, for each verifier, either refused with a clear error
(a ValueError or TypeError that names the offending module by class or path) or answered
soundly:
  * interval, crown, reach: every sampled point of the ball (uniform draws, L-inf corners) and
    every PGD point pushing a logit up or down has float32 logits inside the bounds, evaluated
    alone and inside a batch;
  * milp, reluplex, branch_and_bound: "verified" means no sampled or PGD point of the ball is
    misclassified (alone or in a mixed batch); "falsified" means the counterexample lies in the
    ball (L-inf) and in [0, 1] and the model misclassifies it, alone and in a batch;
  * min_distortion: an "optimal" counterexample is misclassified (alone and in a batch) at the
    stated distance, and no point closer than the lower bound is misclassified.

The "stealth" kind confines what the model computes beyond the chain it looks like to a tent
0.01 wide inside the ball, where comparing model and read network at a few points of the box
does not look. Then one regression test per fault the hostile tester found (a reused ReLU
dropped, subclasses and hooks read as the plain layer, a "verified" that float32 rounding
refutes) and per float64 re-reading of a constant the model computes in float32.
"""

from __future__ import annotations

import functools
import re
import types
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import pgd
from robustlab.models import Normalize
from robustlab.norms import flat_norm
from robustlab.verify import (
    Bounds,
    branch_and_bound,
    crown,
    interval,
    margin_spec,
    milp,
    min_distortion,
    reach,
    reluplex,
)

from .conftest import Pushed, ShiftReLU, TripleLinear, ball_points, randomise_batch_norm

REFUSALS = (ValueError, TypeError)
TIME = 2.0  # seconds per example for the complete verifiers


# --------------------------------------------------------------------------------------------
# hostile modules (module level, so that their class names are distinctive and picklable)


class Chain(nn.Sequential):
    """The root of every generated network: a Sequential subclass without its own forward."""


class HookedRoot(nn.Sequential):
    """A root Sequential that gets a hook itself."""


class OffsetConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) + 0.25


class LeakyReLUish(nn.ReLU):
    def forward(self, x):
        return F.leaky_relu(x, 0.3)


class SameLinear(nn.Linear):
    """Its own forward, which happens to compute exactly what nn.Linear does."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class ScaledIdentity(nn.Identity):
    def forward(self, x):
        return 1.5 * x + 0.1


class NoisyDropout(nn.Dropout):
    def forward(self, x):
        return x * 0.5


class TwistedFlatten(nn.Flatten):
    def forward(self, x):
        return super().forward(x).flip(1)


class DoubledChain(nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)


class ShiftReLUChild(ShiftReLU):
    """No forward of its own: it inherits its parent's."""


class CallOverride(nn.ReLU):
    """Overrides __call__ rather than forward."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs) * 0.5 + 0.1


class ImplOverride(nn.Linear):
    """Overrides _call_impl, which nn.Module.__call__ goes through."""

    def _call_impl(self, *args, **kwargs):
        return super()._call_impl(*args, **kwargs) + 0.3


class RepeatChain(nn.Sequential):
    """Sequential.forward as is, but iterating yields every layer twice."""

    def __iter__(self):
        for m in self._modules.values():
            yield m
            yield m


class Residual(nn.Module):
    """x + relu(lin(x)): a hand-written block with a shortcut."""

    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.relu(self.lin(x))


class HandNet(nn.Module):
    """A hand-written MLP: the same function as a chain, but its forward is its own."""

    def __init__(self, n, w, k):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(n, w), nn.Linear(w, k)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Shifted(nn.Module):
    """A hand-written layer: a chain with a twist (relu(x) - 0.1)."""

    def forward(self, x):
        return torch.relu(x) - 0.1


HOSTILE_CLASSES = {c.__name__ for c in (HookedRoot, ShiftReLU, TripleLinear, OffsetConv, LeakyReLUish,
                                        SameLinear, ScaledIdentity, NoisyDropout, TwistedFlatten,
                                        DoubledChain, ShiftReLUChild, CallOverride, ImplOverride,
                                        RepeatChain, Residual, HandNet, Shifted)}


# --------------------------------------------------------------------------------------------
# the generator


def _square_linear(g, n, m, scale=1.0, centre=False):
    """A Linear(n, m) with N(0, 1) weights over sqrt(n) (times scale), its bias centring the
    pre-activations on inputs 0.5 when `centre` (decision boundaries cross the box)."""
    lin = nn.Linear(n, m)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(m, n, generator=g) * scale * (3 if centre else 1.5) / n ** 0.5)
        lin.bias.copy_(0.1 * torch.randn(m, generator=g) - (lin.weight.sum(1) * 0.5 if centre else 0))
    return lin


def _conv(g, cin, cout, k, stride, padding):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding)
    with torch.no_grad():
        fan = cin * k * k
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 3 / fan ** 0.5)
        conv.bias.copy_(0.1 * torch.randn(cout, generator=g) - conv.weight.sum((1, 2, 3)) * 0.5)
    return conv


def _pick(g, seq):
    return seq[int(torch.randint(len(seq), (1,), generator=g))]


def _int(g, lo, hi):
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def plain_layers(g, shape, conv: bool, nested: bool = False) -> list:
    """A readable chain for inputs `shape`: [Normalize] [Conv2d [BN] ReLU [pool]] Flatten
    (Linear [BN] ReLU [Dropout/Identity])* Linear, 2 to 4 affine layers, widths 3 to 12, 3 to
    5 classes."""
    c, h, w = shape
    layers, k = [], _int(g, 3, 5)
    if conv:
        if _int(g, 0, 1):
            layers.append(Normalize([0.4], [0.3]))
        cout = _int(g, 2, 4)
        stride = 2 if h > 4 else _pick(g, [1, 2])
        layers += [_conv(g, c, cout, _pick(g, [2, 3]), stride, _pick(g, [0, 1]))]
        if _int(g, 0, 1):
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
        probe = nn.Sequential(*layers).eval()(torch.zeros(1, *shape))
        if min(probe.shape[2:]) >= 2:
            layers.append(_pick(g, [nn.MaxPool2d(2, stride=1), nn.AvgPool2d(2), nn.MaxPool2d(2),
                                    nn.AdaptiveAvgPool2d(1) if min(probe.shape[2:]) < 3 else
                                    nn.AvgPool2d(2, stride=1)]))
    layers.append(nn.Flatten())
    n = int(nn.Sequential(*layers).eval()(torch.zeros(1, *shape)).shape[1])
    depth = _int(g, 1, 2 if conv else 3)
    for i in range(depth):
        m = _int(g, 3, 12)
        layers.append(_square_linear(g, n, m, centre=(i == 0 and not conv)))
        if _int(g, 0, 2) == 0:
            layers.append(nn.BatchNorm1d(m))
        layers.append(nn.ReLU())
        if _int(g, 0, 3) == 0:
            layers.append(_pick(g, [nn.Dropout(0.3), nn.Identity()]))
        n = m
    layers.append(_square_linear(g, n, k))
    if nested:  # wrap random runs in (named) Sequentials
        out, i = [], 0
        while i < len(layers):
            j = min(len(layers), i + _int(g, 1, 3))
            run = layers[i:j]
            if len(run) > 1 and _int(g, 0, 1):
                run = [nn.Sequential(OrderedDict((f"part{t}", m) for t, m in enumerate(run)))
                       if _int(g, 0, 1) else nn.Sequential(*run)]
            out += run
            i = j
        layers = out
    return layers


class Net:
    """A generated network: the model, the shape of one input, its kind, whether a verifier
    must read it (plain) or may refuse it, and the names a refusal must mention."""

    def __init__(self, kind, seed, model, shape, readable, classes=(), paths=(), note=""):
        self.kind, self.seed, self.model, self.shape = kind, seed, model.eval(), tuple(shape)
        self.readable, self.classes, self.paths, self.note = readable, set(classes), list(paths), note

    @property
    def key(self) -> int:
        """A seed of its own for the points drawn around it."""
        return 1000 * (KINDS.index(self.kind) if self.kind in KINDS else 99) + self.seed

    def __repr__(self):
        return f"Net({self.kind}, seed={self.seed}{', ' + self.note if self.note else ''})"


def _paths_of(root: nn.Module, target: nn.Module) -> list:
    return [p for p, m in root.named_modules(remove_duplicate=False) if m is target]


def _leaf_positions(model, types_):
    return [(p, m) for p, m in model.named_modules(remove_duplicate=False)
            if p and isinstance(m, types_) and not isinstance(m, nn.Sequential)]


def _hook_output(mod, inp, out):
    return out * 1.5 + 0.1


def _prehook_input(mod, args):
    return (args[0] * 0.5 + 0.05,)


def _harmless_hook(mod, inp, out):
    mod.calls = getattr(mod, "calls", 0) + 1  # returns None: the output is unchanged


def build(kind: str, seed: int) -> Net:
    """The network of `kind` drawn with `seed`."""
    g = torch.Generator().manual_seed(1000 * KINDS.index(kind) + seed)
    shape = _pick(g, [(1, 4, 4), (1, 8, 8)]) if kind != "cancel" else None
    conv = seed % 2 == 0  # half convolutional, half MLPs
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BUILDERS[kind](g, seed, shape, conv)


def _finish(model, seed):
    return randomise_batch_norm(model, seed)


def _plain(g, seed, shape, conv):
    return Net("plain", seed, _finish(Chain(*plain_layers(g, shape, conv)), seed), shape, True,
               note="conv" if conv else "mlp")


def _nested(g, seed, shape, conv):
    return Net("nested", seed, _finish(Chain(*plain_layers(g, shape, conv, nested=True)), seed), shape,
               True, note="conv" if conv else "mlp")


def _shared(g, seed, shape, conv):
    """A reused ReLU instance, or a reused square Linear (with a reused ReLU) where shapes allow."""
    n = shape[0] * shape[1] * shape[2]
    w, k = _int(g, 3, 12), _int(g, 3, 5)
    act = nn.ReLU()
    first = _square_linear(g, n, w, centre=True)
    if seed % 2:
        mid = _square_linear(g, w, w, scale=1.2)
        layers = [nn.Flatten(), first, act, mid, act, mid, act, _square_linear(g, w, k)]
        note = "reused Linear and ReLU"
    else:
        layers = [nn.Flatten(), first, act, _square_linear(g, w, w), act]
        if _int(g, 0, 1):
            layers = [nn.Flatten(), first, act, nn.Sequential(_square_linear(g, w, w), act),
                      _square_linear(g, w, w), act]
        layers.append(_square_linear(g, w, k))
        note = "reused ReLU"
    model = _finish(Chain(*layers), seed)
    shared = [m for m in (act, layers[3]) if len(_paths_of(model, m)) > 1]
    paths = [p for m in shared for p in _paths_of(model, m)]
    return Net("shared", seed, model, shape, False, paths=paths, note=note)


def _subclass(g, seed, shape, conv):
    """A layer replaced by a subclass with its own forward (or a new layer of one inserted)."""
    layers = plain_layers(g, shape, conv)
    choice = seed % 11
    relus = [i for i, m in enumerate(layers) if type(m) is nn.ReLU]
    linears = [i for i, m in enumerate(layers) if type(m) is nn.Linear]
    flat = [i for i, m in enumerate(layers) if isinstance(m, nn.Flatten)][0]
    if choice in (0, 1, 7, 8):
        cls = {0: ShiftReLU, 1: LeakyReLUish, 7: ShiftReLUChild, 8: CallOverride}[choice]
        layers[_pick(g, relus)] = cls()
    elif choice in (2, 3, 9):
        i = _pick(g, linears)
        old = layers[i]
        new = {2: TripleLinear, 3: SameLinear, 9: ImplOverride}[choice](old.in_features, old.out_features)
        new.load_state_dict(old.state_dict())
        layers[i] = new
    elif choice == 4:
        layers.insert(flat + 1, _pick(g, [ScaledIdentity(), NoisyDropout(0.2)]))
    elif choice == 5:
        layers[flat] = TwistedFlatten()
    elif choice == 10:
        w = layers[linears[-1]].in_features
        layers.insert(linears[-1], RepeatChain(_square_linear(g, w, w, scale=1.2), nn.ReLU()))
    elif conv and isinstance(layers[0], nn.Conv2d):
        old = layers[0]
        layers[0] = OffsetConv(old.in_channels, old.out_channels, old.kernel_size, old.stride,
                               old.padding)
        layers[0].load_state_dict(old.state_dict())
    else:
        layers = [layers[0], DoubledChain(*layers[1:])] if flat == 0 else [DoubledChain(*layers)]
    model = _finish(Chain(*layers), seed)
    bad = [(p, m) for p, m in model.named_modules() if type(m).__name__ in HOSTILE_CLASSES]
    return Net("subclass", seed, model, shape, False, classes=[type(m).__name__ for _, m in bad],
               paths=[p for p, _ in bad], note=type(bad[0][1]).__name__)


def _instance_forward(g, seed, shape, conv):
    """`m.forward = ...` on one instance of a plain layer."""
    model = _finish(Chain(*plain_layers(g, shape, conv, nested=bool(seed % 2))), seed)
    path, m = _pick(g, _leaf_positions(model, (nn.Linear, nn.ReLU, nn.Conv2d, nn.Identity,
                                                nn.Dropout, nn.Flatten)))
    plain_forward = type(m).forward
    if seed % 5 == 4:  # what torch.compile sets: __call__ goes to it instead of _call_impl
        m._compiled_call_impl = lambda *args, **kwargs: plain_forward(m, *args, **kwargs) * 0.75 + 0.05
    elif isinstance(m, nn.Flatten):
        m.forward = types.MethodType(lambda self, x: plain_forward(self, x) * 1.25, m)
    else:
        m.forward = types.MethodType(lambda self, x: plain_forward(self, x + 0.15), m)
    how = "_compiled_call_impl" if seed % 5 == 4 else "forward"
    return Net("instance-forward", seed, model, shape, False, paths=[path],
               note=f"{how} of the {type(m).__name__} at {path}")


def _hooked(g, seed, shape, conv, pre: bool):
    model = _finish((HookedRoot if seed % 5 == 4 else Chain)(
        *plain_layers(g, shape, conv, nested=bool(seed % 2))), seed)
    if seed % 5 == 4:
        path, m = "", model
    else:
        path, m = _pick(g, [(p, m) for p, m in model.named_modules(remove_duplicate=False) if p])
    if pre:
        m.register_forward_pre_hook(_prehook_input)
    elif seed % 5 == 3:
        m.register_forward_hook(_harmless_hook)
    else:
        m.register_forward_hook(_hook_output)
    classes = ["HookedRoot"] if m is model else []
    return Net("prehook" if pre else "hook", seed, model, shape, False, classes=classes,
               paths=[path] if path else [],
               note=f"{'pre-' if pre else ''}hook on {type(m).__name__} at {path!r}")


def _hand_written(g, seed, shape, conv):
    n = shape[0] * shape[1] * shape[2]
    w, k = _int(g, 3, 12), _int(g, 3, 5)
    choice = seed % 3
    if choice == 0:
        model, note = HandNet(n, w, k), "HandNet"
        with torch.no_grad():
            model.fc1.weight.mul_(3)
            model.fc1.bias.copy_(-model.fc1.weight.sum(1) * 0.5)
    elif choice == 1:
        model, note = Chain(nn.Flatten(), _square_linear(g, n, w, centre=True), nn.ReLU(), Residual(w),
                            _square_linear(g, w, k)), "Residual"
    else:
        model, note = Chain(nn.Flatten(), _square_linear(g, n, w, centre=True), Shifted(),
                            _square_linear(g, w, k)), "Shifted"
    bad = [(p, m) for p, m in model.named_modules() if type(m).__name__ in HOSTILE_CLASSES]
    return Net("hand-written", seed, model, shape, False, classes=[type(m).__name__ for _, m in bad],
               paths=[p for p, _ in bad if p], note=note)


def cancellation_net(scale=1e4, ratio=3.0, margin=5e-4, n=1, k=2, g=None) -> tuple:
    """Item 3 of the report, generalised: hidden units h_0 = scale * (v.x + 1) and
    h_1 = ratio * h_0 (both positive on [0, 1]), logit 0 = h_0 - h_1 / ratio + margin and every
    other logit 0: class 0 everywhere in real arithmetic, up to the float32 rounding of the
    weight 1 / ratio (item 3 keeps a real margin of 2e-5 to 8e-5 on its ball), while float32
    evaluation rounds h_0 - h_1 / ratio by about scale * 1e-7 > margin either way. Returns
    (model, input shape)."""
    v = torch.ones(n) / n if g is None else torch.rand(n, generator=g) / n
    lin1, lin2 = nn.Linear(n, 2), nn.Linear(2, k)
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([v * scale, v * scale * ratio]))
        lin1.bias.copy_(torch.tensor([scale, scale * ratio]))
        w2 = torch.zeros(k, 2)
        w2[0] = torch.tensor([1.0, -1.0 / ratio])
        lin2.weight.copy_(w2)
        b2 = torch.zeros(k)
        b2[0] = margin
        lin2.bias.copy_(b2)
    shape = (1, 1, 1) if n == 1 else (1, 1, n)
    return nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2).eval(), shape


class Offset(nn.Module):
    """A parametrisation w -> (w + 1e8) - 1e8: the identity in float64, a multiple of 8 in float32."""

    def forward(self, w):
        return (w + 1e8) - 1e8


def _bump_layers(c: float, a: float) -> list:
    """Flatten, Linear, ReLU, Linear, ReLU: the tent max(0, 1 - a |x - c|) of a (1, 1, 1) input,
    zero outside a width of 2 / a around c."""
    l1, l2 = nn.Linear(1, 3), nn.Linear(3, 1)
    with torch.no_grad():
        l1.weight.fill_(a)
        l1.bias.copy_(torch.tensor([1 - a * c, -a * c, -1 - a * c]))
        l2.weight.copy_(torch.tensor([[1.0, -2.0, 1.0]]))
        l2.bias.zero_()
    return [nn.Flatten(), l1, nn.ReLU(), l2, nn.ReLU()]


def offset_parametrised_net(c=0.57, a=200.0) -> nn.Module:
    """Logit 1 = p * tent - 6 (logit 0 = 0), p the parametrised weight Offset(4.5): 4.5 when
    read in float64 (class 0 everywhere), 8 as the float32 model computes it (class 1 on the
    tent's top, which sampling the box at a few points can miss)."""
    last = nn.Linear(1, 2)
    with torch.no_grad():
        last.weight.copy_(torch.tensor([[0.0], [4.5]]))
        last.bias.copy_(torch.tensor([0.0, -6.0]))
    torch.nn.utils.parametrize.register_parametrization(last, "weight", Offset())
    return nn.Sequential(*_bump_layers(c, a), last).eval()


def negative_variance_net(c=0.57, a=200.0) -> nn.Module:
    """Logit 1 = BatchNorm(tent) - 0.95 (logit 0 = 0), the BatchNorm's running variance one
    float32 ulp above -eps: var + eps is 2^-40 in float32, 13% more in float64, so its gain is
    1.049 as the model runs it (class 1 on the tent's top) and 0.928 as read in float64."""
    eps32 = torch.tensor(1e-5)
    bn = nn.BatchNorm1d(1, eps=1e-5)
    last = nn.Linear(1, 2)
    with torch.no_grad():
        bn.running_var.fill_((torch.nextafter(eps32, torch.tensor(1.0)) - 2 * eps32).item())
        bn.running_mean.zero_()
        bn.weight.fill_(1e-6)
        bn.bias.zero_()
        last.weight.copy_(torch.tensor([[0.0], [1.0]]))
        last.bias.copy_(torch.tensor([0.0, -0.95]))
    return nn.Sequential(*_bump_layers(c, a), bn, last).eval()


def _cancel(g, seed, shape, conv):
    if seed == 0:
        model, shape = cancellation_net()
        note = "item 3"
    else:
        n, k = _pick(g, [1, 2, 4]), _int(g, 2, 4)
        scale = _pick(g, [1e4, 3e4, 1e5])
        ratio = _pick(g, [3.0, 7.0, 1.5, 11.0])
        model, shape = cancellation_net(scale, ratio, 5e-4 * scale / 1e4, n, k, g)
        note = f"scale {scale:g}, ratio {ratio:g}, n {n}, k {k}"
    return Net("cancel", seed, model, shape, False, paths=[], note=note)


def _bump_head(w: float, b: float) -> nn.Linear:
    last = nn.Linear(1, 2)
    with torch.no_grad():
        last.weight.copy_(torch.tensor([[0.0], [w]]))
        last.bias.copy_(torch.tensor([0.0, b]))
    return last


def _stealth(g, seed, shape, conv):
    """A change confined to a tent 0.01 wide inside the ball [0.4, 0.6] around x = 0.5: what
    runs differs from a plain chain only there, which checking the model against what was
    read at a few points of the box misses. Class 0 everywhere for the chain as read; class 1
    on the tent's top for the model as it runs."""
    c = 0.52 + 0.07 * torch.rand(1, generator=g).item()
    layers, choice = _bump_layers(c, 200.0), seed % 7
    classes, paths = [], []
    if choice in (0, 1, 5):  # on the instance: _call_impl, _compiled_call_impl (torch.compile), a hook
        relu = layers[-1]
        if choice == 5:
            relu.register_forward_hook(lambda mod, inp, out: out * 1.5)
        else:
            setattr(relu, "_call_impl" if choice == 0 else "_compiled_call_impl",
                    lambda *args, **kwargs: torch.relu(*args) * 1.5)
        model, paths = Chain(*layers, _bump_head(1.0, -1.2)), ["4"]
        note = ["_call_impl", "_compiled_call_impl", "", "", "", "forward hook"][choice] + " of the last ReLU"
    elif choice == 2:
        lin = nn.Linear(1, 1)
        with torch.no_grad():
            lin.weight.fill_(1.5)
            lin.bias.zero_()
        model = Chain(*layers, RepeatChain(lin), _bump_head(1.0, -2.0))
        classes, paths = ["RepeatChain"], ["5"]
        note = "RepeatChain"
    elif choice == 6:
        layers[-1] = CallOverride()  # 0.5 relu + 0.1
        model, classes, note = Chain(*layers, _bump_head(1.0, -0.3)), ["CallOverride"], "CallOverride"
    else:  # no module to blame: constants computed in float32 by the model, in float64 by the reader
        model = (offset_parametrised_net if choice == 3 else negative_variance_net)(c)
        note = "Offset parametrisation" if choice == 3 else "running_var = ulp - eps"
    return Net("stealth", seed, model, (1, 1, 1), False, classes=classes, paths=paths,
               note=f"{note}, c {c:.4f}")


BUILDERS = {"plain": _plain, "nested": _nested, "shared": _shared, "subclass": _subclass,
            "instance-forward": _instance_forward,
            "hook": functools.partial(_hooked, pre=False), "prehook": functools.partial(_hooked, pre=True),
            "hand-written": _hand_written, "cancel": _cancel, "stealth": _stealth}
KINDS = list(BUILDERS)
# networks per kind (73 in all)
PLAN = {"plain": 12, "nested": 6, "shared": 6, "subclass": 11, "instance-forward": 5, "hook": 6,
        "prehook": 5, "hand-written": 6, "cancel": 5, "stealth": 7}
READABLE = ("plain", "nested")  # the kinds every bounding verifier must read


# --------------------------------------------------------------------------------------------
# checks


class Tally:
    """What one test checked: networks, points evaluated (each alone and in a batch), verdicts."""

    def __init__(self):
        self.points = 0
        self.nets = 0
        self.verdicts = {}

    def saw(self, name, status):
        self.verdicts[name, status] = self.verdicts.get((name, status), 0) + 1


def refusal_ok(net: Net, err: Exception) -> str | None:
    """None when `err` names the culprit of `net` (class or path), else why not."""
    msg = str(err)
    if net.readable:
        return f"a chain of supported layers was refused: {type(err).__name__}: {msg}"
    if any(re.search(rf"\b{re.escape(c)}\b", msg) for c in net.classes):
        return None
    for p in net.paths:
        if re.search(r"(?:^|[.\s'\"(\[`])" + re.escape(p) + r"(?![\w.])", msg):
            return None
    if not net.classes and not net.paths:
        return None  # no module is to blame (float rounding): any clear refusal will do
    return (f"the refusal names neither the classes {sorted(net.classes)} nor the paths {net.paths}: "
            f"{type(err).__name__}: {msg}")


def evaluate(model, pts: torch.Tensor, tally: Tally) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits of `pts` (P, C, H, W), one at a time and as one batch."""
    with torch.no_grad():
        alone = torch.cat([model(p[None]) for p in pts])
        batch = model(pts)
    tally.points += len(pts)
    return alone, batch


def pgd_points(model, x, eps, norm, steps=10, C=None, signs=(1, -1)) -> torch.Tensor:
    """PGD points (2 * S * N, ...) pushing each logit (or each row of C @ logits) up and down
    (the conftest's `Pushed`), stacked example-minor like `ball_points`."""
    with torch.no_grad():
        s = model(x).shape[1] if C is None else C.shape[1]
    one = torch.ones(len(x), dtype=torch.long)
    pts = []
    for sign in signs:
        for row in range(s):
            pts.append(pgd(Pushed(model, row, sign, C), x, one, eps=eps, alpha=eps / 4, steps=steps,
                           norm=norm, targeted=True, generator=torch.Generator().manual_seed(row)))
    return torch.cat(pts)


def distance(pts, x, norm="linf") -> torch.Tensor:
    """The exact distances (P,) of float32 points (P, ...) from x (N, ...) (point i from
    example i mod N), in float64."""
    idx = torch.arange(len(pts)) % len(x)
    return flat_norm(pts.double() - x.double()[idx], norm)


def points_around(model, x, eps, norm, n, seed, y=None) -> torch.Tensor:
    """n sampled points of the ball per example of x (N, ...) (uniform draws and, for L-inf,
    random corners) and PGD points pushing every logit up and down, or with labels y every
    margin z_y - z_j down: (P, C, H, W), example i at the rows P = i mod N. Points that float32
    rounding put outside the ball (by an ulp) are left out."""
    if eps == 0:
        return x.clone()
    sampled = ball_points(x, eps, norm, n, seed).flatten(0, 1)
    if y is None:
        pts = torch.cat([sampled, pgd_points(model, x, eps, norm)])
    else:
        with torch.no_grad():
            C = margin_spec(y, model(x).shape[1])
        pts = torch.cat([sampled, pgd_points(model, x, eps, norm, C=C, signs=(-1,))])
    inside = distance(pts, x, norm) <= eps
    return _keep_inside(pts, x, inside)


def _keep_inside(pts, x, inside):
    """The points inside, keeping the rows example-minor: a point outside is replaced by its
    example's x (which is inside)."""
    idx = torch.arange(len(pts)) % len(x)
    return torch.where(inside.view(-1, *[1] * (pts.dim() - 1)), pts, x[idx])


SAMPLES = 200  # sampled points per example and ball in the bounding checks
BOUNDING = {"interval": interval, "crown": crown, "reach": reach}


def check_bounds(net: Net, x, eps, norm, tally: Tally, failures: list):
    """interval, crown (in `norm`) and reach (L-inf) against the same points of the ball."""
    names = [n for n in BOUNDING if n != "reach" or norm == "linf"]
    answers = {}
    for name in names:
        fn = BOUNDING[name]
        try:
            kw = {} if name == "reach" else {"norm": norm}
            answers[name] = fn(net.model, x, eps=eps, **kw)
        except REFUSALS as err:
            why = refusal_ok(net, err)
            if why:
                failures.append(f"{name} eps={eps} {norm}: {why}")
    if not answers:
        return
    pts = points_around(net.model, x, eps, norm, SAMPLES, net.key)
    alone, batch = evaluate(net.model, pts, tally)
    idx = torch.arange(len(pts)) % len(x)
    for name, b in answers.items():
        per_point = Bounds(b.lower[idx], b.upper[idx])
        for how, z in (("alone", alone), ("in a batch", batch)):
            out = ~per_point.contains(z)
            if out.any():
                i = int(out.nonzero()[0])
                ex = int(idx[i])
                excess = torch.maximum(b.lower[ex] - z[i], z[i] - b.upper[ex]).max().item()
                failures.append(f"{name} eps={eps} {norm}: {int(out.sum())} of {len(pts)} points outside "
                                f"the bounds ({how}), e.g. example {ex}: logits {z[i].tolist()} vs lower "
                                f"{b.lower[ex].tolist()}, upper {b.upper[ex].tolist()} (by {excess:.3g}) "
                                f"at {pts[i].flatten().tolist()}")


def misclassified(model, pts, yi, tally) -> tuple[torch.Tensor, torch.Tensor]:
    alone, batch = evaluate(model, pts, tally)
    return alone.argmax(1) != yi, batch.argmax(1) != yi


def boundary_eps(model, x, y) -> float:
    """About the PGD distance (L-inf) from x to the decision boundary, by bisection."""
    lo, hi = 0.0, 0.5
    for _ in range(6):
        mid = (lo + hi) / 2
        adv = pgd(model, x, y, eps=mid, alpha=mid / 4, steps=10, loss="margin",
                  generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fooled = (model(adv).argmax(1) != y).any().item()
        lo, hi = (lo, mid) if fooled else (mid, hi)
    return hi


def check_verified(name, model, x, yi, eps, pts, tally, failures, what="verified"):
    """No point of `pts` (of the ball) is misclassified, alone or in the batch of them all."""
    alone, batch = misclassified(model, pts, yi, tally)
    for how, bad in (("alone", alone), ("in a batch", batch)):
        if bad.any():
            i = int(bad.nonzero()[0])
            with torch.no_grad():
                z = model(pts[i][None])[0].tolist()
            dist = distance(pts[i:i + 1], x).item()
            failures.append(f"{name} eps={eps:.9g}: {what}, but {int(bad.sum())} of {len(pts)} points are "
                            f"misclassified ({how}), e.g. at L-inf distance {dist:.9g}: "
                            f"{pts[i].flatten().tolist()} with logits {z} (label {yi})")


def check_counterexample(name, model, x, yi, adv, eps, others, tally, failures, what="falsified"):
    """`adv` is in [0, 1], within eps of x (L-inf) and misclassified alone and in a batch."""
    if not isinstance(adv, torch.Tensor) or adv.shape != x.shape[1:] or adv.dtype != x.dtype:
        failures.append(f"{name}: {what} counterexample {adv!r:.80} is not a {x.dtype} tensor "
                        f"{tuple(x.shape[1:])}")
        return
    dist = (adv.double() - x[0].double()).abs().max().item()
    if adv.min() < 0 or adv.max() > 1:
        failures.append(f"{name}: {what} counterexample outside [0, 1]: {adv.flatten().tolist()}")
    if dist > eps * (1 + 1e-6) + 1e-9:
        failures.append(f"{name} eps={eps:.9g}: {what} counterexample at L-inf distance {dist:.9g} > "
                        f"{eps:.9g} "
                        f"(x = {x.flatten().tolist()}, counterexample {adv.flatten().tolist()})")
    mixed = torch.cat([others[:7], adv[None], others[7:15]])
    with torch.no_grad():
        alone = model(adv[None])[0]
        batch = model(mixed)[min(7, len(others))]
    tally.points += 1
    for how, z in (("alone", alone), ("in a batch", batch)):
        if z.argmax().item() == yi:
            failures.append(f"{name} eps={eps:.6g}: {what} counterexample {adv.flatten().tolist()} is "
                            f"classified {yi} ({how}): logits {z.tolist()}")


def complete_checks(net: Net, tally: Tally, failures: list):
    """milp, reluplex and branch_and_bound at two eps around one example's distance to the
    boundary (one robust, one not, mostly), and min_distortion on every other network."""
    model, shape = net.model, net.shape
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(net.key + 77))
    probe = net.kind in ("cancel", "stealth")  # x = 0.5, eps = 0.1, and a float32 grid of the ball
    if probe:
        x = torch.full((1, *shape), 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    yi = int(y)
    d = 0.1 if probe else boundary_eps(model, x, y)
    verifiers = [("milp", milp)]
    if not any(isinstance(m, nn.MaxPool2d) for m in model.modules()):  # the others refuse it
        verifiers += [("reluplex", reluplex), ("branch_and_bound", branch_and_bound)]
    epses = (d,) if probe else (0.6 * d, 1.3 * d) if d < 0.1 else (0.03, 0.1)
    for eps in epses:
        pts = points_around(model, x, eps, "linf", 150, net.key, y=y)
        if probe:  # a float32 grid of the ball along the diagonal
            grid = torch.linspace(0.5 - eps, 0.5 + eps, 2001).view(-1, *[1] * len(shape))
            pts = torch.cat([pts, grid.expand(-1, *shape)])
        for name, fn in verifiers:
            try:
                (v,) = fn(model, x, y, eps=eps, time_limit=TIME)
            except REFUSALS as err:
                why = refusal_ok(net, err)
                if why:
                    failures.append(f"{name}: {why}")
                continue
            tally.saw(name, v.status)
            if v.status == "verified":
                check_verified(name, model, x, yi, eps, pts, tally, failures)
            elif v.status == "falsified":
                check_counterexample(name, model, x, yi, v.counterexample, eps, pts, tally, failures)
    if net.seed % 2 and not probe:
        return
    cap = min(2.5 * d, 0.15)
    try:
        md = min_distortion(model, x, y, norm="linf", max_eps=cap, time_limit=TIME)
    except REFUSALS as err:
        why = refusal_ok(net, err)
        if why:
            failures.append(f"min_distortion: {why}")
        return
    status, dist, lower = md.status[0], md.distortion[0].item(), md.lower[0].item()
    tally.saw("min_distortion", status)
    if status == "optimal":
        check_counterexample("min_distortion", model, x, yi, md.counterexamples[0], dist * (1 + 1e-6) + 1e-9,
                             points_around(model, x, dist, "linf", 8, net.key, y=y), tally, failures,
                             what="optimal")
    if status in ("optimal", "beyond max_eps") and lower > 0:
        pts = points_around(model, x, lower, "linf", 100, net.key + 1, y=y)
        if probe:
            grid = torch.linspace(0.5 - cap, 0.5 + cap, 3001).view(-1, *[1] * len(shape))
            pts = torch.cat([pts, grid.expand(-1, *shape)])
        pts = pts[distance(pts, x) < lower]
        check_verified("min_distortion", model, x, yi, lower, pts, tally, failures,
                       what=f"{status} with lower bound {lower:.9g}")


def check_net(net: Net, tally: Tally) -> list:
    """Every verifier on `net`: the failures, each naming the network."""
    failures = []
    x = torch.rand(2, *net.shape, generator=torch.Generator().manual_seed(net.key))
    if net.kind in ("cancel", "stealth"):
        x[0] = 0.5
    norms = ("linf", "l2") if net.seed % 3 == 2 else ("linf",)
    check_bounds(net, x, 0.0, "linf", tally, failures)
    for eps in (0.03, 0.12):
        for norm in norms:
            check_bounds(net, x, eps, norm, tally, failures)
    complete_checks(net, tally, failures)
    tally.nets += 1
    return [f"{net}: {f}" for f in failures]


# --------------------------------------------------------------------------------------------
# the property test


# points a readable network gets at least, each evaluated alone and in a batch: x itself at
# eps = 0 (2 examples), then at 2 radii SAMPLES draws per example and PGD pushing each of K >= 3
# logits up and down (the complete verifiers' checks come on top)
READ_POINTS = 2 + 2 * (2 * SAMPLES + 2 * 2 * 3)


def test_plan():
    """At least 50 networks; at least 10,000 points from the readable ones alone (each kind's
    test asserts its share), whatever the hostile ones get."""
    assert set(PLAN) == set(KINDS)
    assert sum(PLAN.values()) >= 50
    assert sum(PLAN[k] for k in READABLE) * READ_POINTS >= 10_000


@pytest.mark.parametrize("kind", KINDS)
def test_refused_or_sound(kind):
    tally, failures = Tally(), []
    for seed in range(PLAN[kind]):
        failures += check_net(build(kind, seed), tally)
    print(f"{kind}: {tally.nets} networks, {tally.points} points, verdicts {tally.verdicts}")
    assert tally.nets == PLAN[kind]
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    if kind in READABLE:
        assert tally.points >= READ_POINTS * PLAN[kind], tally.points
    if kind == "plain":  # the radii straddle the decision boundary
        statuses = {status for _, status in tally.verdicts}
        assert {"verified", "falsified"} <= statuses, tally.verdicts


# --------------------------------------------------------------------------------------------
# regressions: the faults the hostile tester found, one by one


@functools.cache
def _digits_mlp_layers():
    from robustlab.models import pretrained
    m = pretrained("digits-mlp").eval()
    return m[0], m[1], m[3], m[5]


@functools.cache
def _digits_test():
    from robustlab.data import digits
    return digits("test")


def shared_relu_mlp() -> nn.Module:
    """digits-mlp with one ReLU instance used at both hidden layers (the same function)."""
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    act = nn.ReLU()
    return nn.Sequential(flatten, lin1, act, lin2, act, lin3).eval()


def shift_relu_mlp() -> nn.Module:
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    return nn.Sequential(flatten, lin1, ShiftReLU(), lin2, ShiftReLU(), lin3).eval()


def triple_linear_mlp() -> nn.Module:
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    last = TripleLinear(lin3.in_features, lin3.out_features)
    last.load_state_dict(lin3.state_dict())
    return nn.Sequential(flatten, lin1, nn.ReLU(), lin2, nn.ReLU(), last).eval()


def hooked_mlp() -> nn.Module:
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    last = nn.Linear(lin3.in_features, lin3.out_features)
    last.load_state_dict(lin3.state_dict())
    last.register_forward_hook(lambda mod, inp, out: out * 2 - 1)
    return nn.Sequential(flatten, lin1, nn.ReLU(), lin2, nn.ReLU(), last).eval()


def assert_names(err: Exception, classes=(), paths=()):
    net = Net("regression", 0, nn.Identity(), (1,), False, classes=classes, paths=paths)
    why = refusal_ok(net, err)
    assert why is None, why


def assert_contains_or_refuses(model, fn, classes=(), paths=(), n=360, why=None):
    """fn(model, x, eps=0) contains model(x) for the test digits, or refuses naming the culprit
    (or, with `why`, saying what matches that regex)."""
    x = _digits_test()[0][:n]
    try:
        b = fn(model, x, eps=0.0)
    except REFUSALS as err:
        if why is None or not re.search(why, str(err), re.I):
            assert_names(err, classes, paths)
        return
    with torch.no_grad():
        z = model(x)
    bad = ~b.contains(z)
    assert not bad.any(), (f"{int(bad.sum())} of {len(x)} digits' logits lie outside {fn.__name__}'s "
                           f"bounds at eps = 0, e.g. digit {int(bad.nonzero()[0])}")


def assert_not_verified(model, fn, x, y, eps, pts, classes=(), paths=(), **kw):
    """fn does not say "verified" where `pts` holds a misclassified point, and a falsified
    verdict's counterexample checks out; or fn refuses naming the culprit."""
    yi = int(y)
    with torch.no_grad():
        wrong = model(pts).argmax(1) != yi
    assert wrong.any(), "the regression lost its point: nothing in pts is misclassified"
    try:
        (v,) = fn(model, x, y, eps=eps, time_limit=20.0, **kw)
    except REFUSALS as err:
        assert_names(err, classes, paths)
        return
    assert v.status != "verified", (f"{fn.__name__} says verified, but the model misclassifies "
                                    f"{int(wrong.sum())} of {len(pts)} points of the ball, e.g. "
                                    f"{pts[wrong][0].flatten().tolist()}")
    if v.status == "falsified":
        failures = []
        check_counterexample(fn.__name__, model, x, yi, v.counterexample, eps, pts, Tally(), failures)
        assert not failures, failures


def pgd_found(model, x, y, eps) -> torch.Tensor:
    adv = pgd(model, x, y, eps=eps, alpha=0.01, steps=50, generator=torch.Generator().manual_seed(0))
    return adv


@pytest.mark.parametrize("fn", [interval, crown, reach], ids=lambda f: f.__name__)
def test_reused_relu_read_exactly_or_refused(fn):
    """Fault 1: `act` used twice was read once (named_children skips repeats): the second ReLU
    was dropped and the bounds at eps = 0 missed model(x)."""
    assert_contains_or_refuses(shared_relu_mlp(), fn, paths=["2", "4"])


def test_reused_relu_not_verified_by_milp():
    model = shared_relu_mlp()
    xs, ys = _digits_test()
    x, y = xs[300:301], ys[300:301]
    assert_not_verified(model, milp, x, y, 0.1, pgd_found(model, x, y, 0.1), paths=["2", "4"])


def test_subclass_with_own_forward_not_verified_by_milp():
    """Fault 2: a ReLU subclass whose forward is relu(x - 0.2) was read as a ReLU."""
    model = shift_relu_mlp()
    xs, ys = _digits_test()
    x, y = xs[276:277], ys[276:277]
    assert_not_verified(model, milp, x, y, 0.08, pgd_found(model, x, y, 0.08), classes=["ShiftReLU"])


@pytest.mark.parametrize("fn", [interval, crown, reach], ids=lambda f: f.__name__)
def test_subclasses_and_hooks_read_exactly_or_refused(fn):
    """Fault 2: a Linear subclass returning 3 * super().forward(x), and a forward hook on the
    last layer, were read as plain Linear layers."""
    assert_contains_or_refuses(shift_relu_mlp(), fn, classes=["ShiftReLU"])
    assert_contains_or_refuses(triple_linear_mlp(), fn, classes=["TripleLinear"])
    assert_contains_or_refuses(hooked_mlp(), fn, paths=["5"])


def test_pre_hook_read_exactly_or_refused():
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    act = nn.ReLU()
    act.register_forward_pre_hook(lambda mod, args: (args[0] + 0.5,))
    model = nn.Sequential(flatten, lin1, act, lin2, nn.ReLU(), lin3).eval()
    for fn in (interval, crown, reach):
        assert_contains_or_refuses(model, fn, paths=["2"])


@pytest.mark.parametrize("fn", [interval, crown, reach], ids=lambda f: f.__name__)
def test_global_forward_hook_read_exactly_or_refused(fn):
    """A module forward hook registered for every module (torch's global hooks) that changes the
    last layer's output: the same function as a hook on that layer."""
    flatten, lin1, lin2, lin3 = _digits_mlp_layers()
    model = nn.Sequential(flatten, lin1, nn.ReLU(), lin2, nn.ReLU(), lin3).eval()
    handle = nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: out * 2 - 1 if mod is lin3 else None)
    try:
        assert_contains_or_refuses(model, fn, paths=["5"], why=r"global|hook")
    finally:
        handle.remove()


GRID = torch.linspace(0.4, 0.6, 20_001).view(-1, 1, 1, 1)  # float32 grid of the ball of item 3


@pytest.mark.parametrize("fn", [milp, reluplex, branch_and_bound], ids=lambda f: f.__name__)
def test_cancellation_not_verified(fn):
    """Fault 3: class 0 everywhere in real arithmetic, by a margin of 5e-4 beside hidden units of
    1e4; float32 rounds the difference by more and misclassifies thousands of grid points."""
    model, _ = cancellation_net()
    x, y = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0])
    with torch.no_grad():
        wrong = (model(GRID).argmax(1) != 0).sum().item()
    assert wrong > 1000, wrong
    assert_not_verified(model, fn, x, y, 0.1, GRID)


def test_cancellation_min_distortion_lower_bound():
    """No misclassified float32 point lies closer than min_distortion's proven lower bound."""
    model, _ = cancellation_net()
    x, y = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0])
    md = min_distortion(model, x, y, max_eps=0.1, time_limit=20.0)
    with torch.no_grad():
        wrong = model(GRID).argmax(1) != 0
    nearest = (GRID[wrong] - 0.5).abs().min().item()
    assert md.lower[0].item() <= nearest, (md.status[0], md.lower[0].item(), nearest)
    if md.status[0] == "optimal":
        failures = []
        check_counterexample("min_distortion", model, x, 0, md.counterexamples[0],
                             md.distortion[0].item() * (1 + 1e-6) + 1e-9, GRID[::1000], Tally(), failures,
                             what="optimal")
        assert not failures, failures


@pytest.mark.parametrize("build_net", [offset_parametrised_net, negative_variance_net],
                         ids=["parametrisation", "negative-variance"])
@pytest.mark.parametrize("fn", [milp, reluplex, branch_and_bound, min_distortion], ids=lambda f: f.__name__)
def test_float64_reading_not_verified(build_net, fn):
    """Constants the model computes in float32 (a parametrised weight, a BatchNorm's var + eps)
    and the verifiers recompute in float64 on their copy: where the two differ by more than
    rounding explains, no verifier may prove what the float32 model contradicts (on the tent's
    top, which a few sampled points of the box miss)."""
    model = build_net()
    x, y = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0])
    if fn is not min_distortion:
        assert_not_verified(model, fn, x, y, 0.1, GRID)
        return
    with torch.no_grad():
        wrong = model(GRID).argmax(1) != 0
    nearest = (GRID[wrong] - 0.5).abs().min().item()
    try:
        md = min_distortion(model, x, y, max_eps=0.1, time_limit=20.0)
    except REFUSALS:
        return
    assert md.lower[0].item() <= nearest, (md.status[0], md.lower[0].item(), nearest)
