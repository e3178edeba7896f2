"""What the bounding verifiers share: argument checks, the input set and its concretisation,
affine back-substitution and bounding every neuron of a layer in row chunks."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_bool, check_eps, check_images, check_norm
from .._model import check_model, check_model_input, plain
from ..norms import dual_norm
from .network import Affine, Network
from .rounding import outward, read_exact, rounding_bound
from .types import Bounds

ROW_BUDGET = 1 << 23  # entries of the coefficient tensors held at once


def _flat_rows(lam: torch.Tensor, like: torch.Tensor):
    """lam with its entries flattened, and the einsum that pairs it with (N, D) points:
    lam (N, M, *shape) per example, or (M, *shape) shared, with like (N, *shape)."""
    if lam.dim() == like.dim():
        return lam.flatten(1), "md,nd->nm"
    return lam.flatten(2), "nmd,nd->nm"


class Box:
    """The box [lower, upper] (N, *shape); bounds a linear function by centre and radius."""

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor):
        self.lower, self.upper = lower, upper

    def value(self, lam: torch.Tensor, bias: torch.Tensor, sign: int) -> torch.Tensor:
        """min (sign=-1) or max (sign=+1) of lam . x + bias over the box: (N, M), for lam
        (N, M, *shape) or rows shared by every example (M, *shape)."""
        mid = (self.upper + self.lower).flatten(1) / 2
        rad = (self.upper - self.lower).flatten(1) / 2
        lam, rows = _flat_rows(lam, self.lower)
        return torch.einsum(rows, lam, mid) + sign * torch.einsum(rows, lam.abs(), rad) + bias


class Ball:
    """The `norm` ball of radius eps around x, intersected with [0, 1].

    L-inf: the box [max(x - eps, 0), min(x + eps, 1)]. L2 / L1 (Hölder): lam . x +- eps
    ||lam||_dual, tightened by the box, which contains the ball's part inside [0, 1]."""

    def __init__(self, x: torch.Tensor, eps: float, norm: str, box: Box | None = None):
        self.x, self.eps, self.norm = x, eps, norm
        self.box = Box((x - eps).clamp(0, 1), (x + eps).clamp(0, 1)) if box is None else box

    def value(self, lam: torch.Tensor, bias: torch.Tensor, sign: int) -> torch.Tensor:
        box = self.box.value(lam, bias, sign)
        if self.norm == "linf":
            return box
        flat, rows = _flat_rows(lam, self.x)
        dual = {"linf": lambda v: v.abs().amax(-1), "l2": lambda v: v.norm(dim=-1),
                "l1": lambda v: v.abs().sum(-1)}[dual_norm(self.norm)](flat)
        ball = torch.einsum(rows, flat, self.x.flatten(1)) + sign * self.eps * dual + bias
        return torch.maximum(ball, box) if sign < 0 else torch.minimum(ball, box)


def back_affine(layers: list, lam: torch.Tensor, bias: torch.Tensor):
    """Back-substitute lam . y + bias through affine `layers` (last first): (lam', bias') on
    their input, with lam (N, M, *out_shape) and bias (N, M)."""
    for layer in reversed(layers):
        bias = bias + (lam * layer.bias).flatten(2).sum(-1)
        lam = layer.back(lam)
    return lam, bias


def all_rows(n: int, shape: tuple, bound_rows, like: torch.Tensor, width: int, *, shared: bool = False):
    """Lower and upper bounds (N, *shape) of every neuron of a layer: ``bound_rows(lam)`` bounds
    the rows of lam (N, M, *shape), called on chunks of identity rows so that at most
    ROW_BUDGET entries of width `width` per row are held at once (vectorised within a chunk).
    shared=True passes the rows once for every example, lam (M, *shape)."""
    total = 1
    for s in shape:
        total *= s
    chunk = max(1, ROW_BUDGET // max(1, n * width))
    lows, ups = [], []
    for start in range(0, total, chunk):
        rows = torch.arange(start, min(total, start + chunk), device=like.device)
        eye = torch.zeros(len(rows), total, dtype=like.dtype, device=like.device)
        eye[torch.arange(len(rows), device=like.device), rows] = 1
        lam = eye.view(len(rows), *shape) if shared else eye.view(1, len(rows), *shape).expand(n, -1, *shape)
        lo, up = bound_rows(lam)
        lows.append(lo)
        ups.append(up)
    return torch.cat(lows, 1).view(n, *shape), torch.cat(ups, 1).view(n, *shape)


def max_width(net: Network) -> int:
    """The largest number of entries of one example at any point of the network."""
    sizes = [torch.Size(net.in_shape).numel()]
    for layer in net.layers:
        sizes.append(torch.Size(getattr(layer, "out_shape", getattr(layer, "shape", ()))).numel())
    return max(sizes)


def check_spec(C, x: torch.Tensor, k: int) -> torch.Tensor | None:
    """The specification as (N, S, K) in x's dtype, or None; errors name `C`."""
    if C is None:
        return None
    if not isinstance(C, torch.Tensor):
        raise TypeError(f"C must be a torch.Tensor (S, K) or (N, S, K), got {type(C).__name__}")
    if C.device != x.device:
        raise ValueError(f"C is on {C.device} but x is on {x.device}")
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(len(x), -1, -1)
    if C.dim() != 3 or C.shape[0] != len(x) or C.shape[2] != k or C.shape[1] == 0:
        raise ValueError(f"C must have shape (S, {k}) or ({len(x)}, S, {k}) for {len(x)} inputs "
                         f"and {k} logits, got {tuple(C.shape)}")
    C = C.to(x.dtype)
    if not torch.isfinite(C).all():
        raise ValueError("C contains NaN or infinite entries")
    return C


def checked(model: nn.Module, x, eps, norm):
    """Checked arguments of a bound: (x, eps, norm)."""
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    return x, check_eps(eps), check_norm(norm, ("linf", "l2", "l1"))


class Sound:
    """What a bounding verifier needs to bound the model as it runs: the network checked
    against the model (`read_exact`), in the model's dtype, and its rounding bound E over the
    input box. Bounds computed in that dtype are widened by 2E (`widen`): E for the model's own
    rounding and E for the verifier's, whose interval arithmetic rounds the same dot products
    (Higham's bound per layer covers |W||c| + |W|r + |b| = |W| max|h| + |b|)."""

    def __init__(self, model: nn.Module, lower: torch.Tensor, upper: torch.Tensor):
        self.net, u = read_exact(model, lower, upper)
        self.err = rounding_bound(self.net, lower, upper, u)

    def widen(self, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None) -> Bounds:
        """Bounds on the logits (or on C @ logits) widened by 2E (2 |C| E with C)."""
        err = self.err if C is None else torch.einsum("nsk,nk->ns", C.abs(), self.err)
        return Bounds(lower - 2 * err, upper + 2 * err)


def ball_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[x - eps, x + eps] intersected with [0, 1], in x's dtype, rounded outward: every input of
    that dtype in the ball lies in it (x - eps computed in x's dtype may round inwards)."""
    x64 = x.double()
    return outward((x64 - eps).clamp(0, 1), (x64 + eps).clamp(0, 1), x.dtype)


def prepare(model: nn.Module, x, eps, norm, C, rounding: bool = True):
    """Checked arguments of a bounding verifier: (Sound, x, Ball, C or None); the ball's box is
    `ball_box`, the box `reach` takes too, so the two bound the same set."""
    x, eps, norm = checked(model, x, eps, norm)
    check_bool(rounding, "rounding")
    lower, upper = ball_box(x, eps)
    sound = Sound(model, lower, upper)
    ball = Ball(x, eps, norm, Box(lower, upper))
    return sound, x, ball, check_spec(C, x, sound.net.out_shape[0])


def affine_runs(net: Network) -> list:
    """The layers grouped as [affine run, nonlinear layer, affine run, ...] (runs may be empty)."""
    groups, run = [], []
    for layer in net.layers:
        if isinstance(layer, Affine):
            run.append(layer)
        else:
            groups += [run, layer]
            run = []
    return groups + [run]
