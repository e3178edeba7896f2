"""Defences: input transformations (and, as the package grows, training objectives and loops)."""

from .transforms import Defended, RandomResizePad, Transform, bit_depth

__all__ = ["Defended", "RandomResizePad", "Transform", "bit_depth"]

from . import smoothing  # noqa: E402  (randomized smoothing: robustlab.defences.smoothing.certify)
from .smoothing import certified_accuracy, gaussian_noise  # noqa: E402

__all__ += ["certified_accuracy", "gaussian_noise", "smoothing"]
