"""Transfer: how often adversarial examples crafted on one model fool another.

Here and not in `attacks/` because it prints with `markdown_table` and checks the attack's
output with `check_adversarial`, and `evaluate/` imports `attacks/` (the other way round
would be a cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_norm, check_positive
from .._model import check_attack_inputs, correct, eval_mode, predict
from ..tables import Tabular, markdown_table
from .accuracy import Attack, check_adversarial, check_callable, split_queries


@dataclass
class TransferResult(Tabular):
    """Transfer rates: ``rate[s][t]`` for examples crafted on source ``names[s]``, measured on
    target ``names[t]``; ``fooled`` (S, T, N) and ``counted`` (T, N) are the per-example masks
    behind them (``rate[s][t] = fooled[s, t][counted[t]].mean()``), on the CPU."""

    names: list[str]
    rate: list[list[float]]
    fooled: torch.Tensor
    counted: torch.Tensor
    attack: str = "attack"

    @property
    def matrix(self) -> torch.Tensor:
        """The rates as an (S, T) float64 tensor (NaN where a target counts no example)."""
        return torch.tensor(self.rate, dtype=torch.float64)

    def table(self) -> str:
        return markdown_table([f"source \\ target ({self.attack})", *self.names],
                              [[name, *row] for name, row in zip(self.names, self.rate)],
                              decimals=[None] + [3] * len(self.names))

    def plot(self, ax=None, **imshow_kwargs):
        """The matrix as a heat map on `ax` (a new figure if None), rates written in the cells."""
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(1 + 0.9 * len(self.names), 0.8 + 0.8 * len(self.names)))
        imshow_kwargs = {"vmin": 0, "vmax": 1, "cmap": "viridis", **imshow_kwargs}
        image = ax.imshow(self.matrix.numpy(), **imshow_kwargs)
        for s, row in enumerate(self.rate):
            for t, value in enumerate(row):
                ax.text(t, s, "-" if value != value else f"{value:.2f}", ha="center", va="center",
                        color="white" if value == value and value < 0.5 else "black")
        ax.set_xticks(range(len(self.names)), self.names, rotation=30)
        ax.set_yticks(range(len(self.names)), self.names)
        ax.set_xlabel("target (evaluated on)")
        ax.set_ylabel("source (crafted on)")
        ax.figure.colorbar(image, ax=ax, label="transfer rate")
        return ax


def check_models(models) -> dict[str, nn.Module]:
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty dict of name -> model, got {models!r}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{name!r}] must be a torch.nn.Module, got "
                            f"{type(model).__name__}")
    return dict(models)


def transfer_matrix(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                    attack: Attack, *, batch_size: int = 500, check_ball: bool = True,
                    **attack_kwargs) -> TransferResult:
    """The transfer-rate matrix: adversarial examples crafted on each source model, tried on
    every target model.

    Papernot, McDaniel and Goodfellow, "Transferability in machine learning: from phenomena to
    black-box attacks using adversarial samples" (2016), and Tramèr, Papernot, Goodfellow, Boneh
    and McDaniel, "The space of transferable adversarial examples" (2017): an adversarial
    example found with white-box access to a source model s often fools a different target
    model t too. For each source s the attack runs once, on all of x,
        x_adv^s = attack(models[s], x, y, **attack_kwargs),
    and, untargeted, the entry for (source s, target t) is the fraction of the examples the
    target classifies correctly that the source's adversarial examples fool on the target:
        rate[s][t] = #{i : f_t(x_i) = y_i and f_t(x_adv^s_i) != y_i} / #{i : f_t(x_i) = y_i}.
    The diagonal rate[s][s] is the white-box success rate of the attack on s (1 - robust
    accuracy / clean accuracy); off the diagonal it is the transfer rate. With
    ``targeted=True`` in attack_kwargs, y holds target classes and
    rate[s][t] = #{i : f_t(x_adv^s_i) = y_i} / N, over all examples. A target that classifies
    no example correctly gets NaN (printed as '-').

    Every model is evaluated (and attacked) in eval mode and left exactly as found; all must
    live on x's device with x's dtype.

    Arguments:
        models: dict of name -> model; each is both a source (row) and a target (column).
        attack: called as ``attack(model, x, y, **attack_kwargs)`` in batches of `batch_size`,
            returning x_adv (or ``(x_adv, queries)``); e.g. ``robustlab.attacks.pgd`` with
            ``eps=0.2, alpha=0.05, steps=20``.
        batch_size: examples per attack call and per forward pass.
        check_ball: refuse an attack output that leaves the ``(eps, norm)`` ball of
            attack_kwargs (L-inf unless ``norm`` says otherwise), when ``eps`` is given. Output
            that is NaN or leaves [0, 1] is refused always.
    Returns a `TransferResult` with ``.names``, ``.rate`` (S x T lists), ``.matrix``,
    ``.fooled``, ``.counted``, ``.table()`` and ``.plot(ax)``.
    """
    models = check_models(models)
    check_callable(attack)
    check_positive(batch_size, "batch_size", integer=True)
    for name, model in models.items():
        try:
            x, y, _, _ = check_attack_inputs(model, x, y)
        except (TypeError, ValueError) as err:
            if isinstance(x, torch.Tensor) and "model" in str(err):  # say which model
                raise type(err)(f"models[{name!r}]: {err}") from None
            raise
    targeted = bool(attack_kwargs.get("targeted", False))
    eps = attack_kwargs.get("eps") if check_ball else None
    norm = check_norm(attack_kwargs.get("norm", "linf"), ("linf", "l2", "l1", "l0"))
    who = f"attack {getattr(attack, '__name__', type(attack).__name__)!r}"
    names = list(models)
    with ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        clean = torch.stack([correct(m, x, y, batch_size=batch_size) for m in models.values()])
        counted = torch.ones_like(clean) if targeted else clean
        fooled = torch.zeros(len(names), len(names), len(x), dtype=torch.bool, device=x.device)
        for s, source in enumerate(models.values()):
            chunks = []
            for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
                out, _ = split_queries(attack(source, xb, yb, **attack_kwargs))
                chunks.append(check_adversarial(xb, out, f"{who} on models[{names[s]!r}]",
                                                eps, norm))
            x_adv = torch.cat(chunks)
            for t, target in enumerate(models.values()):
                if targeted:
                    fooled[s, t] = predict(target, x_adv, batch_size=batch_size).argmax(1) == y
                else:
                    fooled[s, t] = ~correct(target, x_adv, y, batch_size=batch_size)
    fooled &= counted[None]
    n = counted.sum(1).double()
    rate = (fooled.sum(2).double() / n).where(n > 0, torch.nan)  # (S, T) / (T,) per column
    return TransferResult(names, rate.tolist(), fooled.cpu(), counted.cpu(),
                          getattr(attack, "__name__", type(attack).__name__))

