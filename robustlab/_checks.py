"""Argument checks shared by the whole library: each failure names the argument at fault."""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = {"linf": "linf", "inf": "linf", math.inf: "linf", "l2": "l2", 2: "l2",
         "l1": "l1", 1: "l1", "l0": "l0", 0: "l0"}


def check_norm(norm, allowed=("linf", "l2")) -> str:
    """Return the canonical name ("linf", "l2", "l1", "l0") of `norm`, or raise."""
    key = norm.lower() if isinstance(norm, str) else norm
    try:
        name = NORMS.get(key)
    except TypeError:  # unhashable
        name = None
    if name is None or name not in allowed:
        raise ValueError(f"norm must be one of {list(allowed)}, got {norm!r}")
    return name


def check_eps(eps, name: str = "eps") -> float:
    """A finite, non-negative perturbation budget."""
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape "
                             f"{tuple(eps.shape)}")
        eps = eps.item()
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    return float(eps)


def check_positive(value, name: str, integer: bool = False):
    """A strictly positive number (an int when `integer`)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, "
                        f"got {type(value).__name__}")
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_images(x, name: str = "x", ndim: int | None = 4) -> torch.Tensor:
    """A floating tensor of images in [0, 1] with no NaN, shape (N, C, H, W) by default."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    lo, hi = (t.item() for t in torch.aminmax(x))  # one pass, one sync; NaN propagates to both
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} contains NaN")
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must lie in [0, 1] (pixel space; put normalisation inside "
                         f"the model with robustlab.models.Normalize), got range [{lo:.3g}, {hi:.3g}]")
    return x


def check_labels(y, x: torch.Tensor, num_classes: int | None = None, name: str = "y"):
    """Integer labels (N,) on the device of `x`, within range when `num_classes` is known."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},) to match x, "
                         f"got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"{name} is on {y.device} but x is on {x.device}")
    if y.numel() and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"{name} holds labels outside [0, {num_classes}): "
                         f"range [{y.min().item()}, {y.max().item()}]")
    return y.long()


def check_logits(out, n: int, name: str = "model") -> torch.Tensor:
    """The output of a classifier: logits of shape (n, K)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of logits, got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"{name} must return logits of shape (N, K) = ({n}, K), "
                         f"got {tuple(out.shape)}")
    return out


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None for a stateless model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return None


def check_same_device(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    dev = model_device(model)
    if dev is not None and dev != x.device:
        raise ValueError(f"{name} is on {x.device} but the model is on {dev}; move one of them")
