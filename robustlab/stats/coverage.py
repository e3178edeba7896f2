"""Structural coverage criteria of a test set on a ReLU network: how much of the network's
internal behaviour the inputs exercise (the tutorial's software-testing methods).

| criterion | function | paper | items |
| --- | --- | --- | --- |
| neuron | `neuron_coverage` | Pei et al., DeepXplore, SOSP 2017 | neurons with output > threshold |
| k_multisection | `k_multisection_coverage` | Ma et al., DeepGauge, ASE 2018 | k sections of each range |
| boundary | `boundary_coverage` | Ma et al. 2018 | below / above each training range |
| strong | `strong_activation_coverage` | Ma et al. 2018 | above each training range |
| top_k | `top_k_coverage` | Ma et al. 2018 | neurons among their layer's top k |
| sign_sign, value_sign, sign_value, value_value | `mcdc_coverage` | Sun et al. 2019 | adjacent pairs |

Neurons are the units of the model's `nn.ReLU` modules, read with forward hooks that are
removed before returning (a module called twice gives two layers, ``name`` and ``name#2``).
A convolutional unit is, with ``conv="channel"`` (default, as DeepXplore and DeepGauge), one
feature map whose value is its mean over positions, or with ``conv="unit"`` every position.
The model runs in eval mode and is left as found; a model with no nn.ReLU, or with another
activation module, is refused.

Every criterion returns a `Coverage`: ``covered`` (a bool tensor, one entry per item, on the
model's device), ``value`` = covered / total, and ``per_layer()``. Results of one criterion on
one model combine with ``a | b``, so coverage can grow batch by batch (a fuzzer's loop); for
the MC/DC criteria only pairs of inputs inside one call count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_images, check_nonnegative, check_positive
from .._model import check_model, check_model_input, eval_mode
from ..tables import Tabular, markdown_table

OTHER_ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.PReLU,
                     nn.SiLU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid)
CONV_READINGS = ("channel", "unit")
MCDC = {"sign_sign": ("sign", "sign"), "value_sign": ("value", "sign"),
        "sign_value": ("sign", "value"), "value_value": ("value", "value")}


@dataclass(frozen=True)
class Coverage(Tabular):
    """Which items a test set covers under one criterion.

    ``covered`` is flat, one bool per item, layer after layer (``blocks`` names each layer, or
    layer pair for MC/DC, with the shape of its block: (neurons,), (neurons, k), (neurons, 2)
    for [below, above], or (neurons of layer l, neurons of layer l + 1)).
    """

    criterion: str
    covered: torch.Tensor
    blocks: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def total(self) -> int:
        return self.covered.numel()

    @property
    def n_covered(self) -> int:
        return int(self.covered.sum())

    @property
    def value(self) -> float:
        """covered / total (0.0 when there is nothing to cover)."""
        return self.n_covered / self.total if self.total else 0.0

    def per_layer(self) -> dict[str, torch.Tensor]:
        """Layer (or layer pair) name -> its covered mask in its block's shape."""
        sizes = [int(torch.Size(shape).numel()) for _, shape in self.blocks]
        parts = self.covered.split(sizes)
        return {name: part.view(shape) for (name, shape), part in zip(self.blocks, parts)}

    def __or__(self, other: Coverage) -> Coverage:
        if not isinstance(other, Coverage):
            return NotImplemented
        if (other.criterion, other.blocks) != (self.criterion, self.blocks):
            raise ValueError(f"cannot combine {self.criterion} coverage of {self.blocks} with "
                             f"{other.criterion} coverage of {other.blocks}")
        return Coverage(self.criterion, self.covered | other.covered.to(self.covered.device),
                        self.blocks)

    def table(self) -> str:
        return markdown_table(["criterion", "covered", "total", "coverage"],
                              [[self.criterion, self.n_covered, self.total, self.value]],
                              decimals=[None, None, None, 4])


@dataclass(frozen=True)
class Profile:
    """DeepGauge's profile of a network on its training set: each neuron's lowest and highest
    output, ``low`` and ``high`` (flat, layer after layer as ``layers`` names them)."""

    low: torch.Tensor
    high: torch.Tensor
    layers: tuple[tuple[str, int], ...]
    conv: str


# --------------------------------------------------------------------------- reading the neurons

def _relus(model: nn.Module) -> list[tuple[str, nn.ReLU]]:
    """The model's nn.ReLU modules; an error names any other activation module."""
    check_model(model)
    found = []
    for name, m in model.named_modules():
        if isinstance(m, OTHER_ACTIVATIONS):
            raise ValueError(f"model uses {name} ({type(m).__name__}): coverage criteria count "
                             "the units of ReLU networks only")
        if isinstance(m, nn.ReLU):
            found.append((name, m))
    if not found:
        raise ValueError("model has no nn.ReLU module: coverage counts ReLU units (a forward "
                         "that calls torch.relu directly hides them)")
    return found


def _reduce(t: torch.Tensor, conv: str) -> torch.Tensor:
    """(N, ...) activations as (N, neurons): a feature map's mean, or every unit."""
    if t.dim() > 2 and conv == "channel":
        return t.flatten(2).mean(2)
    return t.flatten(1)


def _scale(t: torch.Tensor) -> torch.Tensor:
    """DeepXplore's per-input scaling of a layer's outputs to [0, 1] (0 where all are equal)."""
    flat = t.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = high - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return scaled.view_as(t)


def _record(model: nn.Module, relus, xb: torch.Tensor, conv: str, scale: bool):
    """One forward pass: [(name, pre-activation, output)] in call order, each (n, neurons)."""
    calls, seen, names = [], {}, {id(m): name for name, m in relus}

    def before(module, args):
        # an in-place ReLU overwrites its input: keep the pre-activation first
        seen[id(module)] = seen.get(id(module), 0) + 1
        calls.append([names[id(module)], seen[id(module)], _reduce(args[0], conv).clone()])

    def after(module, args, out):
        # cloned: flatten may return a view of a tensor a later in-place layer overwrites
        calls[-1].append(_reduce(_scale(out) if scale else out, conv).clone())

    handles = []
    try:
        for _, m in relus:
            handles += [m.register_forward_pre_hook(before), m.register_forward_hook(after)]
        model(xb.clone())  # a leading in-place ReLU must not write into the caller's x
    finally:
        for h in handles:
            h.remove()
    return [(name if k == 1 else f"{name}#{k}", pre, post) for name, k, pre, post in calls]


def activations(model: nn.Module, x: torch.Tensor, *, conv: str = "channel", scale: bool = False,
                batch_size: int = 256) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every ReLU layer's neurons on `x`: [(name, pre-activations, outputs)], each (N, neurons).

    Arguments:
        x: the inputs, in [0, 1], on the model's device and of its dtype.
        conv: "channel" (a feature map is one neuron, its mean) or "unit" (every position).
        scale: scale each input's layer outputs to [0, 1] first, as DeepXplore does.
        batch_size: inputs per forward pass.
    """
    check_choice(conv, CONV_READINGS, "conv")
    check_bool(scale, "scale")
    check_positive(batch_size, "batch_size", integer=True)
    relus = _relus(model)
    x = check_images(x, ndim=None)
    check_model_input(model, x)
    with eval_mode(model), torch.no_grad():
        batches = [_record(model, relus, xb, conv, scale) for xb in x.split(batch_size)]
    if not batches[0]:
        raise ValueError("model never called its nn.ReLU modules in its forward")
    order = [name for name, _, _ in batches[0]]
    if any([name for name, _, _ in b] != order for b in batches[1:]):
        raise ValueError("model called its ReLU modules in another order for another batch (a "
                         "forward that depends on the data): coverage needs one set of neurons")
    return [(name, torch.cat([b[i][1] for b in batches]), torch.cat([b[i][2] for b in batches]))
            for i, (name, _, _) in enumerate(batches[0])]


def _blocks(layers, *tail: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((name, (post.shape[1], *tail)) for name, _, post in layers)


def _outputs(layers) -> torch.Tensor:
    """The outputs of every layer side by side, (N, all neurons)."""
    return torch.cat([post for _, _, post in layers], 1)


# --------------------------------------------------------------------------- DeepXplore, DeepGauge

def neuron_coverage(model: nn.Module, x: torch.Tensor, *, threshold: float = 0.0,
                    scale: bool = False, conv: str = "channel", batch_size: int = 256) -> Coverage:
    """Neuron coverage of Pei et al. (DeepXplore, SOSP 2017): the fraction of neurons whose
    output exceeds `threshold` for some input of `x`.

    Arguments:
        x: the test set.
        threshold: the activation threshold t (output > t covers the neuron).
        scale: False (default) compares the ReLU output itself; True first scales each input's
            layer outputs to [0, 1], as DeepXplore's code does, so t is relative to the layer.
        conv, batch_size: as in `activations`.
    """
    threshold = check_nonnegative(threshold, "threshold")
    layers = activations(model, x, conv=conv, scale=scale, batch_size=batch_size)
    return Coverage("neuron", (_outputs(layers) > threshold).any(0), _blocks(layers))


def profile(model: nn.Module, x: torch.Tensor, *, conv: str = "channel",
            batch_size: int = 256) -> Profile:
    """The training profile DeepGauge's criteria compare against (Ma et al., ASE 2018): every
    neuron's lowest and highest output over the training inputs `x`.

    Arguments:
        x: the training inputs.
        conv, batch_size: as in `activations`.
    """
    layers = activations(model, x, conv=conv, batch_size=batch_size)
    out = _outputs(layers)
    return Profile(out.min(0).values, out.max(0).values,
                   tuple((name, post.shape[1]) for name, _, post in layers), conv)


def _against_profile(model, x, train, batch_size):
    """The test outputs (N, neurons), the training profile and the layers, checked to agree."""
    if not isinstance(train, Profile):
        train = profile(model, check_images(train, "train", ndim=None), batch_size=batch_size)
    layers = activations(model, x, conv=train.conv, batch_size=batch_size)
    if tuple((name, post.shape[1]) for name, _, post in layers) != train.layers:
        raise ValueError("train profiles other layers than the model has: profile this model")
    return _outputs(layers), train, layers


def k_multisection_coverage(model: nn.Module, x: torch.Tensor, *, train, k: int = 10,
                            batch_size: int = 256) -> Coverage:
    """k-multisection neuron coverage (Ma et al., DeepGauge, ASE 2018): each neuron's training
    range [low, high] is cut into k equal sections; the fraction of the k * neurons sections
    that some test output falls in. (A neuron with low = high has one point, in section 0.)

    Arguments:
        x: the test set.
        train: the training inputs, or their `profile`.
        k: sections per neuron (>= 1).
    """
    k = check_positive(k, "k", integer=True)
    out, p, layers = _against_profile(model, x, train, batch_size)
    span = p.high - p.low
    section = ((out - p.low) / torch.where(span > 0, span, torch.ones_like(span)) * k).floor()
    inside = (out >= p.low) & (out <= p.high)
    index = torch.arange(out.shape[1], device=out.device) * k + section.clamp(0, k - 1).long()
    # outside the range: a spare slot past the end, dropped after scattering (no mask indexing)
    index = torch.where(inside, index, torch.full_like(index, out.shape[1] * k))
    covered = torch.zeros(out.shape[1] * k + 1, dtype=torch.bool, device=out.device)
    covered = covered.scatter(0, index.flatten(), True)[:-1]
    return Coverage("k_multisection", covered, _blocks(layers, k))


def boundary_coverage(model: nn.Module, x: torch.Tensor, *, train,
                      batch_size: int = 256) -> Coverage:
    """Neuron boundary coverage (Ma et al., DeepGauge, ASE 2018): the fraction of the 2 *
    neurons corner regions, output < low and output > high of the training range, that some
    test input reaches. Items per neuron: [below, above].

    Arguments:
        x: the test set.
        train: the training inputs, or their `profile`.
    """
    out, p, layers = _against_profile(model, x, train, batch_size)
    covered = torch.stack([(out < p.low).any(0), (out > p.high).any(0)], 1)
    return Coverage("boundary", covered.flatten(), _blocks(layers, 2))


def strong_activation_coverage(model: nn.Module, x: torch.Tensor, *, train,
                               batch_size: int = 256) -> Coverage:
    """Strong neuron activation coverage (Ma et al., DeepGauge, ASE 2018): the fraction of
    neurons whose output exceeds its training maximum for some test input.

    Arguments:
        x: the test set.
        train: the training inputs, or their `profile`.
    """
    out, p, layers = _against_profile(model, x, train, batch_size)
    return Coverage("strong", (out > p.high).any(0), _blocks(layers))


def top_k_coverage(model: nn.Module, x: torch.Tensor, *, k: int = 2, conv: str = "channel",
                   batch_size: int = 256) -> Coverage:
    """Top-k neuron coverage (Ma et al., DeepGauge, ASE 2018): the fraction of neurons that are
    among the k most active of their layer for some test input. A neuron tied with the k-th
    largest output counts too, so the answer does not depend on how a sort breaks ties.

    Arguments:
        x: the test set.
        k: neurons per layer and input (>= 1; a layer smaller than k is covered whole).
        conv, batch_size: as in `activations`.
    """
    k = check_positive(k, "k", integer=True)
    layers = activations(model, x, conv=conv, batch_size=batch_size)
    top = [post >= post.topk(min(k, post.shape[1]), dim=1).values[:, -1:] for _, _, post in layers]
    return Coverage("top_k", torch.cat(top, 1).any(0), _blocks(layers))


# --------------------------------------------------------------------------- MC/DC (Sun et al.)

def _changes(pre: torch.Tensor, post: torch.Tensor, rows: slice, ratio: float):
    """For the inputs `rows` against every input: (sign changed, value changed), (r, N, n).

    A sign change: the ReLU's activation (pre > 0) differs. A value change: the unit is active
    for both inputs and its output changes by more than a factor `ratio` (an inactive unit
    passes nothing on, however its pre-activation moves).
    """
    on = pre > 0
    sign = on[rows, None, :] ^ on[None, :, :]
    low = torch.minimum(post[rows, None, :], post[None, :, :])
    high = torch.maximum(post[rows, None, :], post[None, :, :])
    value = on[rows, None, :] & on[None, :, :] & (high > ratio * low)
    return sign, value


def _pair_cover(first, second, kind: str, ratio: float, chunk: int) -> torch.Tensor:
    """(neurons of layer l, neurons of layer l + 1): which pairs some pair of inputs covers."""
    condition, decision = MCDC[kind]
    n = first[1].shape[0]
    covered = torch.zeros(first[2].shape[1], second[2].shape[1], dtype=torch.bool,
                          device=first[2].device)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        sign_a, value_a = _changes(first[1], first[2], rows, ratio)
        sign_b, value_b = _changes(second[1], second[2], rows, ratio)
        flips = sign_a.sum(2, keepdim=True)
        # the condition neuron alone changes sign (the rest of its layer keeps theirs), or its
        # value changes while no neuron of its layer changes sign
        cause = sign_a & (flips == 1) if condition == "sign" else value_a & (flips == 0)
        effect = sign_b if decision == "sign" else value_b
        hits = cause.flatten(0, 1).T.float() @ effect.flatten(0, 1).float()
        covered |= hits > 0
    return covered


def mcdc_coverage(model: nn.Module, x: torch.Tensor, *, kind: str = "sign_sign",
                  ratio: float = 2.0, conv: str = "channel", batch_size: int = 256) -> Coverage:
    """MC/DC coverage of Sun et al. ("Structural test coverage criteria for deep neural
    networks", ACM TECS / EMSOFT 2019) for every pair of adjacent ReLU layers: a neuron pair
    (condition n_{l,i}, decision n_{l+1,j}) is covered when two inputs of `x`

        sign_sign:   flip n_{l,i} alone in layer l and flip n_{l+1,j}
        value_sign:  change n_{l,i}'s value with no sign flip in layer l, and flip n_{l+1,j}
        sign_value:  flip n_{l,i} alone in layer l and change n_{l+1,j}'s value (no flip)
        value_value: change n_{l,i}'s value with no flip in layer l, and change n_{l+1,j}'s value

    A sign is whether the unit is active (pre-activation > 0); a value change is an active
    unit's output changing by more than a factor `ratio` between the two inputs.

    Arguments:
        x: the test set (pairs of its inputs are compared).
        kind: "sign_sign", "value_sign", "sign_value" or "value_value".
        ratio: the value-change factor (> 1).
        conv, batch_size: as in `activations`.
    """
    check_choice(kind, tuple(MCDC), "kind")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1:
        raise ValueError(f"ratio must be a number > 1, got {ratio!r}")
    layers = activations(model, x, conv=conv, batch_size=batch_size)
    if len(layers) < 2:
        raise ValueError(f"model has {len(layers)} ReLU layer: MC/DC needs two adjacent ones")
    widest = max(post.shape[1] for _, _, post in layers)
    chunk = max(1, 2 ** 22 // (len(x) * widest))  # rows of input pairs per step, bounded memory
    blocks = [_pair_cover(a, b, kind, float(ratio), chunk) for a, b in zip(layers, layers[1:])]
    return Coverage(kind, torch.cat([b.flatten() for b in blocks]),
                    tuple((f"{a[0]}->{b[0]}", tuple(c.shape))
                          for a, b, c in zip(layers, layers[1:], blocks)))


CRITERIA = {"neuron": neuron_coverage, "k_multisection": k_multisection_coverage,
            "boundary": boundary_coverage, "strong": strong_activation_coverage,
            "top_k": top_k_coverage, **{kind: mcdc_coverage for kind in MCDC}}


def coverage(model: nn.Module, x: torch.Tensor, criterion: str, **params) -> Coverage:
    """Coverage of `x` under a criterion named as in CRITERIA, with its parameters.

    Arguments:
        x: the test set.
        criterion: "neuron", "k_multisection", "boundary", "strong", "top_k", "sign_sign",
            "value_sign", "sign_value" or "value_value".
        params: the keyword arguments of that criterion's function.
    """
    check_choice(criterion, tuple(CRITERIA), "criterion")
    if criterion in MCDC:
        params = {**params, "kind": criterion}
    return CRITERIA[criterion](model, x, **params)
