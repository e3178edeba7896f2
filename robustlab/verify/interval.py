"""Interval bound propagation (IBP) on the logits or on a specification C @ logits."""

from __future__ import annotations

import torch
from torch import nn

from ._bounds import Ball, Box, affine_runs, all_rows, back_affine, max_width, prepare
from .network import Network, ReLU
from .types import Bounds


def forward_box(layers: list, box: Box) -> Box:
    """A box through affine layers by centre and radius: c' = W c + b, r' = |W| r."""
    c, r = (box.upper + box.lower) / 2, (box.upper - box.lower) / 2
    for layer in layers:
        c, r = layer(c), layer.linear_abs(r)
    return Box(c - r, c + r)


def bound_linear(layers: list, inputs, lam: torch.Tensor | None, shape: tuple, width: int) -> Box:
    """Exact bounds of lam . (affine `layers`)(x) over `inputs` (a Box or Ball): rows of `lam`
    (N, S, *shape), or every output neuron (shape `shape`) when lam is None."""
    def rows(lam):
        coef, bias = back_affine(layers, lam, lam.new_zeros(lam.shape[:2]))
        return inputs.value(coef, bias, -1), inputs.value(coef, bias, 1)
    if lam is not None:
        return Box(*rows(lam))
    x = inputs.x if isinstance(inputs, Ball) else inputs.lower
    return Box(*all_rows(len(x), shape, rows, x, width))


def interval_bounds(net: Network, ball: Ball, C: torch.Tensor | None = None):
    """IBP through `net`: (bounds on the input of each ReLU / MaxPool layer, final Box).

    The first affine run is bounded exactly over the ball (Hölder's inequality with the dual
    norm for L2 / L1; a ball is not a box); the last one, with C, as the single affine map
    C W_L ... (folding C in is tighter than multiplying intervals); the rest by centre/radius.
    """
    groups, width = affine_runs(net), max_width(net)
    shape, box, pre = net.in_shape, None, []
    for g, item in enumerate(groups):
        if not isinstance(item, list):  # a ReLU or MaxPool between two runs
            pre.append(box)
            box = Box(item(box.lower), item(box.upper))
            shape = item.shape if isinstance(item, ReLU) else item.out_shape
            continue
        out_shape = item[-1].out_shape if item else shape
        spec = C if g == len(groups) - 1 else None
        if box is None and (spec is not None or (ball.norm != "linf" and item)):
            box = bound_linear(item, ball, spec, out_shape, width)
        elif box is None:
            box = forward_box(item, ball.box)
        elif spec is not None:
            box = bound_linear(item, box, spec, out_shape, width)
        else:
            box = forward_box(item, box)
        shape = out_shape
    return pre, box


def interval(model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf",
             C: torch.Tensor | None = None, rounding: bool = True) -> Bounds:
    """Interval bounds (IBP) on the logits of `model` over the eps-ball around each x.

    Gowal et al., "On the effectiveness of interval bound propagation for training verifiably
    robust models" (2018), eq. (6): through an affine layer, centre and radius go as
    mu' = W mu + b and r' = |W| r; through a monotone ReLU or max pool, lower and upper go
    separately. The input set is the ball intersected with [0, 1]; for L2 / L1 the first
    affine layers are bounded exactly with the dual norm, W x + b +- eps ||W_i||_q.

    Arguments:
        model: a chain that `read_network` reads (bounded as in eval mode; left as found).
        x: images (N, C, H, W) in [0, 1]; eps >= 0; norm: "linf", "l2" or "l1".
        C: optional specification (S, K) or (N, S, K): bounds on C @ logits, shape (N, S).
        rounding: widen by twice the float rounding bound (the bounds then hold for the model as
            it runs); False gives the network's bounds in exact arithmetic, as in the papers and
            auto_LiRPA, up to the verifier's own rounding: for comparisons, not for proofs.
    Returns Bounds with lower and upper of shape (N, K), or (N, S) with C.
    """
    sound, x, ball, C = prepare(model, x, eps, norm, C, rounding)
    with torch.no_grad():
        _, box = interval_bounds(sound.net, ball, C)
        return sound.widen(box.lower, box.upper, C) if rounding else Bounds(box.lower, box.upper)

