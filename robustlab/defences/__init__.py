"""Defences: input transformations (transforms: bit depth, median, JPEG, TV minimisation, random
resize-pad; squeeze: the feature-squeezing detector), training objectives for `train.fit`
(objectives: FGSM-AT, PGD-AT, Fast-AT, TRADES, VAT, WRM), randomized smoothing (smoothing:
`robustlab.defences.smoothing.predict` and `certify`) and data-parallel training (distributed:
any objective under torch.distributed DDP, with torchrun or `launch`)."""

from . import distributed, smoothing
from .distributed import ddp_fit, launch, shard_batches
from .objectives import cyclic_lr, fast_at, fgsm_at, pgd_at, trades, vat, vat_direction, wrm
from .smoothing import certified_accuracy, gaussian_noise
from .squeeze import SqueezeDetector, calibrate_squeezing, default_squeezers, squeeze_score
from .transforms import (
    Defended,
    RandomResizePad,
    Transform,
    bit_depth,
    jpeg,
    median_filter,
    total_variation,
    tv_denoise,
)

__all__ = ["Defended", "RandomResizePad", "Transform", "bit_depth", "certified_accuracy",
           "cyclic_lr", "fast_at", "fgsm_at", "gaussian_noise", "pgd_at", "smoothing", "trades",
           "vat", "vat_direction", "wrm"]
__all__ += ["ddp_fit", "distributed", "launch", "shard_batches"]
__all__ += ["SqueezeDetector", "calibrate_squeezing", "default_squeezers", "jpeg", "median_filter",
            "squeeze_score", "total_variation", "tv_denoise"]
