"""Defences: input transformations (transforms), training objectives for `train.fit`
(objectives: FGSM-AT, PGD-AT, Fast-AT; dro: TRADES, VAT, WRM), defences that change the
training loop (loops: Free-AT, YOPO, AWP), regularisers of the weights (regularisers: spectral
normalisation, Parseval networks, Björck orthonormal layers with GroupSort, the weight
correlation penalty, early stopping on robust validation accuracy) and randomized smoothing
(smoothing: `robustlab.defences.smoothing.predict` and `certify`)."""

from . import smoothing
from .dro import trades, vat, vat_direction, wrm
from .freelb import freelb
from .latent import latent_at, latent_discriminator
from .loops import awp, free_at, yopo
from .objectives import cyclic_lr, fast_at, fgsm_at, pgd_at
from .regularisers import (
    BestRobust,
    BjorckLinear,
    GroupSort,
    bjorck,
    parseval,
    parseval_retraction,
    spectral_normalised,
    spectral_norms,
    weight_correlation,
    weight_correlation_penalty,
)
from .smoothing import certified_accuracy, gaussian_noise
from .transforms import Defended, RandomResizePad, Transform, bit_depth

__all__ = ["BestRobust", "BjorckLinear", "Defended", "GroupSort", "RandomResizePad", "Transform",
           "awp", "bit_depth", "bjorck", "certified_accuracy", "cyclic_lr", "fast_at", "fgsm_at",
           "free_at", "gaussian_noise", "parseval", "parseval_retraction", "pgd_at", "smoothing",
           "spectral_normalised", "spectral_norms", "trades", "vat", "vat_direction",
           "weight_correlation", "weight_correlation_penalty", "wrm", "yopo"]
__all__ += ["freelb", "latent_at", "latent_discriminator"]
