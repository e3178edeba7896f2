"""Widgets of the statistical-evaluation lesson: what CLEVER fits, for one point and one norm."""

from __future__ import annotations

import math

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import nn

from .figures import grid_step, one_at_a_time

NORMS = ("l1", "l2", "linf")
RADII = {"l1": 8.0, "l2": 2.0, "linf": 0.5}  # about where an 8x8 digit's class changes, times 4


def draw_clever(ax, result, index: int = 0) -> None:
    """The batch maxima of example `index` of a `stats.Clever` result as a histogram, the fitted
    reverse Weibull density (when a fit was used), and the Lipschitz estimate L as a line.

    The reverse Weibull of the maxima m is scipy's weibull_min of -m with location -L, so its
    density at m is weibull_min.pdf(-m, shape, -L, scale).
    """
    maxima = result.maxima[index].numpy()
    lip, shape, scale = (float(t[index]) for t in (result.lipschitz, result.shape, result.scale))
    ax.hist(maxima, bins=20, density=True, color="C0", alpha=0.6,
            label=f"{len(maxima)} batch maxima of ‖∇g‖")
    if not bool(result.fallback[index]) and math.isfinite(shape):
        grid = np.linspace(maxima.min() - 0.1 * np.ptp(maxima), lip, 200)
        ax.plot(grid, scipy_stats.weibull_min.pdf(-grid, shape, -lip, scale), "C3",
                label=f"reverse Weibull, shape {shape:.2g}")
    ax.axvline(lip, color="k", ls="--", label=f"L = {lip:.3g}"
               + (" (sample max)" if bool(result.fallback[index]) else " (fitted)"))
    ax.set(xlabel="largest gradient norm in a batch (dual norm)", ylabel="density",
           title=f"CLEVER ({result.norm}): score {float(result.score[index]):.3f}")
    ax.legend(fontsize=7)


def clever_explorer(model: nn.Module, x: torch.Tensor, *, norm: str = "l2",
                    radius: float | None = None, n_batches: int = 50, batch_size: int = 128,
                    seed: int = 0) -> W.VBox:
    """Pick a point and a norm: CLEVER's gradient-norm batch maxima, the reverse Weibull fitted
    to them, the Lipschitz estimate and the score (`robustlab.stats.clever`), redrawn on every
    change.

    Controls: ``.index`` (which example of x), ``.norm`` ("l1", "l2", "linf") and ``.radius``
    (R, the ball sampled; set to RADII[norm] when the norm changes). ``.state`` holds index,
    norm, radius, score, lipschitz, margin, fallback and the maxima of the last draw. Samples
    come from a generator seeded with `seed` on every redraw, so a setting always gives the same
    picture.
    """
    from .. import stats  # stats sits below the widgets; imported when drawn

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    radius = RADII[norm] if radius is None else float(radius)
    top = max(RADII.values())
    index_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="example",
                          continuous_update=False)
    norm_w = W.Dropdown(options=NORMS, value=norm, description="norm")
    radius_w = W.FloatSlider(value=radius, min=grid_step((radius, *RADII.values()), top),
                             max=top, step=grid_step((radius, *RADII.values()), top),
                             description="R", continuous_update=False, readout_format=".3g")
    out = W.Output()
    box = W.VBox([W.HBox([index_w, norm_w, radius_w]), out])
    box.index, box.norm, box.radius, box.out, box.state = index_w, norm_w, radius_w, out, {}

    @one_at_a_time
    def update(_=None):
        i = index_w.value
        result = stats.clever(model, x[i:i + 1], norm=norm_w.value, radius=radius_w.value,
                              n_batches=n_batches, batch_size=batch_size,
                              generator=torch.Generator(x.device).manual_seed(seed))
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.2))
            draw_clever(ax, result, 0)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"index": i, "norm": norm_w.value, "radius": radius_w.value,
                     "score": float(result.score[0]), "lipschitz": float(result.lipschitz[0]),
                     "margin": float(result.margin[0]), "fallback": bool(result.fallback[0]),
                     "maxima": result.maxima[0]}

    def new_norm(change):
        with radius_w.hold_trait_notifications():
            radius_w.unobserve(update, "value")
            radius_w.value = RADII[change["new"]]
            radius_w.observe(update, "value")
        update()

    index_w.observe(update, "value")
    norm_w.observe(new_norm, "value")
    radius_w.observe(update, "value")
    update()
    return box
