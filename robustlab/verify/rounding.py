"""Floating-point rounding of the model as it runs: a bound on how far its float32 (or other
dtype) logits may lie from the exact ones, and the check that the network a verifier read
computes what the model computes.

The verifiers bound or solve the network in real (float64) arithmetic; the model runs in its
own dtype. A margin z_y - z_j proved positive in real arithmetic can still be lost to rounding
(a network whose large terms cancel loses it on a whole grid of the ball), so "verified" asks
the proved margin to beat `rounding_bound` and a counterexample's margin to beat it too.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .._model import model_dtype, predict
from .network import Affine, MaxPool, Network, Reshape, read_network


def unit_roundoff(dtype: torch.dtype, device: torch.device | str = "cpu") -> float:
    """u, the largest relative error of one rounding of the model's arithmetic.

    2^-24 for float32, 2^-53 for float64, 2^-11 for float16, 2^-8 for bfloat16; a float32 model
    on CUDA with TF32 allowed for matrix products or cuDNN convolutions computes with 10-bit
    mantissas (u = 2^-11), and a float32 matmul precision below "highest" may use bfloat16
    passes (u = 2^-8)."""
    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        if torch.get_float32_matmul_precision() != "highest":
            u = max(u, 2.0 ** -8)
        if torch.device(device).type == "cuda" and (torch.backends.cuda.matmul.allow_tf32
                                                     or torch.backends.cudnn.allow_tf32):
            u = max(u, 2.0 ** -11)
    return u


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of a length-n dot product in
    any summation order (Higham, Accuracy and Stability of Numerical Algorithms, 2002, sec. 3.1)."""
    return n * u / (1 - n * u) if n * u < 1 else float("inf")


@torch.no_grad()
def rounding_bound(net: Network, lower: torch.Tensor, upper: torch.Tensor, u: float) -> torch.Tensor:
    """A bound (N, K) on |fl(f(x)) - f(x)| for every x in the box [lower, upper] (N, *in_shape),
    f the network in exact arithmetic and fl(f) the model's computation with unit roundoff u.

    Through an affine layer computed in floating point, |fl(W h + b) - (W h + b)| <=
    gamma_{n+m} (|W| |h| + mag) (Higham's bound for a length-n dot product, with m more
    roundings for the bias, a BatchNorm or Normalize folded into it and the fold), and an error e
    already in h grows to |W| e; a ReLU or max pool is exact and 1-Lipschitz in each input,
    so e passes through it (max-pooled). |h| is bounded by interval propagation of the box,
    computed in the box's dtype (float64, or the model's, where float64 would be slow) and
    enlarged by 1% for the rounding of that computation of sums of non-negative terms."""
    lo, hi = lower, upper
    err = torch.zeros_like(lo)
    for layer in net.layers:
        if isinstance(layer, Reshape):
            lo, hi, err = layer(lo), layer(hi), layer(err)
        elif isinstance(layer, Affine):
            size = torch.maximum(lo.abs(), hi.abs())
            g = gamma(layer.fan_in + layer.extra_ops, u)
            err = layer.linear_abs(err) + g * (layer.linear_abs(size) + layer.mag.to(size))
            mid, rad = layer((hi + lo) / 2), layer.linear_abs((hi - lo) / 2)
            lo, hi = mid - rad, mid + rad
        elif isinstance(layer, MaxPool):
            lo, hi, err = layer(lo), layer(hi), layer(err)
        else:  # ReLU
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    return err * 1.01


def as_float64(net: Network, device=None) -> Network:
    """A copy of `net` with every tensor converted to float64 (exactly) on `device`: the network
    the model computes with, its constants (folded BatchNorm, parametrised weights) as the model
    itself computed them in its dtype, to be evaluated in (nearly) exact arithmetic."""
    def convert(layer):
        if not dataclasses.is_dataclass(layer):
            return layer
        tensors = {f.name: getattr(layer, f.name).detach().to(device, torch.float64)
                   for f in dataclasses.fields(layer) if isinstance(getattr(layer, f.name), torch.Tensor)}
        return dataclasses.replace(layer, **tensors)
    return Network([convert(layer) for layer in net.layers], net.in_shape)


def read_exact(model: nn.Module, lower: torch.Tensor, upper: torch.Tensor, *,
               points: int = 8, seed: int = 0) -> tuple[Network, float]:
    """The network of `model`, read in its own dtype and on its device (so constants such as a
    folded BatchNorm or a parametrised weight are what its forward computes; `as_float64`
    converts it exactly), after checking that it computes what the model computes over the box
    [lower, upper] (N, *shape); and the model's unit roundoff.

    The model and the read network are compared at the box's centre and at `points` points of
    it (corners and uniform draws): both lie within `rounding_bound` of the exact network, so a
    difference beyond twice that bound means the reader missed part of the computation, and the
    model is refused with an error naming that, never verified. (The reader refuses by
    construction what it cannot read exactly; this comparison is a second, sampled line of
    defence.)"""
    dtype = model_dtype(model) or lower.dtype
    u = unit_roundoff(dtype, lower.device)
    with torch.no_grad():
        net = read_network(model, lower.shape[1:], like=lower)
    g = torch.Generator().manual_seed(seed)
    pts = [(lower + upper) / 2]
    for i in range(points):
        t = torch.randint(0, 2, lower.shape, generator=g) if i % 2 else torch.rand(lower.shape, generator=g)
        pts.append(lower + (upper - lower) * t.to(lower))
    pts = torch.cat(pts)
    with torch.no_grad():
        got = predict(model, pts).double()
        want = net(pts).double()  # both within the rounding bound of the exact network
        bound = 2 * rounding_bound(net, pts, pts, u).double() + 1e-300
    if got.shape != want.shape or not ((got - want).abs() <= bound).all():
        worst = ((got - want).abs() / bound).max().item() if got.shape == want.shape else float("nan")
        raise ValueError(f"model: the chain of layers read from it does not compute what its forward "
                         f"computes (differences up to {worst:.3g} times what rounding explains); it "
                         "calls something the reader cannot see, and verify refuses to bound it")
    return net, u


def outward(lower: torch.Tensor, upper: torch.Tensor, dtype: torch.dtype):
    """float64 bounds as `dtype` rounded outward: the lower one down, the upper one up, so the
    converted bounds still contain what the float64 ones did."""
    lo, up = lower.to(dtype), upper.to(dtype)
    lo = torch.where(lo.double() > lower, torch.nextafter(lo, torch.full_like(lo, -torch.inf)), lo)
    up = torch.where(up.double() < upper, torch.nextafter(up, torch.full_like(up, torch.inf)), up)
    return lo, up
