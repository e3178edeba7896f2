"""Perceptual similarity: SSIM, an LPIPS-style feature distance, and its weights fitted to
proxy two-alternative forced-choice (2AFC) judgements.

Both metrics are per example and differentiable; attacks (`attacks.perceptual_pgd`) and
evaluators bound or report them. They live in the core so both layers may use them.

The judgements `calibrate_weights` fits are a PROXY built by `proxy_judgements` from distortions
known to be perceptible (blur, a one-pixel shift, deleting part of a stroke) against ones at the
same L2 distance that change little the eye notices (the ink dimmed uniformly). No human
ever saw them: Zhang et al.'s BAPPS judgements came from people, and these only encode the
prior that structure matters more than contrast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    check_bool,
    check_generator,
    check_images,
    check_nonnegative,
    check_positive,
)
from ._model import eval_mode
from ._random import draw_device
from .norms import flat_norm, per_example

__all__ = ["FeatureDistance", "calibrate_weights", "channel_distances", "dim_at",
           "feature_distance", "gaussian_window", "proxy_judgements", "ssim"]

_UNIT_EPS = 1e-10  # LPIPS's guard in its channel normalisation (all-zero ReLU features)


def _check_pair(x, y, name: str = "y") -> None:
    for n, t in (("x", x), (name, y)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{n} must be a floating torch.Tensor")
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"x and {name} must be images (N, C, H, W) of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def gaussian_window(window: int, sigma: float, *, like: torch.Tensor) -> torch.Tensor:
    """The `window` x `window` Gaussian of std `sigma`, summing to 1, on `like`'s device."""
    r = torch.arange(window, dtype=like.dtype, device=like.device) - (window - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g2 = g[:, None] * g[None, :]
    return g2 / g2.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, *, window: int = 3, sigma: float = 1.0,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of each pair of images: 1 for identical images.

    Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility to
    structural similarity" (IEEE TIP 2004), eq. 13 at every position,
        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 +
               sigma_y^2 + C2)),  C1 = (0.01 L)^2, C2 = (0.03 L)^2,
    with the local statistics under a Gaussian window (eqs. 14-16) over the positions where it
    fits whole, then averaged over positions and channels (eq. 17, MSSIM). The paper's window
    (11 x 11, sigma 1.5) is wider than an 8 x 8 digit; the default 3 x 3 with sigma 1 leaves
    6 x 6 positions on one, local enough to see a stroke.

    Args:
        x, y: images (N, C, H, W) of the same shape.
        window: odd side of the window, at most min(H, W).
        sigma: the window's standard deviation, in pixels.
        data_range: L, the pixels' range (1 for images in [0, 1]).
    Returns (N,): one SSIM per pair, in [-1, 1].
    """
    _check_pair(x, y)
    check_positive(window, "window", integer=True)
    if window % 2 == 0 or window > min(x.shape[-2:]):
        raise ValueError(f"window must be odd and at most min(H, W) = {min(x.shape[-2:])}, got "
                         f"{window}")
    check_positive(sigma, "sigma")
    check_positive(data_range, "data_range")
    channels = x.shape[1]
    g = gaussian_window(window, sigma, like=x).expand(channels, 1, window, window)

    def local_mean(t):  # per channel: a depthwise convolution
        return F.conv2d(t, g, groups=channels)

    mx, my = local_mean(x), local_mean(y)
    # the same expression for x and y, so ssim(x, x) is exactly 1.0 in floating point
    vx, vy = local_mean(x * x) - mx * mx, local_mean(y * y) - my * my
    cxy = local_mean(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def _activations(network: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """The outputs of the named submodules of `network` at `x`, each as (N, C, positions)."""
    modules = dict(network.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not submodules of network; it has "
                         f"{[n for n in modules if n][:20]}")
    seen: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: seen.__setitem__(name, out)) for name in layers]
    try:
        with eval_mode(network):
            network(x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[name].flatten(2) if seen[name].dim() > 2 else seen[name][..., None]
            for name in layers]


def _unit_features(network: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """Each layer's activations at `x`, unit-normalised across channels at each position."""
    return [f / (f.norm(dim=1, keepdim=True) + _UNIT_EPS) for f in _activations(network, x, layers)]


def _squared_differences(ux: list[torch.Tensor], uy: list[torch.Tensor]) -> list[torch.Tensor]:
    return [((a - b) ** 2).mean(2) for a, b in zip(ux, uy)]


def channel_distances(x: torch.Tensor, y: torch.Tensor, *, network: nn.Module,
                      layers: Sequence[str]) -> list[torch.Tensor]:
    """Per layer, (N, C_l): each channel's squared difference of the unit-normalised
    activations, averaged over positions; `feature_distance` weighs and sums them."""
    return _squared_differences(_unit_features(network, x, layers),
                                _unit_features(network, y, layers))


def _check_layers(network, layers) -> list[str]:
    if not isinstance(network, nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError("layers must be a non-empty list of submodule names of network, e.g. "
                         "['1', '3'] for the ReLUs of a Sequential")
    return list(layers)


class FeatureDistance:
    """`feature_distance` with its network, layers and weights fixed, the weights checked once
    (an attack calls it every step: no check that reads values back to the host there)."""

    def __init__(self, *, network: nn.Module, layers: Sequence[str], weights: Sequence | None = None):
        self.network, self.layers = network, _check_layers(network, layers)
        self.weights = None if weights is None else _check_weight_values(weights, len(self.layers))
        self._placed: dict[tuple, list[torch.Tensor]] = {}  # weights per (device, dtype)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y)
        terms = channel_distances(x, y, network=self.network, layers=self.layers)
        return self._weighted(terms)

    def from_reference(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``d(x, .)`` with x's features computed once: an attack's many candidates share x."""
        ux = _unit_features(self.network, x, self.layers)

        def distance(y: torch.Tensor) -> torch.Tensor:
            _check_pair(x, y)
            return self._weighted(_squared_differences(ux, _unit_features(self.network, y,
                                                                          self.layers)))
        return distance

    def _weighted(self, terms: list[torch.Tensor]) -> torch.Tensor:
        return sum((t * w).sum(1) for t, w in zip(terms, self._weights_for(terms)))

    def _weights_for(self, terms: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.weights is None:
            return [torch.ones((), dtype=t.dtype, device=t.device) for t in terms]
        key = (terms[0].device, terms[0].dtype)
        if key not in self._placed:  # one copy to the device, not one per call
            self._placed[key] = [w.to(*key) for w in self.weights]
        placed = self._placed[key]
        for i, (w, t) in enumerate(zip(placed, terms)):
            if w.numel() not in (1, t.shape[1]):
                raise ValueError(f"weights[{i}] has {w.numel()} entries, but layer "
                                 f"{self.layers[i]!r} has {t.shape[1]} channels (give one "
                                 f"number, or one per channel)")
        return placed


def feature_distance(x: torch.Tensor, y: torch.Tensor, *, network: nn.Module,
                     layers: Sequence[str], weights: Sequence | None = None) -> torch.Tensor:
    """LPIPS-style distance of each pair of images through a network's layers: 0 for identical.

    Zhang, Isola, Efros, Shechtman and Wang, "The unreasonable effectiveness of deep features
    as a perceptual metric" (CVPR 2018), eq. 1:
        d(x, y) = sum_l 1/(H_l W_l) sum_{h,w} sum_c w_lc (u^l_x(h,w) - u^l_y(h,w))_c^2,
    u^l the activations of layer l unit-normalised across channels at each position, w_lc >= 0
    (LPIPS writes || w_l * (u_x - u_y) ||^2, i.e. squares its w; here the weights are the
    coefficients themselves, so d is linear in them). sqrt(d) is a pseudo-metric (symmetric,
    triangle inequality: a Euclidean distance of the mapped features). The network runs in
    eval mode and is left as found; gradients flow to x and y.

    Args:
        x, y: images (N, C, H, W) of the same shape.
        network: any module; its `layers` are read with forward hooks.
        layers: names of submodules (as ``network.named_modules()`` gives them); a layer whose
            output is (N, C) counts as one position.
        weights: per layer, a number or a (C_l,) tensor of non-negative weights; all 1 if None
            (`calibrate_weights` fits them).
    Returns (N,).
    """
    return FeatureDistance(network=network, layers=layers, weights=weights)(x, y)


def _check_weight_values(weights, layers: int) -> list[torch.Tensor]:
    if isinstance(weights, (str, torch.Tensor)) or not isinstance(weights, Sequence) \
            or len(weights) != layers:
        raise ValueError(f"weights must be a list with one entry per layer ({layers})")
    out = []
    for i, w in enumerate(weights):
        w = torch.as_tensor(w).detach().flatten()
        if not w.is_floating_point() and w.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"weights[{i}] must be numbers, got dtype {w.dtype}")
        if not bool(torch.isfinite(w).all() & (w >= 0).all()):
            raise ValueError(f"weights[{i}] must be finite and >= 0")
        out.append(w.double())
    return out


def _blur(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 box blur, edges replicated: thin strokes smear into their background."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(padded, 3, stride=1)


def _shift(x: torch.Tensor) -> torch.Tensor:
    """One pixel to the right, the vacated column black."""
    return F.pad(x[..., :-1], (1, 0))


def _delete_stroke(x: torch.Tensor) -> torch.Tensor:
    """The brightest 2 x 2 block (summed over channels) set to black: part of a stroke gone."""
    sums = F.avg_pool2d(x.sum(1, keepdim=True), 2, stride=1)  # (N, 1, H-1, W-1)
    at = sums.flatten(1).argmax(1)
    rows, cols = at // sums.shape[-1], at % sums.shape[-1]
    dr = torch.arange(x.shape[-2], device=x.device)[None] - rows[:, None]  # (N, H)
    dc = torch.arange(x.shape[-1], device=x.device)[None] - cols[:, None]  # (N, W)
    inside = ((dr >= 0) & (dr < 2))[:, :, None] & ((dc >= 0) & (dc < 2))[:, None, :]
    return x * ~inside[:, None]


PERCEPTIBLE = {"blur": _blur, "shift": _shift, "stroke": _delete_stroke}


def dim_at(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """`x` with every pixel scaled by the same factor toward black, L2 distance `radius` (N,)
    (at most ||x||): the ink fades but every stroke stays where it was. A change of contrast,
    as in Wang et al. 2004's Fig. 2, where it keeps SSIM high at the MSE at which blur drops it."""
    scale = 1 - radius / flat_norm(x, "l2").clamp(min=1e-12)
    return x * per_example(scale, x)


def proxy_judgements(x: torch.Tensor, *, radius: float = 2.0,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """2AFC triplets from images: a perceptible and a low-visibility distortion of each, at
    equal L2 distance, in random order. A PROXY for human judgements (see the module's text).

    Each image x_i gets one of `PERCEPTIBLE` (blur, shift, stroke deletion, in turn), scaled
    toward x_i to L2 distance r_i = min(radius, its own distance, ||x_i||), and `dim_at` r_i.

    Args:
        x: images (N, C, H, W) in [0, 1].
        radius: the largest L2 distance of a pair.
        generator: draws which of the two comes first.
    Returns ``(x, a, b, a_farther)``: `a_farther[i]` is True where a_i is the perceptible one.
    """
    x = check_images(x)
    check_positive(radius, "radius")
    check_generator(generator)
    every = torch.stack([f(x) for f in PERCEPTIBLE.values()])  # (kinds, N, C, H, W)
    n = torch.arange(len(x), device=x.device)
    distorted = every[n % len(PERCEPTIBLE), n]
    away = distorted - x
    dist = flat_norm(away, "l2")
    r = torch.minimum(torch.clamp(dist, max=radius), flat_norm(x, "l2"))
    # a convex step toward the distorted image: stays in [0, 1]
    perceptible = x + away * per_example(r / dist.clamp(min=1e-12), x)
    subtle = dim_at(x, r)
    first = torch.rand(len(x), generator=generator, device=draw_device(generator, x.device))
    a_farther = (first < 0.5).to(x.device)
    a = torch.where(per_example(a_farther, x), perceptible, subtle)
    b = torch.where(per_example(a_farther, x), subtle, perceptible)
    return x, a, b, a_farther


def calibrate_weights(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, a_farther: torch.Tensor,
                      *, network: nn.Module, layers: Sequence[str], per_channel: bool = False,
                      steps: int = 300, lr: float = 0.05, ridge: float = 1e-3
                      ) -> list[torch.Tensor]:
    """Non-negative weights for `feature_distance` that rank 2AFC pairs as the judgements do.

    Zhang et al. 2018 section 3 fit LPIPS's per-channel weights to 2AFC judgements through a
    small network on (d0, d1); since the distance is linear in the weights, a logistic model
        P(a judged farther) = sigmoid(d(x, a) - d(x, b)) = sigmoid(w . (D_a - D_b))
    suffices here (D the per-channel terms of `channel_distances`), fitted by projected
    gradient descent (Adam, then w clipped at 0) with a ridge penalty `ridge` ||w||^2.

    Args:
        x, a, b, a_farther: as `proxy_judgements` returns them (or real judgements).
        per_channel: one weight per channel (LPIPS) instead of one per layer.
        steps, lr: the optimiser's steps and learning rate (full batch, deterministic).
    Returns a list with one weight tensor per layer: (C_l,) or, per layer, a 0-d tensor.
    """
    _check_pair(x, a, "a")
    _check_pair(x, b, "b")
    layers = _check_layers(network, layers)
    check_bool(per_channel, "per_channel")
    check_positive(steps, "steps", integer=True)
    check_positive(lr, "lr")
    check_nonnegative(ridge, "ridge")
    if not isinstance(a_farther, torch.Tensor) or a_farther.shape != (len(x),):
        raise ValueError(f"a_farther must be a tensor of shape ({len(x)},)")
    with torch.no_grad():
        da = channel_distances(x, a, network=network, layers=layers)
        db = channel_distances(x, b, network=network, layers=layers)
    if not per_channel:
        da, db = [t.sum(1, keepdim=True) for t in da], [t.sum(1, keepdim=True) for t in db]
    sizes = [t.shape[1] for t in da]
    diff = torch.cat(da, 1) - torch.cat(db, 1)  # (N, P)
    target = a_farther.to(diff.device, diff.dtype)
    w = torch.ones(diff.shape[1], dtype=diff.dtype, device=diff.device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(diff @ w, target) + ridge * (w * w).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.clamp_(min=0.0)  # the projection onto w >= 0
    w = w.detach()
    return [part if per_channel else part[0] for part in torch.split(w, sizes)]
