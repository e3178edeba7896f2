"""DeepFool: walk to the nearest decision boundary of the model's local linearisation.

Moosavi-Dezfooli, Fawzi and Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks" (CVPR 2016). For an affine classifier one step lands exactly on the closest
boundary; for a network the step is repeated from the new point until the label changes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_nonnegative, check_positive
from .._model import check_attack_inputs, frozen, logits_of
from ..norms import finite_direction, per_example


def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "l2",
             steps: int = 50, overshoot: float = 0.02, num_classes: int | None = None) -> torch.Tensor:
    """DeepFool, multi-class, for the L2 and L-inf norms (untargeted minimum-norm attack).

    Moosavi-Dezfooli et al. (CVPR 2016), Algorithm 2 and its l_p version (Section 3.3). At the
    current point x_i, with f'_k = Z_k - Z_y and w'_k = grad f'_k for the candidate classes k,
        l = argmin_k |f'_k| / ||w'_k||_q,   r_i = |f'_l| / ||w'_l||_q^q * |w'_l|^(q-1) sign(w'_l)
    with q the dual exponent: q = 2 for L2 (r_i = |f'_l| w'_l / ||w'_l||_2^2) and q = 1 for
    L-inf (r_i = |f'_l| sign(w'_l) / ||w'_l||_1). The steps add up to r, and
    x_{i+1} = clip_[0,1](x + (1 + overshoot) r), until the label is no longer y. As in the
    authors' code, 1e-4 is added to |f'_l| so that each step crosses the linearised boundary.

    Arguments:
        norm: "l2" or "linf". steps: most iterations per example (each stops on its own;
            the batch stops once all are done, which is read on the host every steps // 10
            steps, so that a GPU is not stalled at each one).
        overshoot: the final (1 + overshoot) scaling that pushes x' past the boundary.
        num_classes: how many classes to consider, y and the highest-scoring others at x
            (the paper's speed-up for many classes); None: all.

    Returns x_adv: the first iterate that is misclassified, or the last one after `steps`;
    an example already misclassified is returned unchanged.
    """
    x, y, _, norm = check_attack_inputs(model, x, y, norm=norm)
    check_positive(steps, "steps", integer=True)
    check_nonnegative(overshoot, "overshoot")
    if num_classes is not None and (type(num_classes) is not int or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
    q = 2 if norm == "l2" else 1
    with frozen(model):
        z0 = logits_of(model, x, y).detach()
        k = z0.shape[1] if num_classes is None else min(num_classes, z0.shape[1])
        others = z0.scatter(1, y[:, None], -math.inf).argsort(1, descending=True)[:, : k - 1]
        r_tot, x_adv = torch.zeros_like(x), x.clone()
        active = z0.argmax(1) == y
        rows = torch.arange(len(x), device=x.device)
        for step in range(steps):
            # every row takes the step and `active` masks the update, so nothing waits for the
            # device but the check for "all done", made every steps // 10 steps (a finished
            # row no longer changes: stopping later returns the same x_adv)
            if step % max(1, steps // 10) == 0 and not active.any():
                break
            xi = x_adv.detach().requires_grad_(True)
            z = logits_of(model, xi)
            f = z.gather(1, others) - z.gather(1, y[:, None])  # (N, k-1), negative while on y's side
            # rows of the batch are independent (eval mode), so one backward pass per class
            w = torch.stack([finite_direction(torch.autograd.grad(f[:, j].sum(), xi,
                                                                  retain_graph=j < k - 2)[0])
                             for j in range(k - 1)], 1)
            wn = w.flatten(2).norm(p=q, dim=2).clamp_min(1e-12)
            l = (f.abs() / wn).argmin(1)
            f_l, w_l, wn_l = f[rows, l].detach(), w[rows, l], wn[rows, l]
            scale = per_example((f_l.abs() + 1e-4) / wn_l**q, x)
            on = per_example(active, x)
            r_tot = r_tot + torch.where(on, scale * (w_l if q == 2 else w_l.sign()), 0)
            x_adv = torch.where(on, (x + (1 + overshoot) * r_tot).clamp(0, 1), x_adv)
            active = active & (logits_of(model, x_adv).argmax(1) == y)
    return x_adv.detach()
