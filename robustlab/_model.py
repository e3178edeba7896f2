"""Model hygiene: every forward pass the library makes, leaving the model exactly as found.

`eval_mode` and `frozen` save and restore the train/eval mode of every submodule (a model may
mix train and eval submodules) and, for `frozen`, every parameter's ``requires_grad`` flag;
`predict` and `logits_of` are the forward passes, checked to return logits (N, K).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ._checks import check_eps, check_images, check_label_range, check_labels, check_logits, check_norm
from .losses import LOSSES


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (None for a stateless model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return None


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter or buffer (None if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def check_model(model) -> nn.Module:
    """`model` must be a torch module: say so before anything calls it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_model_input(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """`x` must be on the model's device and of its dtype: say which, before torch does."""
    check_model(model)
    dev, dtype = model_device(model), model_dtype(model)
    if dev is not None and dev != x.device:
        raise ValueError(f"{name} is on {x.device} but the model is on {dev}; move one of them")
    if dtype is not None and dtype != x.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; "
                        f"convert one of them (e.g. x.to({dtype}))")


def check_attack_inputs(model: nn.Module, x, y, *, eps=None, norm="linf",
                        norms=("linf", "l2")) -> tuple[torch.Tensor, torch.Tensor, float | None, str]:
    """Validate the common arguments of an attack or evaluator; return ``(x, y, eps, norm)``."""
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    y = check_labels(y, x) if y is not None else None
    eps = check_eps(eps) if eps is not None else None
    return x, y, eps, check_norm(norm, norms)


def plain(x: torch.Tensor) -> torch.Tensor:
    """`x` cut from any autograd graph (an optimiser needs a leaf it owns), and copied when it
    is an inference tensor (made under torch.inference_mode(), which can never need grad)."""
    return x.clone() if x.is_inference() and not torch.is_inference_mode_enabled() else x.detach()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode; restore the mode of every submodule afterwards."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    if any(modes):  # most callers hand over a model already in eval mode: nothing to touch
        model.eval()
    try:
        yield model
    finally:
        if any(modes):
            for m, mode in zip(modules, modes):
                m.training = mode


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` in eval mode with its parameters frozen, gradients on; restore it after.

    Eval mode makes the attacked function deterministic (no dropout) and keeps batch-norm
    running statistics untouched; freezing parameters keeps their ``.grad`` as it was.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradient attacks cannot run inside torch.inference_mode(): inference "
                           "tensors never carry gradients. Call the attack outside it (inside "
                           "torch.no_grad() is fine)")
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with eval_mode(model), torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def logits_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits on `x`, checked to be (N, K), with labels `y` checked against K."""
    out = check_logits(model(x), len(x))
    if y is not None:
        check_label_range(y, out.shape[1])
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` on `x` in eval mode, in batches without gradients, on the model's device.

    The mode of every submodule is restored afterwards; the logits come back on x's device.
    """
    dev = model_device(model) or x.device
    with eval_mode(model):
        out = [check_logits(model(xb.to(dev)), len(xb)) for xb in x.split(batch_size)]
    return torch.cat(out).to(x.device)


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
            batch_size: int = 512) -> torch.Tensor:
    """Which examples `model` classifies right (N,) bool, in eval mode, labels checked against K.

    The core of every accuracy the library reports: robust accuracy, fooling rate, the CLI.
    """
    logits = predict(model, x, batch_size=batch_size)
    check_label_range(y, logits.shape[1])
    return logits.argmax(1) == y


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "ce",
               targeted: bool = False, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the summed per-example loss wrt the input, and the logits at `x`.

    Run inside `frozen`. The gradient may hold inf or NaN (a model applying sqrt to its input);
    `norms.steepest` turns it into a finite direction, so no attack step is NaN. `check=False`
    skips the logits and
    label checks: iterative attacks check on their first step only (the label check syncs).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    x = x.detach().requires_grad_(True)
    z = logits_of(model, x, y) if check else model(x)
    (g,) = torch.autograd.grad(LOSSES[loss](z, y, targeted).sum(), x)
    return g, z.detach()
