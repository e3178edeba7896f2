"""Attack presets with one set of hyperparameters each, shared by the command line and widgets.

Each preset is ``preset(model, x, y, *, eps, norm="linf", targeted=False) -> x_adv``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import fgsm, pgd


def fgsm_preset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                norm: str = "linf", targeted: bool = False) -> torch.Tensor:
    """FGSM (L-inf) / FGM (L2), one step of size eps."""
    return fgsm(model, x, y, eps=eps, norm=norm, targeted=targeted)


def pgd_preset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", targeted: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD with step eps / 8 and 40 steps (5 eps of travel: room to reach any corner of the
    ball and come back), from a random start drawn with `generator`; eps = 0 returns x, since
    the step must stay > 0."""
    if eps == 0:
        return x.clone()
    return pgd(model, x, y, eps=eps, norm=norm, alpha=eps / 8, steps=40, targeted=targeted,
               generator=generator)


PRESETS = {"fgsm": fgsm_preset, "pgd": pgd_preset}
