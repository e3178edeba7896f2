"""Adversarial attacks: plain functions ``attack(model, x, y, *, eps, norm, targeted, ...)``.

One module per family: gradient (FGSM, PGD), cw, deepfool, lbfgs, spatial (stAdv), universal
(UAP, GUAP), adaptive (EOT, BPDA), blackbox (Oracle, ZOO, Square, HopSkipJump), pixel.
"""

from .adaptive import BPDA, EOT, Defended, RandomResizePad, bit_depth
from .blackbox import Oracle, QueryBudgetError, hop_skip_jump, square, zoo
from .cw import cw
from .deepfool import deepfool
from .gradient import fgsm, pgd
from .lbfgs import lbfgs
from .pixel import one_pixel, single_pixel_search
from .spatial import flow_loss, flow_warp, stadv
from .universal import apply_guap, fooling_rate, guap, guap_flow_norm, uap

__all__ = ["BPDA", "EOT", "Defended", "Oracle", "QueryBudgetError", "RandomResizePad",
           "apply_guap", "bit_depth", "cw", "deepfool", "fgsm", "flow_loss", "flow_warp",
           "fooling_rate", "guap", "guap_flow_norm", "hop_skip_jump", "lbfgs", "one_pixel", "pgd",
           "single_pixel_search", "square", "stadv", "uap", "zoo"]
