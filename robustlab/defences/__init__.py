"""Defences: input transformations (and, as the package grows, training objectives and loops)."""

from .transforms import Defended, RandomResizePad, Transform, bit_depth

__all__ = ["Defended", "RandomResizePad", "Transform", "bit_depth"]
