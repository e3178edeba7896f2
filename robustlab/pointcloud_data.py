"""Point clouds of simple shapes, generated here (no download): the data of the 3-D part of
lesson 02d and of `robustlab.attacks.pointcloud`.

Each cloud holds `n_points` points sampled on the surface of a sphere, cube, cylinder, cone or
torus, then stretched along its axes, turned by a random angle about the vertical axis,
jittered with Gaussian noise, centred and scaled into the unit ball. A cloud is a float tensor
(P, 3); a batch is (N, P, 3), the layout of PointNet and DGCNN (`robustlab.pointcloud_models`).
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_in_range, check_positive, check_seed

__all__ = ["CLASSES", "check_points", "shapes"]

CLASSES = ("sphere", "cube", "cylinder", "cone", "torus")
TORUS_RADII = (1.0, 0.4)  # distance of the tube's centre line from the axis, tube radius
STRETCH = (0.85, 1.15)  # range of the random per-axis scale (anisotropy)


def check_points(points, name: str = "points", *, finite: bool = True) -> torch.Tensor:
    """A float32/float64 batch of point clouds (N, P, 3) with at least one point and, if
    `finite` (one read back to the host: not inside a model's forward), no NaN or inf."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {points.dtype}")
    if points.dim() != 3 or points.shape[2] != 3:
        raise ValueError(f"{name} must have shape (N, P, 3), got {tuple(points.shape)}")
    if points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(points.shape)}")
    if finite and not torch.isfinite(points).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def _uniform(shape, g, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (high - low) + low


def _sphere(n: int, p: int, g) -> torch.Tensor:
    v = torch.randn(n, p, 3, generator=g)  # isotropic: uniform directions
    return v / v.norm(dim=2, keepdim=True).clamp_min(1e-12)


def _cube(n: int, p: int, g) -> torch.Tensor:
    """The surface of [-1, 1]^3: a face (axis, sign) picked uniformly, a uniform point on it."""
    v = _uniform((n, p, 3), g, -1.0, 1.0)
    axis = torch.randint(0, 3, (n, p, 1), generator=g)
    sign = torch.randint(0, 2, (n, p, 1), generator=g).float() * 2 - 1
    return v.scatter(2, axis, sign)


def _disc(r: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return r * torch.cos(angle), r * torch.sin(angle)


def _cylinder(n: int, p: int, g) -> torch.Tensor:
    """Radius 1/2, z in [-1, 1] (twice as tall as wide, unlike the cube even when stretched):
    the side (area 2 pi) with probability 4/5, else a cap (pi / 4 each)."""
    angle, z = _uniform((n, p), g, 0, 2 * math.pi), _uniform((n, p), g, -1.0, 1.0)
    side = _uniform((n, p), g) < 4 / 5
    r = torch.where(side, 1.0, _uniform((n, p), g).sqrt()) / 2  # sqrt: uniform over a cap's area
    z = torch.where(side, z, torch.where(z >= 0, 1.0, -1.0))
    return torch.stack([*_disc(r, angle), z], 2)


def _cone(n: int, p: int, g) -> torch.Tensor:
    """Apex at z = 1, base of radius 1 at z = -1: side area pi sqrt(5), base area pi."""
    angle = _uniform((n, p), g, 0, 2 * math.pi)
    s = _uniform((n, p), g).sqrt()  # distance from the apex (side) or centre (base), area-uniform
    side = _uniform((n, p), g) < math.sqrt(5) / (math.sqrt(5) + 1)
    z = torch.where(side, 1 - 2 * s, -1.0)
    return torch.stack([*_disc(s, angle), z], 2)


def _torus(n: int, p: int, g) -> torch.Tensor:
    """Angles uniform around the axis and around the tube (denser on the inner side)."""
    big, small = TORUS_RADII
    u, v = _uniform((n, p), g, 0, 2 * math.pi), _uniform((n, p), g, 0, 2 * math.pi)
    ring = big + small * torch.cos(v)
    return torch.stack([ring * torch.cos(u), ring * torch.sin(u), small * torch.sin(v)], 2)


SAMPLERS = (_sphere, _cube, _cylinder, _cone, _torus)


def _rotations(n: int, g) -> torch.Tensor:
    """Rotations (n, 3, 3) about the vertical (z) axis by uniformly random angles: the clouds
    stay upright, as the shapes of ModelNet do (the benchmark of PointNet and DGCNN, whose
    training augments with exactly these rotations)."""
    angle = _uniform((n,), g, 0, 2 * math.pi)
    c, s, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros(n), torch.ones(n)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], 1).view(n, 3, 3)


def shapes(split: str = "train", *, n_points: int = 128, n_per_class: int | None = None,
           noise: float = 0.02, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Point clouds on the surfaces of the shapes of `CLASSES`; returns ``(points, labels)``,
    points float32 (N, n_points, 3), N = 5 * n_per_class, in a shuffled class order.

    Each cloud: points on the unit shape (area-uniform, save the torus), each axis scaled by a
    factor drawn from [0.85, 1.15], a rotation about the z axis by a uniform angle, Gaussian
    noise of standard deviation `noise`, then centred on its mean and divided by its largest
    norm, so that every cloud lies in the unit ball and touches its sphere. The train and test
    splits are drawn from different streams of the same `seed`; the same arguments give the
    same clouds.

    Arguments:
        split: "train" or "test".
        n_points: points per cloud (128 keeps training on a CPU at seconds).
        n_per_class: clouds per class; 100 for train and 40 for test if None.
        noise: standard deviation of the jitter, in units of the shape's size (>= 0, < 1).
        seed: an int in [0, 2**32).
    """
    check_choice(split, ("train", "test"), "split")
    check_positive(n_points, "n_points", integer=True)
    n_per_class = {"train": 100, "test": 40}[split] if n_per_class is None else n_per_class
    check_positive(n_per_class, "n_per_class", integer=True)
    check_in_range(noise, "noise", 0.0, 1.0, high_open=True)
    g = torch.Generator().manual_seed(2 * check_seed(seed) + (split == "test"))
    clouds = torch.cat([sample(n_per_class, n_points, g) for sample in SAMPLERS])
    labels = torch.arange(len(CLASSES)).repeat_interleave(n_per_class)
    n = len(clouds)
    clouds = clouds * _uniform((n, 1, 3), g, *STRETCH)
    clouds = clouds @ _rotations(n, g).transpose(1, 2)
    clouds = clouds + noise * torch.randn(clouds.shape, generator=g)
    clouds = clouds - clouds.mean(1, keepdim=True)
    clouds = clouds / clouds.norm(dim=2).amax(1).clamp_min(1e-12)[:, None, None]
    order = torch.randperm(n, generator=g)
    return clouds[order].float(), labels[order]
