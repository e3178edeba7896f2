"""Robust accuracy: the one place the library measures accuracy under attack."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_eps, check_norm, check_positive
from .._model import check_attack_inputs, correct, eval_mode
from ..norms import flat_norm
from ..tables import Tabular, markdown_table

# x_adv, or (x_adv, queries) for a black-box attack
Attack = Callable[..., "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]

# An attack's output may overshoot its ball by float rounding only.
BALL_RTOL, BALL_ATOL = 1e-5, 1e-6


def check_callable(attack, name: str = "attack") -> None:
    if not callable(attack):
        raise TypeError(f"{name} must be callable, got {type(attack).__name__}")


def split_queries(out) -> tuple[object, torch.Tensor | None]:
    """An attack's output as ``(x_adv, queries)``: black-box attacks return that pair, the
    others x_adv alone (queries None). Anything else is left for `check_adversarial` to refuse."""
    if isinstance(out, tuple) and len(out) == 2:
        return out
    return out, None


def check_adversarial(x: torch.Tensor, x_adv, who: str, eps: float | None = None,
                      norm: str = "linf") -> torch.Tensor:
    """An attack's output, refused if it is not a tensor of x's shape, holds NaN, or leaves
    [0, 1] or the ball (eps, norm): any of these would misstate robustness. Returns it detached."""
    if not isinstance(x_adv, torch.Tensor):
        raise TypeError(f"{who} returned {type(x_adv).__name__}, expected a tensor")
    if x_adv.shape != x.shape:
        raise ValueError(f"{who} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    lo, hi = (t.item() for t in torch.aminmax(x_adv.detach()))  # NaN propagates to both
    if lo != lo or hi != hi:
        raise ValueError(f"{who} returned NaN pixels")
    if lo < 0 or hi > 1:
        raise ValueError(f"{who} returned points outside [0, 1]")
    if eps is not None:
        dist = flat_norm(x_adv.detach() - x, norm).max().item()
        if dist > eps * (1 + BALL_RTOL) + BALL_ATOL:
            raise ValueError(f"{who} returned a point at {norm} distance {dist:.4g} > eps = {eps:.4g}")
    return x_adv.detach()


def robust_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, eps: float,
                clean: torch.Tensor, *, attack_kwargs: dict | None = None, ball_norm: str = "linf",
                batch_size: int = 500, check_ball: bool = True, who: str = "attack") -> torch.Tensor:
    """Per example: correct (`clean`) and still correct after ``attack(model, x, y, eps=eps,
    **attack_kwargs)``, whose output must lie in the (eps, `ball_norm`) ball when `check_ball`.
    The attack runs only on the examples in `clean`, in batches of `batch_size`."""
    attack_kwargs = attack_kwargs or {}
    robust = clean.clone()
    if eps == 0:
        return robust
    for chunk in clean.nonzero()[:, 0].split(batch_size):
        if not len(chunk):  # nothing classified right: nothing to attack
            continue
        x_adv, _ = split_queries(attack(model, x[chunk], y[chunk], eps=eps, **attack_kwargs))
        x_adv = check_adversarial(x[chunk], x_adv, who, eps if check_ball else None, ball_norm)
        robust[chunk] = correct(model, x_adv, y[chunk], batch_size=batch_size)
    return robust


@dataclass
class RobustCurve(Tabular):
    """Robust accuracy of one attack at several budgets; ``robust[i]`` is the per-example mask."""

    eps: list[float]
    accuracy: list[float]
    robust: torch.Tensor
    norm: str = "linf"
    attack: str = "attack"

    def table(self) -> str:
        return markdown_table(["eps", f"robust accuracy ({self.attack}, {self.norm})"],
                              list(zip(self.eps, self.accuracy)), decimals=[None, 3])

    def plot(self, ax=None, **plot_kwargs):
        """Robust accuracy against eps on `ax` (a new figure if None); returns the axes."""
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(4, 3))
        plot_kwargs.setdefault("label", self.attack)
        plot_kwargs.setdefault("marker", "o")
        ax.plot(self.eps, self.accuracy, **plot_kwargs)
        ax.set_xlabel(f"eps ({self.norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        return ax


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *,
                    eps_list: Sequence[float], batch_size: int = 500, check_ball: bool = True,
                    **attack_kwargs) -> RobustCurve:
    """Robust accuracy of `model` on ``(x, y)`` under `attack` at each budget in `eps_list`.

    Madry et al., "Towards deep learning models resistant to adversarial attacks" (ICLR 2018):
    the fraction of examples that are classified correctly and still are after the attack,
    ``mean_i [f(x_i) = y_i and f(attack(x_i)) = y_i]``. At eps = 0 this is clean accuracy and
    no attack runs; for eps > 0 the attack runs only on the correctly classified examples
    (the others count as not robust anyway), in batches of `batch_size`. The model is
    evaluated (and attacked) in eval mode, and every submodule's mode is restored afterwards.

    Arguments:
        attack: called as ``attack(model, x, y, eps=eps, **attack_kwargs)``, returning x_adv
            or, as black-box attacks do, ``(x_adv, queries)``; to make a step
            size follow eps, pass e.g. ``lambda m, x, y, eps: pgd(m, x, y, eps=eps,
            alpha=eps / 4, steps=20)``.
        eps_list: the budgets, each a finite number >= 0.
        check_ball: refuse an attack whose output leaves the ``attack_kwargs["norm"]`` ball
            (L-inf by default) or [0, 1], since that would understate robustness. NaN output
            is refused always.
    Returns a `RobustCurve` with ``.eps``, ``.accuracy``, ``.robust`` (len(eps), N), ``.table()``
    and ``.plot(ax)``.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    check_callable(attack)
    check_positive(batch_size, "batch_size", integer=True)
    try:
        eps_list = list(eps_list)
    except TypeError:  # a bare number (or 0-d tensor) where a list was meant
        eps_list = []
    if not eps_list:
        raise ValueError("eps_list must be a non-empty list of budgets")
    eps_list = [check_eps(e, f"eps_list[{i}]") for i, e in enumerate(eps_list)]
    norm = check_norm(attack_kwargs.get("norm", "linf"), ("linf", "l2", "l1", "l0"))
    name = getattr(attack, "__name__", type(attack).__name__)
    with eval_mode(model):
        clean = correct(model, x, y, batch_size=batch_size)
        robust = torch.stack([robust_mask(model, x, y, attack, eps, clean,
                                          attack_kwargs=attack_kwargs, ball_norm=norm,
                                          batch_size=batch_size, check_ball=check_ball,
                                          who=f"attack {name!r}")
                              for eps in eps_list])
    return RobustCurve(eps_list, robust.float().mean(1).tolist(), robust.cpu(), norm, name)
