"""The geometry robustness is read from: the input-output Jacobian's operator norm at test
points (Roth et al. 2020) and the adversarial loss along random directions in weight space
(the weight-loss landscape of Wu et al. 2020)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_generator, check_images, check_labels, check_positive
from .._model import check_model, frozen, logits_of
from .._random import draw_device

__all__ = ["jacobian_norms", "weight_landscape"]


def jacobian_norms(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The operator (spectral, L2 -> L2) norm of the Jacobian of the logits with respect to the
    input, ``||J_f(x)||_2 = sigma_max(d f(x) / d x)``, one per example, shape (N,).

    Roth, Kilcher and Hofmann, "Adversarial training is a form of data-dependent operator norm
    regularization" (NeurIPS 2020), compare it between standard and adversarially trained models:
    a small norm means a small first-order change of the logits under any small L2 step. One
    backward pass per class (K in all), then the singular values of each (K, n) matrix. The
    model runs in eval mode with its parameters frozen and is left as found.
    """
    check_model(model)
    x = check_images(x, ndim=None).detach()
    with frozen(model):
        x = x.clone().requires_grad_(True)
        z = logits_of(model, x)
        rows = [torch.autograd.grad(z[:, k].sum(), x, retain_graph=k + 1 < z.shape[1])[0]
                for k in range(z.shape[1])]
    jac = torch.stack([r.reshape(len(x), -1) for r in rows], 1)   # (N, K, n)
    return torch.linalg.matrix_norm(jac, ord=2).detach()


def _directions(model: nn.Module, count: int, generator) -> list[list[torch.Tensor]]:
    """Filter-normalised random directions (Li et al. 2018, as Wu et al. use them): Gaussian,
    each row (output unit) of every weight rescaled to the norm of that row of the weight;
    biases and one-dimensional parameters are left alone (zero)."""
    out = []
    for _ in range(count):
        d = []
        for p in model.parameters():
            if p.dim() < 2:
                d.append(torch.zeros_like(p))
                continue
            r = torch.randn(p.shape, generator=generator,
                            device=draw_device(generator, p.device)).to(p)
            scale = p.flatten(1).norm(dim=1) / r.flatten(1).norm(dim=1).clamp_min(1e-12)
            d.append(r * scale.reshape(-1, *[1] * (p.dim() - 1)))
        out.append(d)
    return out


def weight_landscape(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     alphas: Sequence[float],
                     attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     directions: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """The loss along random directions in weight space: ``L(w + alpha d)`` for each alpha of
    `alphas` and each of `directions` filter-normalised Gaussian directions d (Li et al. 2018).
    With `attack` (``attack(model, x, y) -> x_adv``) it is the *adversarial* loss, the attack
    rerun at each perturbed weight: the weight-loss landscape of Wu, Xia and Wang, "Adversarial
    weight perturbation helps robust generalization" (NeurIPS 2020), whose flatness they tie to
    a small robust generalisation gap. Returns a (directions, len(alphas)) tensor of mean
    cross-entropies. The model is left exactly as found (the work happens on a copy).
    """
    check_model(model)
    x = check_images(x, ndim=None)
    y = check_labels(y, x)
    check_positive(directions, "directions", integer=True)
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas must hold at least one step")
    generator = check_generator(generator)
    probe = copy.deepcopy(model).eval()
    base = [p.detach().clone() for p in probe.parameters()]
    losses = torch.empty(directions, len(alphas))
    for i, d in enumerate(_directions(probe, directions, generator)):
        for j, a in enumerate(alphas):
            with torch.no_grad():
                for p, w, v in zip(probe.parameters(), base, d):
                    p.copy_(w + a * v)
            x_eval = x if attack is None else attack(probe, x, y)
            with frozen(probe), torch.no_grad():
                losses[i, j] = F.cross_entropy(logits_of(probe, x_eval, y), y).item()
    return losses
