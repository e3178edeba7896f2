"""What every attack shares: argument checks, model hygiene, losses, Lp steps and projections.

Conventions (DESIGN.md section 3): images in [0, 1] of shape (N, C, H, W); the returned
``x_adv`` has the shape, dtype and device of ``x``; the model's parameters, gradients,
``requires_grad`` flags and train/eval mode are as they were afterwards; attacks work inside a
caller's ``torch.no_grad()``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_eps,
    check_images,
    check_labels,
    check_logits,
    check_norm,
    check_same_device,
)


def check_attack_inputs(model: nn.Module, x, y, *, eps=None, norm="linf",
                        norms=("linf", "l2")) -> tuple[torch.Tensor, torch.Tensor, float | None, str]:
    """Validate the common arguments of an attack; return ``(x, y, eps, norm)`` canonical."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    check_same_device(model, x)
    y = check_labels(y, x) if y is not None else None
    eps = check_eps(eps) if eps is not None else None
    return x, y, eps, check_norm(norm, norms)


@contextmanager
def frozen(model: nn.Module):
    """Run `model` in eval mode with its parameters frozen, gradients on; restore it after.

    Eval mode makes the attacked function deterministic (no dropout) and keeps batch-norm
    running statistics untouched; freezing parameters keeps their ``.grad`` as it was.
    """
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def logits_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits on `x`, checked to be (N, K), with `y` checked against K."""
    out = check_logits(model(x), len(x))
    if y is not None and y.numel() and y.max().item() >= out.shape[1]:
        raise ValueError(f"y holds label {y.max().item()} but the model has only "
                         f"{out.shape[1]} classes")
    return out


def other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j for each row."""
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -torch.inf).amax(1)


def ce_loss(z: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-example loss to ascend: CE(z, y) untargeted, -CE(z, t) targeted."""
    loss = F.cross_entropy(z, y, reduction="none")
    return -loss if targeted else loss


def margin_loss(z: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Carlini-Wagner margin to ascend: max_{j!=y} z_j - z_y, or z_t - max_{j!=t} z_j."""
    z_y = z.gather(1, y[:, None])[:, 0]
    return z_y - other_max(z, y) if targeted else other_max(z, y) - z_y


def dlr_loss(z: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Difference-of-logits ratio of Croce & Hein (ICML 2020, eq. 4), untargeted form.

    -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3): scale invariant, so it defeats logit rescaling.
    For the targeted case the plain margin is used.
    """
    if targeted:
        return margin_loss(z, y, targeted=True)
    top = z.sort(1, descending=True).values
    return -(z.gather(1, y[:, None])[:, 0] - other_max(z, y)) / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
               targeted: bool = False, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-example loss wrt the input, and the logits at `x`.

    `check=False` skips the logits and label checks: iterative attacks check on their first
    step only, since the label check syncs with the device.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    x = x.detach().requires_grad_(True)
    z = logits_of(model, x, y) if check else model(x)
    (g,) = torch.autograd.grad(LOSSES[loss](z, y, targeted).sum(), x)
    return g, z.detach()


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


def per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-example values (N,) to broadcast against `like` (N, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def steepest(g: torch.Tensor, norm: str, x_adv: torch.Tensor | None = None,
             l1_top: float = 0.05) -> torch.Tensor:
    """Unit-norm steepest-ascent direction for gradient `g` under `norm`.

    L-inf: sign(g). L2: g / ||g||_2. L1: the sparse direction of Tramer & Boneh (NeurIPS 2019,
    "SLIDE"): sign(g) on the top `l1_top` fraction of |g| (at least one coordinate), skipping
    coordinates that `x_adv` cannot move further inside [0, 1], scaled to unit L1 norm.
    """
    if norm == "linf":
        return g.sign()
    if norm == "l2":
        return g / per_example(flat_norm(g, "l2").clamp_min(1e-12), g)
    a = g.abs()
    if x_adv is not None:  # a pixel at 0 cannot go down, one at 1 cannot go up
        a = a.masked_fill(((x_adv <= 0) & (g < 0)) | ((x_adv >= 1) & (g > 0)), 0)
    flat = a.flatten(1)
    k = max(1, int(round(l1_top * flat.shape[1])))
    thresh = flat.topk(k, dim=1).values[:, -1:]
    mask = ((flat >= thresh) & (flat > 0)).view_as(g).to(g.dtype)
    d = g.sign() * mask
    return d / per_example(flat_norm(d, "l1").clamp_min(1e-12), d)


def project_l1(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each row of `v` onto the L1 ball of radius `eps`.

    Duchi, Shalev-Shwartz, Singer and Chandra (ICML 2008), Figure 1: sort |v|, find the
    threshold theta, soft-threshold.
    """
    flat = v.flatten(1)
    a = flat.abs()
    inside = a.sum(1) <= eps
    u = a.sort(1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - (css - eps) / j) > 0).to(v.dtype).mul(j).argmax(1, keepdim=True)
    theta = (css.gather(1, rho) - eps) / (rho + 1).to(v.dtype)
    w = flat.sign() * (a - theta).clamp_min(0)
    return torch.where(inside[:, None], flat, w).view_as(v)


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project each perturbation in `delta` onto the `norm` ball of radius `eps`."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        n = flat_norm(delta, "l2")
        return delta * per_example((eps / n.clamp_min(1e-12)).clamp(max=1.0), delta)
    return project_l1(delta, eps)


def clip_box(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The part of `delta` that keeps x + delta inside [0, 1]; never leaves a norm ball."""
    return (x + delta).clamp(0, 1) - x


def random_in_ball(x: torch.Tensor, eps: float, norm: str,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A random start inside the `norm` ball of radius `eps` (CPU RNG, then moved to x's device).

    L-inf: uniform in the cube. L2 / L1: a uniformly random direction at a radius drawn uniformly
    in [0, eps], the usual PGD start (as torchattacks and Rony et al. 2019 do). A volume-uniform
    draw would put nearly every start on the sphere itself in high dimension.
    """
    shape = x.shape
    if norm == "linf":
        d = torch.rand(shape, generator=generator) * 2 - 1
        return (d * eps).to(x)
    if norm == "l2":
        d = torch.randn(shape, generator=generator)
    else:  # signs times a Dirichlet(1,...,1) point: uniform on the L1 sphere
        e = torch.empty(shape).exponential_(generator=generator)
        s = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        d = e * s
    d = d / per_example(flat_norm(d, norm), d)
    r = torch.rand(len(x), generator=generator)
    return (d * per_example(r, d) * eps).to(x)
