"""Per-example losses on logits (N, K) that attacks ascend and defences train on.

Each loss takes logits `z`, labels `y` (N,) and `targeted`; with ``targeted=True`` `y` holds
target classes and the loss grows as z moves toward them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_fooled(pred: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Did an attack succeed: predicted label `pred` is the target (targeted) or not `y`."""
    return pred == y if targeted else pred != y


def other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j for each row."""
    # scatter, not one_hot: one_hot checks the labels' range on the host at every call
    return z.scatter(1, y[:, None], -torch.inf).amax(1)


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


def kl_loss(z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """KL(softmax(z_ref) || softmax(z)) per example: the divergence TRADES and VAT ascend."""
    return F.kl_div(z.log_softmax(1), z_ref.log_softmax(1), reduction="none",
                    log_target=True).sum(1)


LOSSES = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}
