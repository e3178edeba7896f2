"""Defences: input transformations (transforms), training objectives for `train.fit`
(objectives: FGSM-AT, PGD-AT, Fast-AT; dro: TRADES, VAT, WRM) and randomized smoothing
(smoothing: `robustlab.defences.smoothing.predict` and `certify`)."""

from . import smoothing
from .dro import trades, vat, vat_direction, wrm
from .objectives import cyclic_lr, fast_at, fgsm_at, pgd_at
from .smoothing import certified_accuracy, gaussian_noise
from .transforms import Defended, RandomResizePad, Transform, bit_depth

__all__ = ["Defended", "RandomResizePad", "Transform",
           "bit_depth", "certified_accuracy", "cyclic_lr", "fast_at", "fgsm_at",
           "gaussian_noise", "pgd_at", "smoothing",
           "trades", "vat", "vat_direction",
           "wrm"]
