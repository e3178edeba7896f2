"""Widget of lesson 05b (future directions, defence): Schmidt et al.'s Gaussian model, standard
and robust accuracy of the mean classifier against the number of samples, browsed over curves
the lesson computed (the widget samples nothing, so it answers at once, on a static page too)."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as W
import matplotlib.pyplot as plt

from .figures import one_at_a_time

KEYS = ("n", "standard", "robust")


def _checked_curves(curves) -> dict[int, dict[str, list]]:
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict of d -> {n, standard, robust}")
    out = {}
    for d, curve in curves.items():
        if not isinstance(curve, Mapping) or any(k not in curve for k in KEYS):
            raise ValueError(f"curves[{d!r}] must hold the lists {KEYS}")
        ns = [int(n) for n in curve["n"]]
        if not ns or any(len(curve[k]) != len(ns) for k in KEYS) or ns != sorted(set(ns)):
            raise ValueError(f"curves[{d!r}]: n must be increasing, with one accuracy per n")
        out[int(d)] = {"n": ns, "standard": [float(a) for a in curve["standard"]],
                       "robust": [float(a) for a in curve["robust"]]}
    grids = {tuple(c["n"]) for c in out.values()}
    if len(grids) > 1:   # one slider serves every d
        raise ValueError("curves: every d must use the same sample sizes n")
    return out


def schmidt_explorer(curves: Mapping, *, d: int | None = None, n: int | None = None) -> W.VBox:
    """Pick the dimension d and the number of training samples n; see the mean classifier's
    standard and robust accuracy (Schmidt et al. 2018's Gaussian model).

    `curves` maps d to ``{"n": [...], "standard": [...], "robust": [...]}``: accuracies averaged
    over draws of the training set, computed beforehand (e.g. with
    `robustlab.evaluate.schmidt_data`, `mean_classifier` and `linear_accuracy_schmidt`). The
    left panel shows the two accuracies at the chosen n, the right one both curves of the chosen
    d against n (log scale), the other dimensions' robust curves faint behind. Controls: ``.d``
    (a dropdown) and ``.n`` (a selection slider over the stored n, the same for every d);
    ``.state`` holds ``d``,
    ``n``, ``standard``, ``robust`` and ``gap`` (standard minus robust).
    """
    table = _checked_curves(curves)
    dims = sorted(table)
    d = dims[len(dims) // 2] if d is None else int(d)
    if d not in table:
        raise ValueError(f"d must be one of {dims}, got {d}")
    grid = table[d]["n"]
    n = grid[0] if n is None else int(n)
    if n not in grid:
        raise ValueError(f"n must be one of the stored sample sizes {grid}, got {n}")
    d_w = W.Dropdown(options=dims, value=d, description="d")
    n_w = W.SelectionSlider(options=grid, value=n, description="n",
                            continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([d_w, n_w]), out])
    box.d, box.n, box.out, box.state = d_w, n_w, out, {}

    @one_at_a_time
    def update(_=None):
        curve = table[d_w.value]
        i = grid.index(n_w.value)
        row = {"standard": curve["standard"][i], "robust": curve["robust"][i]}
        with out:
            out.clear_output(wait=True)
            fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [1, 1.6]})
            bars = ax.bar(["standard", "robust"], [row["standard"], row["robust"]], color=["C0", "C3"])
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
            ax.set(ylim=(0, 1.1), ylabel="accuracy", title=f"d = {d_w.value}, n = {n_w.value}")
            for other in dims:
                if other != d_w.value:
                    ax2.plot(table[other]["n"], table[other]["robust"], color="gray", alpha=0.3)
            ax2.plot(curve["n"], curve["standard"], "o-", color="C0", ms=3, label="standard")
            ax2.plot(curve["n"], curve["robust"], "o-", color="C3", ms=3, label="robust")
            ax2.axvline(n_w.value, color="k", ls=":", lw=1)
            ax2.set(xscale="log", xlabel="training samples n", ylabel="accuracy", ylim=(0, 1.02),
                    title="grey: robust accuracy at the other d")
            ax2.legend(fontsize=8)
            ax2.grid(alpha=0.3)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"d": d_w.value, "n": n_w.value, **row, "gap": row["standard"] - row["robust"]}

    for w in (d_w, n_w):
        w.observe(update, "value")
    update()
    return box
