"""Argument checks shared by the whole library: each failure names the argument at fault."""

from __future__ import annotations

import math

import torch

NORMS = {"linf": "linf", "inf": "linf", math.inf: "linf", "l2": "l2", 2: "l2",
         "l1": "l1", 1: "l1", "l0": "l0", 0: "l0"}


def check_norm(norm, allowed=("linf", "l2")) -> str:
    """Return the canonical name ("linf", "l2", "l1", "l0") of `norm`, or raise."""
    key = norm.lower() if isinstance(norm, str) else norm
    if isinstance(norm, bool):  # True == 1 as a dict key: it would pass as L1
        key = None
    try:
        name = NORMS.get(key)
    except TypeError:  # unhashable
        name = None
    if name is None or name not in allowed:
        raise ValueError(f"norm must be one of {list(allowed)}, got {norm!r}")
    return name


def check_choice(value, choices, name: str):
    """One of `choices` (compared with ==), or an error listing them."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


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


def check_radii(eps, x: torch.Tensor, name: str = "eps") -> float | torch.Tensor:
    """A budget as `check_eps` takes it, or one per example of `x`: a 1-D tensor of len(x)
    finite radii >= 0, returned in x's dtype on x's device."""
    if not isinstance(eps, torch.Tensor) or eps.dim() == 0:
        return check_eps(eps, name)
    if eps.dim() != 1 or len(eps) != len(x) or not eps.is_floating_point():
        raise ValueError(f"{name} must be a number or a float tensor of shape ({len(x)},), one "
                         f"radius per example, got {eps.dtype} of shape {tuple(eps.shape)}")
    if eps.device != x.device:
        raise ValueError(f"{name} is on {eps.device} but x is on {x.device}")
    if not bool((torch.isfinite(eps) & (eps >= 0)).all()):
        raise ValueError(f"{name} must hold finite radii >= 0")
    return eps.detach().to(x.dtype)


def check_nonnegative(value, name: str) -> float:
    """A finite number >= 0 (a margin kappa, a constant c, a weight tau, an overshoot)."""
    return check_eps(value, name)


def _check_number(value, name: str, integer: bool) -> None:
    """An int, or a number (int or float) unless `integer`; never a bool (True == 1)."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, "
                        f"got {type(value).__name__}")


def check_in_range(value, name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False, integer: bool = False) -> float:
    """A number in [low, high] (an int when `integer`); `low_open` / `high_open` exclude the ends."""
    _check_number(value, name, integer)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):  # NaN fails both
        raise ValueError(f"{name} must lie in {'(' if low_open else '['}{low}, {high}"
                         f"{')' if high_open else ']'}, got {value}")
    return value


def check_positive(value, name: str, integer: bool = False):
    """A strictly positive number (an int when `integer`)."""
    _check_number(value, name, integer)
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """True or False itself: a string such as "no" or a number would pass as a truth value."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


SEED_LIMIT = 2 ** 32  # numpy's seed range, which seed_everything passes every seed on to


def check_seed(seed, name: str = "seed") -> int:
    """An int seed in [0, 2**32): the seeds `robustlab.seed_everything` accepts."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{name} must be an int, got {type(seed).__name__}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must lie in [0, 2**32), got {seed}")
    return seed


def check_generator(generator) -> torch.Generator | None:
    """None or a torch.Generator: the random source every random method takes."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    return generator


def check_images(x, name: str = "x", ndim: int | None = 4) -> torch.Tensor:
    """A floating tensor of images in [0, 1] with no NaN, shape (N, C, H, W) by default."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):  # finite differences and tolerances underflow
        raise TypeError(f"{name} has dtype {x.dtype}: robustlab needs float32 or float64 (half "
                        f"precision breaks finite differences and ball tolerances); use "
                        f"{name}.float() and model.float()")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    # one pass, one read back to the host for both ends; NaN propagates to both
    lo, hi = torch.stack(torch.aminmax(x)).tolist()
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
    check_label_range(y, num_classes, name)
    return y.long()


def check_label_range(y: torch.Tensor, num_classes: int | None = None, name: str = "y") -> None:
    """Labels in [0, num_classes), or >= 0 while the number of classes is not known yet."""
    if not y.numel():
        return
    lo, hi = torch.stack(torch.aminmax(y)).tolist()  # one read back to the host
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else "[0, K) (negative label)"
        raise ValueError(f"{name} holds labels outside {bound}: range [{lo}, {hi}]")


def check_logits(out, n: int, name: str = "model") -> torch.Tensor:
    """The output of a classifier: logits of shape (n, K)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of logits, got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"{name} must return logits of shape (N, K) = ({n}, K), "
                         f"got {tuple(out.shape)}")
    return out
