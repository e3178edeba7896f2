"""Widgets of lesson 03c (more defences): stored results per defence and budget, browsed
without training or attacking anything."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as W
import matplotlib.pyplot as plt

from .figures import one_at_a_time

MEASURES = ("clean", "pgd", "worst")


def _checked_results(results) -> dict[str, dict[float, dict[str, float]]]:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict of defence -> {eps: {clean, pgd, worst}}")
    out = {}
    for name, by_eps in results.items():
        if not isinstance(by_eps, Mapping) or not by_eps:
            raise ValueError(f"results[{name!r}] must be a non-empty dict of eps -> measures")
        out[str(name)] = {}
        for eps, row in by_eps.items():
            missing = [m for m in MEASURES if m not in row]
            if missing:
                raise ValueError(f"results[{name!r}][{eps!r}] lacks {missing}")
            out[str(name)][float(eps)] = {m: float(row[m]) for m in MEASURES}
    return out


def defence_budgets(results: Mapping, *, defence: str | None = None,
                    eps: float | None = None) -> W.VBox:
    """Pick a defence and an L-inf budget; see its clean, PGD and worst-case accuracy.

    `results` maps a defence's name to ``{eps: {"clean": .., "pgd": .., "worst": ..}}``,
    accuracies measured beforehand (the widget trains and attacks nothing, so it answers at
    once, on a static page too). The left panel shows the three numbers at the chosen budget,
    the right one the chosen defence's PGD and worst-case curves over every stored budget, with
    the other defences' worst-case curves faint behind them. Controls: ``.defence`` (a
    dropdown) and ``.eps`` (a selection slider over the budgets the chosen defence has);
    ``.state`` holds ``defence``, ``eps``, ``clean``, ``pgd``, ``worst`` and ``gap`` (PGD
    minus worst case: what one attack alone overstates).
    """
    table = _checked_results(results)
    names = list(table)
    defence = names[0] if defence is None else defence
    if defence not in table:
        raise ValueError(f"defence must be one of {names}, got {defence!r}")
    budgets = sorted(table[defence])
    eps = budgets[len(budgets) // 2] if eps is None else float(eps)
    if eps not in table[defence]:
        raise ValueError(f"eps must be one of the stored budgets {budgets}, got {eps}")
    def_w = W.Dropdown(options=names, value=defence, description="defence")
    eps_w = W.SelectionSlider(options=budgets, value=eps, description="ε (L∞)",
                              continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([def_w, eps_w]), out])
    box.defence, box.eps, box.out, box.state = def_w, eps_w, out, {}

    @one_at_a_time
    def update(_=None):
        name = def_w.value
        grid = sorted(table[name])
        if list(eps_w.options) != grid:   # another defence may store other budgets
            keep = eps_w.value if eps_w.value in grid else grid[len(grid) // 2]
            eps_w.unobserve(update, "value")
            eps_w.options, eps_w.value = grid, keep
            eps_w.observe(update, "value")
        e = eps_w.value
        row = table[name][e]
        with out:
            out.clear_output(wait=True)
            fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [1, 1.6]})
            bars = ax.bar(["clean", "PGD", "worst case"], [row[m] for m in MEASURES],
                          color=["C2", "C0", "C3"])
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
            ax.set(ylim=(0, 1.1), ylabel="accuracy", title=f"{name}, ε = {e:g}")
            for other in names:
                if other != name:
                    xs = sorted(table[other])
                    ax2.plot(xs, [table[other][v]["worst"] for v in xs], color="gray", alpha=0.3)
            ax2.plot(grid, [table[name][v]["pgd"] for v in grid], "o-", color="C0", label="PGD")
            ax2.plot(grid, [table[name][v]["worst"] for v in grid], "o-", color="C3",
                     label="worst case")
            ax2.axvline(e, color="k", ls=":", lw=1)
            ax2.set(xlabel="ε (L∞)", ylabel="robust accuracy", ylim=(0, 1.02),
                    title="grey: the other defences' worst case")
            ax2.legend(fontsize=8)
            ax2.grid(alpha=0.3)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"defence": name, "eps": e, **row, "gap": row["pgd"] - row["worst"]}

    for w in (def_w, eps_w):
        w.observe(update, "value")
    update()
    return box
