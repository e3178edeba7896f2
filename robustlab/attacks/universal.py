"""Universal attacks: one perturbation, found on a set of images, that fools most inputs.

A universal attack returns the perturbation, not adversarial images: ``uap`` gives ``v`` of
shape (1, C, H, W), applied to any batch as ``(x + v).clamp(0, 1)``; ``guap`` gives a flow field
and an additive part, applied with ``apply_guap(x, flow, v)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_in_range, check_label_range, check_nonnegative, check_positive
from .._model import check_attack_inputs, correct, frozen, logits_of, predict
from .._random import draw_device
from ..norms import project
from .deepfool import deepfool
from .spatial import flow_warp


def fooling_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of `x` (already perturbed) that `model` does not label `y`, in eval mode.

    1 - accuracy on x: the same core (`correct`) as robust accuracy, with the same checks.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    check_positive(batch_size, "batch_size", integer=True)
    return (~correct(model, x, y, batch_size=batch_size)).sum().item() / len(x)


def uap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
        max_passes: int = 10, target_fooling: float = 0.8, overshoot: float = 0.02,
        deepfool_steps: int = 50, generator: torch.Generator | None = None) -> torch.Tensor:
    """Universal adversarial perturbation: one v with ||v||_p <= eps that fools most of `x`.

    Moosavi-Dezfooli, Fawzi, Fawzi and Frossard, "Universal adversarial perturbations" (CVPR
    2017), Algorithm 1. Starting from v = 0, pass over the images in random order; for each x_i
    still labelled y_i at x_i + v, DeepFool finds the smallest extra step r_i that crosses the
    boundary, and
        v <- P_{p, eps}(v + r_i)          (projection onto the Lp ball of radius eps).
    Stop once the fooling rate on `x` reaches `target_fooling` or after `max_passes` passes. As
    in the authors' code the inner step is L2 DeepFool for either norm; only the projection
    uses `norm`. "Fooled" means labelled other than `y`: pass the model's own predictions as y
    for the paper's definition (label change). Images are clipped to [0, 1] when evaluated.
    One departure: the fooling rate of the last v swings from pass to pass on small data sets,
    so the v with the highest rate on `x` at the end of a pass is returned, not the last one.

    Returns v of shape (1, C, H, W); apply it to any batch as ``(x + v).clamp(0, 1)``.
    """
    x, y, eps, norm = check_attack_inputs(model, x, y, eps=eps, norm=norm)
    check_positive(max_passes, "max_passes", integer=True)
    check_positive(deepfool_steps, "deepfool_steps", integer=True)
    check_in_range(target_fooling, "target_fooling", 0, 1)
    v = best = torch.zeros_like(x[:1])
    best_rate = fooling_rate(model, x, y)  # labels checked against K here, once
    for _ in range(max_passes):
        # one host sync per pass, the paper's stopping rule; a pass runs len(x) DeepFools
        if best_rate >= target_fooling:
            break
        v = _uap_pass(model, x, y, v, eps, norm, overshoot, deepfool_steps, generator)
        # fooling_rate's value without its label check (done above): the pass's one read
        rate = (predict(model, (x + v).clamp(0, 1)).argmax(1) != y).sum().item() / len(x)
        if rate > best_rate:
            best, best_rate = v, rate
    return best.detach()


def _uap_pass(model, x, y, v, eps, norm, overshoot, deepfool_steps, generator) -> torch.Tensor:
    """One pass of Algorithm 1 over `x` in random order: v <- P(v + r_i) image by image.

    No host sync of its own: the order stays a tensor, and an image already fooled at x_i + v
    goes to DeepFool too, which returns it unchanged (r_i = 0, and P leaves v in the ball as
    it is), instead of asking the host first whether it is fooled.
    """
    order = torch.randperm(len(x), generator=generator, device=draw_device(generator, x.device)).to(x.device)
    for i in range(len(x)):
        j = order[i:i + 1]
        xi = (x[j] + v).clamp(0, 1)
        r = deepfool(model, xi, y[j], norm="l2", steps=deepfool_steps, overshoot=overshoot) - xi
        v = project(v + r, eps, norm)
    return v


def guap_flow_norm(flow: torch.Tensor) -> torch.Tensor:
    """GUAP's flow budget of each flow field (N, 2, H, W) -> (N,).

    Zhang, Ruan, Wang and Huang (ICDM 2020), after stAdv's L_flow: for each of the four
    neighbour directions d, the root mean square over pixels of ||f_p - f_{p+d}||_2, with zero
    flow outside the image; then the largest over d. The zero border makes a translation cost
    its size too, so the budget bounds displacement as well as roughness.
    """
    h, w = flow.shape[2:]
    p = F.pad(flow, (1, 1, 1, 1))
    shifted = (p[:, :, 2:, 1:-1], p[:, :, :-2, 1:-1], p[:, :, 1:-1, 2:], p[:, :, 1:-1, :-2])
    per_direction = torch.stack([(flow - s).square().sum((1, 2, 3)) for s in shifted], 1)
    return (per_direction / (h * w)).sqrt().amax(1)


def apply_guap(x: torch.Tensor, flow: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """GUAP's adversarial images: clip(warp(x, flow) + v, 0, 1), one flow and v for all of x."""
    return _guap_images(check_images(x), flow, v)


def _guap_images(x: torch.Tensor, flow: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`apply_guap` on images already checked: guap's steps check nothing (a check syncs)."""
    return (flow_warp(x, flow) + v).clamp(0, 1)


def guap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, tau: float = 0.1,
         steps: int = 500, lr: float = 0.01, batch_size: int = 100,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised universal perturbation: one flow field and one additive v for a whole set.

    Zhang, Ruan, Wang and Huang, "Generalizing universal adversarial attacks beyond additive
    perturbations" (ICDM 2020). Adversarial images are x_adv = clip(warp(x, f) + v, 0, 1) with
    flow budget guap_flow_norm(f) <= tau and ||v||_inf <= eps; f and v are learned jointly by
    Adam (betas 0.5, 0.999, as in the authors' code) on minibatches of the set, maximising
        E_(x, y) log(1 + CE(model(x_adv), y)),
    the log making images that are not fooled yet count more than those already fooled.
    Simplifications: the paper produces f and v with a small generator network from fixed
    noise; here they are free tensors, v = eps tanh(w) (the generator's tanh output) and
    f = r min(1, tau / guap_flow_norm(r)) (the authors rescale to the budget); no weight decay;
    the last iterate is returned (the authors keep their best epoch).
    "Fooled" means labelled other than `y` (pass the model's predictions for label change).
    tau = 0 gives a purely additive universal perturbation, eps = 0 a purely spatial one.

    Returns ``(flow, v)`` of shapes (1, 2, H, W) and (1, C, H, W); use ``apply_guap``.
    """
    x, y, eps, _ = check_attack_inputs(model, x, y, eps=eps, norm="linf")
    tau = check_nonnegative(tau, "tau")
    for value, name in ((steps, "steps"), (batch_size, "batch_size")):
        check_positive(value, name, integer=True)
    check_positive(lr, "lr")
    x = x.detach()
    dev = draw_device(generator, x.device)
    r = (0.1 * torch.randn(1, 2, *x.shape[2:], generator=generator, device=dev)).to(x).requires_grad_(True)
    w = (0.1 * torch.randn(1, *x.shape[1:], generator=generator, device=dev)).to(x).requires_grad_(True)
    opt = torch.optim.Adam([r, w], lr=lr, betas=(0.5, 0.999))

    def current() -> tuple[torch.Tensor, torch.Tensor]:
        scale = (tau / guap_flow_norm(r).clamp_min(1e-12)).clamp(max=1)
        return r * scale.view(-1, 1, 1, 1), eps * torch.tanh(w)

    order = torch.empty(0, dtype=torch.long)
    with frozen(model):
        for step in range(steps):
            if len(order) == 0:  # a fresh random pass over the set
                order = torch.randperm(len(x), generator=generator, device=dev)
            idx, order = order[:batch_size].to(x.device), order[batch_size:]
            z = logits_of(model, _guap_images(x[idx], *current()))
            if step == 0:  # every label against K once, before any is used: a check syncs
                check_label_range(y, z.shape[1])
            loss = -torch.log1p(F.cross_entropy(z, y[idx], reduction="none")).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    flow, v = current()
    return flow.detach(), v.detach()
