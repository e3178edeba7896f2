"""Lp geometry shared by attacks, defences and verifiers: norms, dual norms, projections, steps.

Norms are named "linf", "l2", "l1" (and "l0" where a count makes sense), as `check_norm`
returns them. Every function works per example on a batch (N, ...).
"""

from __future__ import annotations

import torch

from ._random import draw_device

DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}


def dual_norm(norm: str) -> str:
    """The dual of an Lp norm (1/p + 1/q = 1): linf <-> l1, l2 <-> l2."""
    return DUAL[norm]


def per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-example values (N,) to broadcast against `like` (N, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def flat_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example Lp norm of `v` (N, ...) -> (N,)."""
    v = v.flatten(1)
    if norm == "linf":
        return v.abs().amax(1)
    if norm == "l2":
        return v.norm(dim=1)
    if norm == "l1":
        return v.abs().sum(1)
    return (v != 0).sum(1).to(v.dtype)  # l0


def finite_direction(g: torch.Tensor) -> torch.Tensor:
    """`g` made safe to normalise: NaN entries set to 0 and, in an example with an infinite
    entry, only the infinite entries kept, as +-1 (the limit of g / ||g|| as they grow).

    A model that applies sqrt to its input has an infinite gradient at 0; without this,
    g / ||g||_2 = inf / inf would put NaN pixels into an attack's output.
    """
    inf = g.isinf()
    row_inf = per_example(inf.flatten(1).any(1), g)
    return torch.where(row_inf, inf.to(g.dtype) * g.sign(), g.nan_to_num(nan=0.0))


def steepest(g: torch.Tensor, norm: str, x_adv: torch.Tensor | None = None,
             l1_top: float = 0.05) -> torch.Tensor:
    """Unit-norm steepest-ascent direction for gradient `g` under `norm`, never NaN.

    L-inf: sign(g). L2: g / ||g||_2. L1: the sparse direction of Tramer & Boneh (NeurIPS 2019,
    "SLIDE"): sign(g) on the top `l1_top` fraction of |g| (at least one coordinate), skipping
    coordinates that `x_adv` cannot move further inside [0, 1], scaled to unit L1 norm.
    """
    if norm == "linf":  # sign(+-inf) = +-1 already; only NaN needs a value
        return g.sign().nan_to_num(nan=0.0)
    if norm == "l2":
        # One pass instead of finite_direction's several (PGD-L2 runs this every step): an
        # infinite entry becomes a finite one so large that it dominates its row's norm (its
        # square summed over the row still fits the dtype), NaN becomes 0.
        big = torch.finfo(g.dtype).max ** 0.5 / g[0].numel()
        g = g.nan_to_num(nan=0.0, posinf=big, neginf=-big)
        return g / per_example(flat_norm(g, "l2").clamp_min(1e-12), g)
    g = finite_direction(g)
    a = g.abs()
    if x_adv is not None:  # a pixel at 0 cannot go down, one at 1 cannot go up
        a = a.masked_fill(((x_adv <= 0) & (g < 0)) | ((x_adv >= 1) & (g > 0)), 0)
    flat = a.flatten(1)
    k = max(1, int(round(l1_top * flat.shape[1])))
    thresh = flat.topk(k, dim=1).values[:, -1:]
    mask = ((flat >= thresh) & (flat > 0)).view_as(g).to(g.dtype)
    d = g.sign() * mask
    return d / per_example(flat_norm(d, "l1").clamp_min(1e-12), d)


def radius(eps: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A radius that broadcasts against `like` (N, ...): a number as it is, per-example radii
    (N,) reshaped to (N, 1, ..., 1)."""
    return per_example(eps, like) if isinstance(eps, torch.Tensor) else eps


def project_l1(v: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of `v` onto the L1 ball of radius `eps` (a number, or
    one radius per row).

    Duchi, Shalev-Shwartz, Singer and Chandra (ICML 2008), Figure 1: sort |v|, find the
    threshold theta, soft-threshold.
    """
    flat = v.flatten(1)
    eps = radius(eps, flat)
    a = flat.abs()
    inside = a.sum(1, keepdim=True) <= eps
    u = a.sort(1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - (css - eps) / j) > 0).to(v.dtype).mul(j).argmax(1, keepdim=True)
    theta = (css.gather(1, rho) - eps) / (rho + 1).to(v.dtype)
    w = flat.sign() * (a - theta).clamp_min(0)
    return torch.where(inside, flat, w).view_as(v)


def project(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Project each perturbation in `delta` onto the `norm` ball of radius `eps` (a number, or
    a tensor (N,) of one radius per example)."""
    if norm == "linf":
        r = radius(eps, delta)
        return delta.clamp(-r, r)
    if norm == "l2":
        n = flat_norm(delta, "l2")
        return delta * per_example((eps / n.clamp_min(1e-12)).clamp(max=1.0), delta)
    return project_l1(delta, eps)


def clip_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The part of `delta` that keeps x + delta inside [0, 1]; never leaves a norm ball."""
    return (x + delta).clamp(0, 1) - x


def random_in_ball(x: torch.Tensor, eps: float | torch.Tensor, norm: str,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A random start inside the `norm` ball of radius `eps` (a number, or a tensor (N,) of one
    radius per example), drawn on the generator's device.

    L-inf: uniform in the cube. L2 / L1: a uniformly random direction at a radius drawn uniformly
    in [0, eps], the usual PGD start (as torchattacks and Rony et al. 2019 do). A volume-uniform
    draw would put nearly every start on the sphere itself in high dimension. With a CPU
    generator (or none) the draw is the same whatever x's device.
    """
    shape, dev = x.shape, draw_device(generator, x.device)
    if norm == "linf":
        d = torch.rand(shape, generator=generator, device=dev) * 2 - 1
        return _scaled(d, eps, x)
    if norm == "l2":
        d = torch.randn(shape, generator=generator, device=dev)
    else:  # signs times a Dirichlet(1,...,1) point: uniform on the L1 sphere
        e = torch.empty(shape, device=dev).exponential_(generator=generator)
        s = torch.randint(0, 2, shape, generator=generator, device=dev) * 2 - 1
        d = e * s
    d = d / per_example(flat_norm(d, norm), d)
    r = torch.rand(len(x), generator=generator, device=dev)
    return _scaled(d * per_example(r, d), eps, x)


def _scaled(d: torch.Tensor, eps: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`d` times the radius, as x's dtype on x's device (a number multiplies on the draw's
    device, as it always has, so seeded draws keep their values)."""
    return (d * eps).to(x) if not isinstance(eps, torch.Tensor) else d.to(x) * radius(eps, x)
