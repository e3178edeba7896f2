"""The inner maximisation shared by the training defences (objectives, dro, loops): argument
checks, the model as the attack sees it (`_inner`), input gradients, projected ascent, and the
PGD point of PGD-AT. See `robustlab.defences.objectives` for the rules they keep."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .._checks import check_choice, check_eps, check_logits, check_norm, check_positive
from .._model import eval_mode
from .._random import draw_device
from ..losses import ce_loss
from ..norms import clip_box, project, random_in_ball, steepest

ATTACK_MODES = ("train", "eval")

Logs = dict[str, torch.Tensor]
ObjectiveFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Logs]]


def _check_mode(attack_mode: str) -> str:
    return check_choice(attack_mode, ATTACK_MODES, "attack_mode")


def _check_inner_pgd(eps, alpha, steps, norm, norms=("linf", "l2")) -> tuple[float, str]:
    """The inner PGD's settings: eps >= 0, alpha > 0, steps a positive int, a known norm."""
    check_positive(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    return check_eps(eps), check_norm(norm, norms)


def _gaussian(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn on the generator's device."""
    return torch.randn(x.shape, generator=generator,
                       device=draw_device(generator, x.device)).to(x)


@contextmanager
def _running_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Forward passes that leave batch-norm running statistics alone: norm layers in training
    mode keep normalising with batch statistics but do not update their running ones."""
    norms = [m for m in model.modules()
             if isinstance(m, _NormBase) and m.training and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in norms:
            m.track_running_stats = True


@contextmanager
def _inner(model: nn.Module, attack_mode: str) -> Iterator[nn.Module]:
    """The model as the inner maximisation sees it: parameters frozen (their ``.grad`` and
    ``requires_grad`` flags are restored as found), gradients on, in eval mode (``"eval"``) or
    as found with batch-norm running statistics not updated (``"train"``)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("adversarial training objectives cannot run inside "
                           "torch.inference_mode(): the inner attack needs input gradients")
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        mode = eval_mode(model) if attack_mode == "eval" else _running_stats_frozen(model)
        with mode, torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _input_grad(model: nn.Module, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Gradient wrt `x` of the summed per-example ``loss_fn(logits)``; may hold inf or NaN
    (`steepest` makes it finite; a caller that uses it raw applies `finite_direction`)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model(x)).sum(), x)
    return g


def _ascend(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, loss_fn, *, eps: float,
            alpha: float, steps: int, norm: str) -> torch.Tensor:
    """Projected steepest ascent of ``loss_fn`` from ``x + delta`` in the `norm` ball of
    radius `eps` intersected with [0, 1]; returns the adversarial input (detached)."""
    for _ in range(steps):
        x_adv = x + delta
        g = _input_grad(model, x_adv, loss_fn)
        delta = delta + alpha * steepest(g, norm, x_adv)
        delta = clip_box(x, project(delta, eps, norm))
    return (x + delta).detach()


def _pgd_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
               steps: int, norm: str, random_start: bool, attack_mode: str,
               generator: torch.Generator | None) -> torch.Tensor:
    """Madry et al.'s inner maximiser: PGD on the cross-entropy from a uniform random start in
    the ball (or from `x`), on the model as `attack_mode` says; the adversarial input."""
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start:
        delta = clip_box(x, random_in_ball(x, eps, norm, generator))
    with _inner(model, attack_mode):
        return _ascend(model, x, delta, lambda z: ce_loss(z, y), eps=eps, alpha=alpha,
                       steps=steps, norm=norm)


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the model on `x` (a training forward pass) and the logits."""
    z = check_logits(model(x), len(x))
    return F.cross_entropy(z, y), z


def _acc(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (z.detach().argmax(1) == y).float().mean()
