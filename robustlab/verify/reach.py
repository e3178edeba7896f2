"""Reachable sets by hyper-rectangles (Xiang, Tran and Johnson 2018), refined by partitioning the
input box: the outputs of every sub-box, over-approximated by a box each, united."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_eps, check_images, check_positive
from .._model import check_model, check_model_input, plain
from ._bounds import ROW_BUDGET, Box, Sound, ball_box, max_width
from .network import Affine, Network
from .types import Bounds


def propagate(net: Network, lower: torch.Tensor, upper: torch.Tensor) -> tuple[list[Box], Box]:
    """The box [lower, upper] (B, *in_shape) through `net`, layer by layer: (the box on the input
    of each ReLU / MaxPool layer, the output box).

    An affine layer maps centre c and radius r to c' = W c + b and r' = |W| r; a ReLU or max
    pool (monotone) maps the two corners, sigma(c' - r') and sigma(c' + r'), which become the
    next centre and radius. This is the rule of interval bound propagation (IBP), step for step.
    """
    c, r, pre = (upper + lower) / 2, (upper - lower) / 2, []
    for layer in net.layers:
        if isinstance(layer, Affine):
            c, r = layer(c), layer.linear_abs(r)
            continue
        lo, up = c - r, c + r
        pre.append(Box(lo, up))
        lo, up = layer(lo), layer(up)
        c, r = (up + lo) / 2, (up - lo) / 2
    return pre, Box(c - r, c + r)


def influence(net: Network, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """How much each input entry matters (N, D): the summed output width of the box that lets
    only that entry vary (the others at the centre of their interval). 0 for a point entry."""
    n, d = len(lower), lower[0].numel()
    mid, width = ((lower + upper) / 2).flatten(1), (upper - lower).flatten(1)
    eye = torch.eye(d, dtype=lower.dtype, device=lower.device)
    chunk, out = max(1, ROW_BUDGET // max(1, n * max_width(net))), []
    for rows in eye.split(chunk):  # row i of the chunk varies entry i only: (N, rows, D)
        lo = mid[:, None, :] - rows * width[:, None, :] / 2
        up = mid[:, None, :] + rows * width[:, None, :] / 2
        shape = (n * len(rows), *lower.shape[1:])
        _, box = propagate(net, lo.reshape(shape), up.reshape(shape))
        out.append((box.upper - box.lower).flatten(1).sum(1).view(n, len(rows)))
    return torch.cat(out, 1) * (width > 0)


def split_boxes(net: Network, lower: torch.Tensor, upper: torch.Tensor, partitions: int,
                dims: int) -> Box:
    """The union (N, K) of the output boxes of the partitions ** dims sub-boxes of each input
    box: its `dims` most influential entries are each cut into `partitions` equal pieces."""
    n = len(lower)
    flat_lo, flat_up = lower.flatten(1), upper.flatten(1)
    chosen = influence(net, lower, upper).topk(dims, dim=1).indices  # (N, dims)
    lo_c, width = flat_lo.gather(1, chosen), (flat_up - flat_lo).gather(1, chosen)
    pieces = torch.arange(partitions, device=lower.device)
    grid = torch.cartesian_prod(*[pieces] * dims).view(-1, dims)  # (P ** dims, dims)
    # cut points (j / k) * width: nested partitions (k | k') cut at the same floats
    ends = torch.tensor([j / partitions for j in range(partitions + 1)], dtype=lower.dtype,
                        device=lower.device)
    chunk = max(1, ROW_BUDGET // max(1, n * max_width(net)))
    out_lo = out_up = None
    for rows in grid.split(chunk):
        m = len(rows)
        sub_lo = flat_lo[:, None, :].repeat(1, m, 1)  # (N, m, D)
        sub_up = flat_up[:, None, :].repeat(1, m, 1)
        index = chosen[:, None, :].expand(n, m, dims)
        sub_lo.scatter_(2, index, lo_c[:, None, :] + width[:, None, :] * ends[rows][None])
        sub_up.scatter_(2, index, lo_c[:, None, :] + width[:, None, :] * ends[rows + 1][None])
        shape = (n * m, *lower.shape[1:])
        _, box = propagate(net, sub_lo.view(shape), sub_up.view(shape))
        lo, up = box.lower.view(n, m, -1).amin(1), box.upper.view(n, m, -1).amax(1)
        out_lo = lo if out_lo is None else torch.minimum(out_lo, lo)
        out_up = up if out_up is None else torch.maximum(out_up, up)
    return Box(out_lo, out_up)


def _check_box(lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("lower", lower), ("upper", upper)):
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be a float32 or float64 tensor, got "
                            f"{type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}")
        if t.dim() < 2 or len(t) == 0:
            raise ValueError(f"{name} must have shape (N, *input_shape) with N >= 1, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or infinite entries")
    if lower.shape != upper.shape or lower.dtype != upper.dtype or lower.device != upper.device:
        raise ValueError(f"lower and upper must have one shape, dtype and device, got "
                         f"{tuple(lower.shape)} {lower.dtype} {lower.device} and "
                         f"{tuple(upper.shape)} {upper.dtype} {upper.device}")
    if (lower > upper).any():
        raise ValueError("lower exceeds upper: the box is empty")
    return plain(lower), plain(upper)


def reach_box(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *, partitions: int = 1,
              dims: int | None = None, max_boxes: int = 1 << 16) -> Bounds:
    """A box over the outputs of `model` for every input in the box [lower, upper].

    Xiang, Tran and Johnson, "Output reachable set estimation and verification for multi-layer
    neural networks" (IEEE TNNLS 2018): a hyper-rectangle {v : |v - c| <= r} goes through a
    layer as c' = sigma(W c + b) bounds, w_max = sigma(W c + |W| r + b),
    w_min = sigma(W c - |W| r + b) (`propagate`). That is interval bound propagation: with
    partitions=1 the answer equals `interval` (L-inf, no C) to the last bit.

    Refinement: the `dims` entries that matter most (`influence`) are each cut into
    `partitions` equal pieces, and the partitions ** dims sub-boxes are bounded separately and
    united. Each sub-box is inside the whole box and the rule is monotone under inclusion, so
    the union is never looser, and a finer nested partition (partitions a multiple of the old
    one) never looser than the coarser; the over-approximation shrinks towards the true range
    as the pieces shrink (for a ReLU network the error is linear in the piece width).

    Arguments:
        model: a chain that `read_network` reads (bounded as in eval mode; left as found).
        lower, upper: the box, (N, *input_shape), any finite values with lower <= upper.
        partitions: pieces per split entry (1: no refinement).
        dims: how many entries to split; None splits every entry of nonzero width.
        max_boxes: refuse more than this many sub-boxes per example (partitions ** dims).
    Returns Bounds (N, K) on the logits.
    """
    check_model(model)
    lower, upper = _check_box(lower, upper)
    check_model_input(model, lower, "lower")
    check_positive(partitions, "partitions", integer=True)
    check_positive(max_boxes, "max_boxes", integer=True)
    sound = Sound(model, lower, upper)  # the float64 network, checked against the model
    net = sound.net
    wide = int((upper > lower).flatten(1).sum(1).max())
    if dims is None:
        dims = wide
    elif isinstance(dims, bool) or not isinstance(dims, int) or not 0 <= dims <= lower[0].numel():
        raise ValueError(f"dims must be an int in [0, {lower[0].numel()}] (entries per input), got {dims!r}")
    if partitions == 1 or dims == 0:
        with torch.no_grad():
            _, box = propagate(net, lower, upper)
            return sound.widen(box.lower, box.upper)
    if partitions ** dims > max_boxes:
        raise ValueError(f"partitions ** dims = {partitions} ** {dims} sub-boxes per example "
                         f"exceed max_boxes={max_boxes}: pass a smaller dims= (the most "
                         f"influential entries are split first) or raise max_boxes")
    with torch.no_grad():
        box = split_boxes(net, lower, upper, partitions, dims)
        return sound.widen(box.lower, box.upper)


def reach(model: nn.Module, x: torch.Tensor, *, eps: float, partitions: int = 1,
          dims: int | None = None, max_boxes: int = 1 << 16) -> Bounds:
    """`reach_box` over the L-inf ball of radius eps around each image x, intersected with
    [0, 1]: the box [max(x - eps, 0), min(x + eps, 1)].

    Xiang, Tran and Johnson (IEEE TNNLS 2018); see `reach_box` for the rule and the
    partitioning. With partitions=1 it equals ``interval(model, x, eps=eps)``.

    Arguments:
        model: a chain that `read_network` reads; x: images (N, C, H, W) in [0, 1]; eps >= 0.
        partitions, dims, max_boxes: the refinement, as in `reach_box` (dims=None: every
            pixel whose interval is not a point, which needs partitions ** dims <= max_boxes).
    Returns Bounds (N, K) on the logits.
    """
    x = plain(check_images(x))
    eps = check_eps(eps)
    return reach_box(model, *ball_box(x, eps), partitions=partitions, dims=dims, max_boxes=max_boxes)
