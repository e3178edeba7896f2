"""The one network reader of robustlab.verify: a model as a flat chain of affine, ReLU and max-pool
layers, the form every verifier reads.

Linear, Conv2d (kept as a convolution; its transpose is conv_transpose2d), Flatten, AvgPool2d
and AdaptiveAvgPool2d (depthwise convolutions), BatchNorm1d/2d (eval statistics, folded into
the preceding Linear/Conv2d or kept as a per-channel affine map), `Normalize` (per-channel
affine), ReLU, MaxPool2d, and Dropout/Identity (identities in eval mode), nested in
`nn.Sequential` containers. The reader bounds the model as evaluated in eval mode. Any other
layer, or a module with its own forward (a residual block), is refused with an error naming it.
Layers hold the model's own tensors (not copies), so bounds can be differentiated for training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._model import check_model
from ..models import BasicBlock, Normalize

SUPPORTED = ("Linear/Conv2d/ReLU/Flatten/AvgPool2d/AdaptiveAvgPool2d/MaxPool2d/BatchNorm1d/"
             "BatchNorm2d/Normalize/Dropout/Identity")


class Affine:
    """y = W x + b on (B, *in_shape) -> (B, *out_shape); `transpose` applies W^T, `linear_abs` |W|.

    For the rounding analysis (`rounding.rounding_bound`): `fan_in` is the length of the dot
    product behind each output (0 for an exact reshape), `extra_ops` how many more roundings the
    model makes on the way (1 for a bias, more for a BatchNorm or Normalize and for folding one
    into the layer), and `mag` (broadcast like the bias) the magnitude of the constants it adds,
    |b| or, for a folded BatchNorm, the sum of the magnitudes of every term it adds."""

    in_shape: tuple
    out_shape: tuple
    bias: torch.Tensor
    mag: torch.Tensor | None
    fan_in: int = 1
    extra_ops: int = 1

    def __call__(self, x):
        return self.linear(x) + self.bias

    def back(self, lam: torch.Tensor) -> torch.Tensor:
        """W^T applied to each row of `lam` (N, M, *out_shape) -> (N, M, *in_shape)."""
        n, m = lam.shape[:2]
        return self.transpose(lam.reshape(n * m, *self.out_shape)).reshape(n, m, *self.in_shape)


@dataclass(eq=False)
class Dense(Affine):
    """A fully connected layer on the flattened input; `weight` is (out, prod(in_shape))."""

    weight: torch.Tensor
    bias: torch.Tensor
    in_shape: tuple
    mag: torch.Tensor | None = None
    extra_ops: int = 1

    def __post_init__(self):
        self.mag = self.bias.detach().abs() if self.mag is None else self.mag
        self.fan_in = self.weight.shape[1]

    @property
    def out_shape(self):
        return (self.weight.shape[0],)

    def linear(self, x):
        return x.flatten(1) @ self.weight.T

    def linear_abs(self, x):
        return x.flatten(1) @ self.weight.abs().T

    def transpose(self, lam):
        return (lam @ self.weight).view(-1, *self.in_shape)


@dataclass(eq=False)
class Conv(Affine):
    """A 2-D convolution with zero padding (depthwise when ``groups`` = channels)."""

    weight: torch.Tensor
    bias: torch.Tensor
    in_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    mag: torch.Tensor | None = None
    extra_ops: int = 1

    def __post_init__(self):
        self.bias = self.bias.view(-1, 1, 1)
        self.mag = (self.bias.detach().abs() if self.mag is None else self.mag).view(-1, 1, 1)
        self.fan_in = math.prod(self.weight.shape[1:])
        h, w = self.in_shape[1:]
        k = self.weight.shape[2:]
        size = [(s + 2 * p - d * (kk - 1) - 1) // st + 1
                for s, p, d, kk, st in zip((h, w), self.padding, self.dilation, k, self.stride)]
        self.out_shape = (self.weight.shape[0], *size)
        # conv_transpose2d must give back the input size the stride rounded away
        self.output_padding = tuple(s - ((o - 1) * st - 2 * p + d * (kk - 1) + 1) for s, o, st, p, d, kk
                                    in zip((h, w), size, self.stride, self.padding, self.dilation, k))

    def _conv(self, x, weight):
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def linear(self, x):
        return self._conv(x, self.weight)

    def linear_abs(self, x):
        return self._conv(x, self.weight.abs())

    def transpose(self, lam):
        return F.conv_transpose2d(lam, self.weight, None, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


@dataclass(eq=False)
class ChannelAffine(Affine):
    """x * scale + shift per channel (dim 0 of the shape): a folded BatchNorm or a Normalize."""

    scale: torch.Tensor
    shift: torch.Tensor
    in_shape: tuple
    mag: torch.Tensor | None = None
    extra_ops: int = 3  # x * (1 / std) - mean / std against the model's (x - mean) / std

    def __post_init__(self):
        view = (-1,) + (1,) * (len(self.in_shape) - 1)
        self.scale, self.shift = self.scale.reshape(view), self.shift.reshape(view)
        self.mag = (self.shift.detach().abs() if self.mag is None else self.mag).reshape(view)
        self.bias, self.out_shape = self.shift, self.in_shape

    def linear(self, x):
        return x * self.scale

    def linear_abs(self, x):
        return x * self.scale.abs()

    def transpose(self, lam):
        return lam * self.scale


@dataclass(eq=False)
class Reshape(Affine):
    """A flatten (or any reshape): the identity map on the entries."""

    in_shape: tuple
    out_shape: tuple
    bias: torch.Tensor
    mag: torch.Tensor | None = None
    fan_in: int = 0

    def linear(self, x):
        return x.reshape(-1, *self.out_shape)

    linear_abs = linear

    def transpose(self, lam):
        return lam.reshape(-1, *self.in_shape)


@dataclass(eq=False)
class ReLU:
    shape: tuple

    def __call__(self, x):
        return x.clamp_min(0)


@dataclass(eq=False)
class MaxPool:
    """2-D max pooling on (C, H, W) inputs (padding counts as -inf, as in torch)."""

    in_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple

    def __post_init__(self):
        self.out_shape = tuple(self(torch.zeros(1, *self.in_shape)).shape[1:])

    def __call__(self, x):
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation)

    def windows(self, t: torch.Tensor, fill: float) -> torch.Tensor:
        """The pooling windows of `t` (N, C, H, W) as (N, C, k, L), padding filled with `fill`."""
        n, c, h, w = t.shape
        (ph, pw) = self.padding
        t = F.pad(t, (pw, pw, ph, ph), value=fill).reshape(n * c, 1, h + 2 * ph, w + 2 * pw)
        cols = F.unfold(t, self.kernel, self.dilation, 0, self.stride)
        return cols.view(n, c, cols.shape[1], cols.shape[2])


@dataclass(eq=False)
class Network:
    """A chain of layers read from a model: `layers` map (N, *in_shape) to logits (N, K)."""

    layers: list
    in_shape: tuple

    @property
    def out_shape(self):
        return _out_shape(self.layers[-1]) if self.layers else self.in_shape

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _out_shape(layer):
    return layer.shape if isinstance(layer, ReLU) else layer.out_shape


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _refuse(path: str, module: nn.Module, why: str):
    raise ValueError(f"verify reads sequential networks of {SUPPORTED}; got "
                     f"{type(module).__name__} at {path!r}: {why}")


def _hooks(module: nn.Module) -> list[str]:
    """The names of the hooks that would run with `module`'s forward (they may change its output)."""
    return [k.strip("_").replace("_", " ") for k in ("_forward_hooks", "_forward_pre_hooks")
            if getattr(module, k, None)]


_HARMLESS = {"__init__", "__module__", "__doc__", "__qualname__", "__annotations__", "__dict__",
             "__weakref__", "__firstlineno__", "__static_attributes__", "__orig_bases__",
             "__getstate__", "__setstate__", "__deepcopy__"}


def _check_exact(path: str, module: nn.Module, base: type) -> None:
    """Refuse `module` unless it computes exactly what its known class `base` computes: no hooks,
    nothing of `base` (a method, property or attribute: forward, __call__, _conv_forward,
    __iter__, ...) overridden by a subclass or on the instance, and not compiled. Subclasses
    that only add an __init__ or new attributes, and parametrised layers (whose weight property
    gives what their forward uses), pass."""
    hooks = _hooks(module)
    if hooks:
        _refuse(path, module, f"it has {', '.join(hooks)}, which may change what it computes")
    if vars(module).get("_compiled_call_impl") is not None:
        _refuse(path, module, "it is compiled (torch.compile), which the reader cannot see into")
    for name, value in vars(module).items():
        if callable(value) and not isinstance(value, nn.Module) and hasattr(type(module), name):
            _refuse(path, module, f"its {name} is replaced on the instance")
    parametrised = getattr(module, "parametrizations", {})
    for cls in type(module).__mro__[:type(module).__mro__.index(base)]:
        for name, value in vars(cls).items():
            if name in _HARMLESS or not hasattr(base, name):
                continue
            if isinstance(value, property) and name in parametrised:
                continue
            _refuse(path, module, f"its class {cls.__name__} overrides {name} of {base.__name__}, so "
                                  f"it is not read as a {base.__name__}")


def _known(module: nn.Module) -> type | None:
    """The class of READERS, Sequential, Dropout or Identity that `module` is an instance of."""
    for base in (nn.Sequential, nn.Dropout, nn.Identity, *READERS):
        if isinstance(module, base):
            return base
    return None


def _leaves(module: nn.Module, path: str) -> Iterator[tuple[str, nn.Module]]:
    """The modules of a chain in the order its forward calls them, nested Sequentials opened;
    anything else is refused. A module listed twice (one instance reused) is yielded twice:
    Sequential.forward calls every entry of `_modules`, while `named_children` skips repeats."""
    base = _known(module)
    if base is None:
        if any(True for _ in module.children()):
            block = next((f"{path}.{n}" for n, m in module.named_modules() if isinstance(m, BasicBlock)),
                         None)
            why = (f"its residual block BasicBlock at {block!r} adds a shortcut branch, which is not a "
                   "chain" if block else "it has its own forward (branches, residual connections or "
                   "functional calls), which cannot be read as a chain of layers")
            _refuse(path, module, why)
        _refuse(path, module, "no verifier can bound this layer")
    _check_exact(path, module, base)
    if base is nn.Sequential:
        for name, child in module._modules.items():
            if child is not None:
                yield from _leaves(child, f"{path}.{name}")
    elif base not in (nn.Dropout, nn.Identity):
        yield path, module


def _linear(path, m: nn.Linear, shape, like):
    if len(shape) != 1:
        _refuse(path, m, f"it gets input of shape {shape}; flatten to one dimension first")
    bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
    return Dense(m.weight, bias, shape)


def _conv(path, m: nn.Conv2d, shape, like):
    if len(shape) != 3 or m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        _refuse(path, m, f"needs (C, H, W) input and numeric zero padding; got input {shape}, "
                         f"padding {m.padding!r}, padding_mode {m.padding_mode!r}")
    pad = (0, 0) if isinstance(m.padding, str) else _pair(m.padding)
    bias = m.bias if m.bias is not None else m.weight.new_zeros(m.out_channels)
    return Conv(m.weight, bias, shape, _pair(m.stride), pad, _pair(m.dilation), m.groups)


def _avg_pool(path, m, shape, like):
    if len(shape) != 3:
        _refuse(path, m, f"needs (C, H, W) input, got {shape}")
    if isinstance(m, nn.AdaptiveAvgPool2d):
        out = _pair(m.output_size)
        out = tuple(s if o is None else o for s, o in zip(shape[1:], out))
        if any(s % o for s, o in zip(shape[1:], out)):
            _refuse(path, m, f"output size {out} does not divide the input size {shape[1:]}")
        kernel = stride = tuple(s // o for s, o in zip(shape[1:], out))
        pad, divisor = (0, 0), None
    else:
        kernel, stride, pad = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        divisor = m.divisor_override
        if m.ceil_mode or (not m.count_include_pad and any(pad)):
            _refuse(path, m, "ceil_mode or count_include_pad=False with padding is not one convolution")
    c = shape[0]
    weight = like.new_full((c, 1, *kernel), 1.0 / (divisor or kernel[0] * kernel[1]))
    return Conv(weight, like.new_zeros(c), shape, stride, pad, (1, 1), c)


def _max_pool(path, m: nn.MaxPool2d, shape, like):
    if len(shape) != 3 or m.ceil_mode or m.return_indices:
        _refuse(path, m, f"needs (C, H, W) input, no ceil_mode or return_indices; got input {shape}")
    return MaxPool(shape, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding),
                   _pair(m.dilation))


def _batch_norm(path, m, shape, like):
    if m.running_mean is None or m.running_var is None:
        _refuse(path, m, "it has no running statistics (track_running_stats=False)")
    if shape[0] != m.num_features:
        _refuse(path, m, f"it has {m.num_features} features but gets input of shape {shape}")
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale + (m.bias if m.bias is not None else 0)
    mag = (m.running_mean * scale).abs() + (m.bias.abs() if m.bias is not None else 0)
    return ChannelAffine(scale, shift, shape, mag.detach(), extra_ops=7)  # -, rsqrt(+), *, *, +


def _normalize(path, m: Normalize, shape, like):
    if len(shape) != 3 or m.mean.numel() not in (1, shape[0]):
        _refuse(path, m, f"it has {m.mean.numel()} channels but gets input of shape {shape}")
    mean, std = m.mean.flatten().expand(shape[0]), m.std.flatten().expand(shape[0])
    return ChannelAffine(1 / std, -mean / std, shape)


def _flatten(path, m: nn.Flatten, shape, like):
    if m.start_dim != 1 or m.end_dim != -1:
        _refuse(path, m, "only Flatten(start_dim=1, end_dim=-1) is read")
    n = 1
    for s in shape:
        n *= s
    return Reshape(shape, (n,), like.new_zeros(n))


READERS = {nn.Linear: _linear, nn.Conv2d: _conv, nn.AvgPool2d: _avg_pool,
           nn.AdaptiveAvgPool2d: _avg_pool, nn.MaxPool2d: _max_pool, nn.BatchNorm1d: _batch_norm,
           nn.BatchNorm2d: _batch_norm, Normalize: _normalize, nn.Flatten: _flatten,
           nn.ReLU: lambda path, m, shape, like: ReLU(shape)}


def _fold(prev, layer):
    """`layer` merged into `prev` when the two make one affine layer of the same kind, else None."""
    if isinstance(layer, ChannelAffine) and isinstance(prev, (Dense, Conv)):
        scale, shift = layer.scale.flatten(), layer.shift.flatten()
        w = prev.weight * scale.view(-1, *[1] * (prev.weight.dim() - 1))
        b = prev.bias.flatten() * scale + shift
        mag = prev.mag.flatten() * scale.detach().abs() + layer.mag.flatten()
        ops = prev.extra_ops + layer.extra_ops + 1  # and the rounding of the folded weight
        if isinstance(prev, Dense):
            return Dense(w, b, prev.in_shape, mag, ops)
        return Conv(w, b, prev.in_shape, prev.stride, prev.padding, prev.dilation, prev.groups, mag, ops)
    if isinstance(layer, Dense) and isinstance(prev, Reshape):
        return Dense(layer.weight, layer.bias, prev.in_shape, layer.mag, layer.extra_ops)
    return None


def read_network(model: nn.Module, in_shape: Sequence[int], *, like: torch.Tensor | None = None) -> Network:
    """The chain of layers of `model` for inputs of shape (N, *in_shape), BatchNorm folded.

    Arguments:
        model: a module built from the layers in SUPPORTED, nested in nn.Sequential.
        in_shape: the shape of one input, e.g. (1, 8, 8).
        like: a tensor whose dtype and device constants (pooling weights) take; defaults to the
            model's first parameter, then to float32 on the CPU.
    """
    check_model(model)
    if like is None:
        like = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()),
                    torch.zeros(()))
    shape, layers = tuple(int(s) for s in in_shape), []
    hooks = [k.strip("_").replace("_", " ") for k in ("_global_forward_hooks", "_global_forward_pre_hooks")
             if getattr(nn.modules.module, k, None)]
    if hooks:
        _refuse(type(model).__name__, model, f"{', '.join(hooks)} are registered with torch, and "
                "they may change what every module computes")
    for path, module in _leaves(model, type(model).__name__):
        reader = READERS[_known(module)]
        layer = reader(path, module, shape, like)
        folded = _fold(layers[-1], layer) if layers else None
        if folded is not None:
            layers[-1] = folded
        else:
            layers.append(layer)
        shape = _out_shape(layers[-1])
    if len(shape) != 1:
        raise ValueError(f"model must return logits (N, K), but its last layer gives (N, *{shape})")
    return Network(layers, tuple(int(s) for s in in_shape))
