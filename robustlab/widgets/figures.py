"""Figures the widgets draw: images, perturbations, an attack's before and after."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import wraps

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .._model import predict

# JupyterLab 4.4 and later may deliver a widget's messages on two kernel threads (the main shell
# and a comm subshell). Two redraws at once share pyplot's current figure and each other's output
# area, and come out blank or half drawn. Every redraw of every widget takes this one lock.
DRAWING = threading.RLock()


def one_at_a_time(update: Callable) -> Callable:
    """`update` (a widget's redraw) run under the drawing lock, never beside another redraw."""
    @wraps(update)
    def locked(*args, **kwargs):
        with DRAWING:
            return update(*args, **kwargs)
    return locked


class interactive(W.interactive):
    """`ipywidgets.interactive` whose redraws take the drawing lock, as the library's widgets do."""

    def update(self, *args):
        with DRAWING:
            super().update(*args)


def grid_step(values: Sequence[float], top: float, *, steps: int = 50) -> float:
    """A step near ``top / steps`` for a slider from 0 to `top` with every start value on its grid.

    A slider snaps its handle to ``k * step``; a start value off that grid (0.4 on a grid of
    0.05 from 0.05 is 0.39999999999999997) jumps at the first click and recomputes twice on the
    first arrow press. The step is a round decimal (1, 2, 2.5 or 5 times a power of ten) with
    ``round(v / step) * step == v`` exactly in floating point for every v in `values` and `top`,
    if there is one.
    """
    rough = top / steps
    for power in range(-6, 3):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10.0 ** power
            if step >= rough / 1.5 and all(round(v / step) * step == v for v in (*values, top)):
                return step
    return rough  # no round step fits (a value such as 0.123): the plain grid, as before


def show_image(ax, img: torch.Tensor, title: str = "", cmap: str = "gray", **kw) -> None:
    """Draw a (C, H, W) image in [0, 1] on `ax` without axes."""
    img = img.detach().cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap=cmap, vmin=0, vmax=1, **kw)
    else:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), **kw)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def show_perturbation(ax, delta: torch.Tensor, title: str = "perturbation") -> None:
    """Draw a perturbation (C, H, W) as a red-blue heat map summed over channels."""
    d = delta.detach().cpu().sum(0).numpy()
    m = max(float(abs(d).max()), 1e-8)
    ax.imshow(d, cmap="RdBu_r", vmin=-m, vmax=m)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def image_row(images: torch.Tensor, titles: Sequence[str] | None = None, *,
              size: float = 1.1, highlight=None):
    """Draw images (N, C, H, W) side by side with optional titles; returns the figure.

    `highlight` is a list of (image index, row, col) pixels to outline in yellow, e.g. the pixel
    a one-pixel attack changed.
    """
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size + 0.3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        show_image(ax, images[i], titles[i] if titles is not None else "")
    for i, r, c in highlight or []:
        axes[0][i].add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="yellow", lw=1.5))
    fig.tight_layout()
    return fig


def adversarial_figure(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                       class_names: Sequence[str] | None = None, y: int | None = None):
    """One row: clean image, perturbation, adversarial image, class probabilities of both.

    `x` and `x_adv` are single images (C, H, W). Returns the figure and a dict with the clean
    and adversarial predictions and confidences.
    """
    p = torch.softmax(predict(model, torch.stack([x, x_adv])), 1).cpu().numpy()
    names = list(class_names) if class_names is not None else [str(i) for i in range(p.shape[1])]
    pred, pred_adv = int(p[0].argmax()), int(p[1].argmax())
    fig, ax = plt.subplots(1, 4, figsize=(9, 2.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    show_image(ax[0], x, f"clean: {names[pred]} ({p[0, pred]:.0%})")
    show_perturbation(ax[1], x_adv - x, f"perturbation (L∞ {(x_adv - x).abs().max():.2f})")
    show_image(ax[2], x_adv, f"adversarial: {names[pred_adv]} ({p[1, pred_adv]:.0%})")
    k = np.arange(p.shape[1])
    ax[3].bar(k - 0.2, p[0], 0.4, label="clean")
    ax[3].bar(k + 0.2, p[1], 0.4, label="adversarial", color="C3")
    ax[3].set_xticks(k, names, fontsize=7)
    ax[3].set_ylim(0, 1)
    ax[3].legend(fontsize=7)
    ax[3].set_title("probabilities", fontsize=9)
    fig.tight_layout()
    state = {"pred": pred, "conf": float(p[0, pred]), "pred_adv": pred_adv,
             "conf_adv": float(p[1, pred_adv]), "label": y,
             "fooled": y is not None and pred_adv != y}
    return fig, state
