"""Adversarial attacks: plain functions ``attack(model, x, y, *, eps, norm, targeted, ...)``."""

from .gradient import fgsm, pgd

__all__ = ["fgsm", "pgd"]
