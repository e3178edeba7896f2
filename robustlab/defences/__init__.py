"""Defences: input transformations (transforms) and training objectives for `train.fit`
(objectives: FGSM-AT, PGD-AT, Fast-AT, TRADES, VAT, WRM)."""

from .objectives import cyclic_lr, fast_at, fgsm_at, pgd_at, trades, vat, vat_direction, wrm
from .transforms import Defended, RandomResizePad, Transform, bit_depth

__all__ = ["Defended", "RandomResizePad", "Transform", "bit_depth", "cyclic_lr", "fast_at",
           "fgsm_at", "pgd_at", "trades", "vat", "vat_direction", "wrm"]
