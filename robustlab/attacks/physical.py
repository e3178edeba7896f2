"""A printed-and-photographed scene, simulated: random rotation, scale, lighting and blur.

Physical attacks (Kurakin, Goodfellow and Bengio 2017; Athalye, Engstrom, Ilyas and Kwok 2018;
Eykholt et al. 2018) must survive the camera: the printed pattern is seen at an angle and a
distance, under other light, slightly out of focus. Expectation over Transformation (EOT,
Athalye et al. 2018, eq. 1) optimises the attack on average over a distribution T of such
transformations,
    p* = argmax_p  E_{t ~ T, l ~ L} [ log Pr(target | t(A(p, x, l))) ],
and `Photographed` is T made into a module: wrapped around a model, every forward draws a fresh
t per image, so `attacks.patch(Photographed(model, ...), ...)` is the EOT patch and
`attacks.patch_success(Photographed(model, ...), ...)` its success under T.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_generator, check_images, check_in_range, check_nonnegative
from .._random import draw_device

__all__ = ["Photographed", "physical_transforms"]


def _uniform(n: int, low: float, high: float, generator, x: torch.Tensor) -> torch.Tensor:
    """n draws from U[low, high] on the generator's device, moved to x's device and dtype."""
    dev = draw_device(generator, x.device)
    u = torch.rand(n, generator=generator, device=dev, dtype=x.dtype)
    return (low + (high - low) * u).to(x.device)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred by its own 3 x 3 Gaussian of std sigma_i (sigma 0: unchanged)."""
    n, c, h, w = x.shape
    r = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    # exp(-r^2 / 2 sigma^2) with sigma floored: a vanishing sigma gives the identity kernel
    g = torch.exp(-r ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))  # (N, 3)
    k = g[:, :, None] * g[:, None, :]
    k = (k / k.sum((1, 2), keepdim=True)).repeat_interleave(c, 0)[:, None]  # (N C, 1, 3, 3)
    out = F.conv2d(F.pad(x.reshape(1, n * c, h, w), (1, 1, 1, 1), mode="replicate"), k,
                   groups=n * c)
    return out.reshape(n, c, h, w)


def physical_transforms(x: torch.Tensor, *, rotation: float = 15.0, scale: float = 0.1,
                        brightness: float = 0.15, contrast: float = 0.2, blur: float = 0.8,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image photographed once: a random rotation and scale, lighting and blur.

    The EOT distribution of Athalye, Engstrom, Ilyas and Kwok, "Synthesizing robust adversarial
    examples" (ICML 2018), section 2 and eq. 1, restricted to 2-D: per image, independently,
        angle ~ U[-rotation, rotation] degrees,   s ~ U[1 - scale, 1 + scale],
        c ~ U[1 - contrast, 1 + contrast],          b ~ U[-brightness, brightness],
        sigma ~ U[0, blur],
        t(x) = clip_[0,1]( G_sigma * (c R_angle,s(x) + b) ),
    R the rotation and zoom by s about the centre (bilinear, edges replicated: the scene goes on
    beyond the frame) and G_sigma a 3 x 3 Gaussian blur. Differentiable in x; all zeros give x.

    Args:
        x: images (N, C, H, W) in [0, 1].
        rotation: largest angle in degrees; scale, brightness, contrast: half-widths of their
            ranges (scale and contrast below 1); blur: the largest sigma, in pixels.
        generator: draws the parameters (on its device, see `_random.draw_device`).
    Returns the photographed images, a new tensor of x's shape, dtype and device.
    """
    x = check_images(x)
    ranges = _check_ranges(rotation=rotation, scale=scale, brightness=brightness,
                           contrast=contrast, blur=blur)
    return _photograph(x, check_generator(generator), **ranges)


def _check_ranges(**ranges: float) -> dict:
    unknown = set(ranges) - {"rotation", "scale", "brightness", "contrast", "blur"}
    if unknown:
        raise TypeError(f"unknown transformation ranges: {sorted(unknown)}")
    for name in ("rotation", "brightness", "blur"):
        if name in ranges:
            check_nonnegative(ranges[name], name)
    for name in ("scale", "contrast"):
        if name in ranges:
            check_in_range(ranges[name], name, 0.0, 1.0, high_open=True)
    return ranges


def _photograph(x: torch.Tensor, generator, *, rotation: float = 15.0, scale: float = 0.1,
                brightness: float = 0.15, contrast: float = 0.2, blur: float = 0.8) -> torch.Tensor:
    """`physical_transforms` without its checks (no host sync: an attack calls it each step)."""
    n = len(x)
    angle = _uniform(n, -rotation, rotation, generator, x) * (math.pi / 180)
    s = _uniform(n, 1 - scale, 1 + scale, generator, x)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, x)
    b = _uniform(n, -brightness, brightness, generator, x)
    sigma = _uniform(n, 0.0, blur, generator, x)
    # affine_grid maps output to input coordinates: the inverse of "rotate by angle, zoom by s"
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    seen = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lit = c[:, None, None, None] * seen + b[:, None, None, None]
    return _blur(lit, sigma).clamp(0, 1)


class Photographed(nn.Module):
    """A model that sees each input through a fresh `physical_transforms` draw: the EOT
    distribution as a module (Athalye et al. 2018, eq. 1), to train and measure patches with.

    Args:
        model: the classifier; its parameters are this module's (so `frozen` freezes them).
        generator: draws every transformation; the same seed gives the same sequence.
        ranges: keyword arguments of `physical_transforms` (rotation, scale, ...).
    """

    def __init__(self, model: nn.Module, *, generator: torch.Generator | None = None,
                 **ranges: float):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model, self.generator = model, check_generator(generator)
        self.ranges = _check_ranges(**ranges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_photograph(x, self.generator, **self.ranges))
