"""Widget of lesson 05a (future directions, attacks): the stored query-budget curves of the
hard-label attacks, browsed without running an attack."""

from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as W
import matplotlib.pyplot as plt

from .figures import one_at_a_time

__all__ = ["decision_curves", "query_curves"]


def decision_curves(text: str) -> dict[str, dict[int, dict[str, float]]]:
    """The table `benchmarks/decision_attacks.py --results` writes, as
    ``{attack: {queries: {"norm", "eps", "success", "distortion"}}}`` (norm a str)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    if len(rows) < 2 or rows[0][0].strip() != "attack":
        raise ValueError("text must hold the markdown table of benchmarks/decision_attacks.py")
    curves: dict[str, dict[int, dict]] = {}
    for cells in rows[1:]:
        name, norm, queries, eps, success, distortion = (c.strip() for c in cells[:6])
        curves.setdefault(name, {})[int(queries)] = {
            "norm": norm, "eps": float(eps), "success": float(success),
            "distortion": float(distortion)}
    return curves


def query_curves(curves: Mapping, *, attack: str | None = None,
                 budget: int | None = None) -> W.VBox:
    """Pick an attack and a query budget; see its success at eps and median distortion there,
    against the whole curve over budgets, the other attacks of the same norm faint behind it.

    `curves` is what `decision_curves` returns, every attack at the same budgets. Controls:
    ``.attack`` (a dropdown) and ``.budget`` (a selection slider over the stored budgets);
    ``.state`` holds ``attack``, ``budget``, ``norm``, ``eps``, ``success`` and ``distortion``.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict of attack -> {queries: row}")
    names = list(curves)
    attack = names[0] if attack is None else attack
    if attack not in curves:
        raise ValueError(f"attack must be one of {names}, got {attack!r}")
    budgets = sorted(curves[attack])
    uneven = [name for name in names if sorted(curves[name]) != budgets]
    if uneven:  # one slider serves every attack
        raise ValueError(f"every attack must store the same budgets {budgets}; {uneven} do not")
    budget = budgets[len(budgets) // 2] if budget is None else budget
    if budget not in budgets:
        raise ValueError(f"budget must be one of the stored budgets {budgets}, got {budget}")
    att_w = W.Dropdown(options=names, value=attack, description="attack")
    bud_w = W.SelectionSlider(options=budgets, value=budget, description="queries",
                              continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([att_w, bud_w]), out])
    box.attack, box.budget, box.out, box.state = att_w, bud_w, out, {}

    @one_at_a_time
    def update(_=None):
        name, q = att_w.value, bud_w.value
        row = curves[name][q]
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(9, 3))
            for ax, key, label in ((axes[0], "success", f"success at ε = {row['eps']:g}"),
                                   (axes[1], "distortion", f"median {row['norm']} distortion")):
                for other, by_q in curves.items():
                    if other != name and next(iter(by_q.values()))["norm"] == row["norm"]:
                        xs = sorted(by_q)
                        ax.plot(xs, [by_q[v][key] for v in xs], color="gray", alpha=0.4,
                                label=other)
                xs = sorted(curves[name])
                ax.plot(xs, [curves[name][v][key] for v in xs], "o-", color="C0", label=name)
                ax.axvline(q, color="k", ls=":", lw=1)
                ax.set(xscale="log", xlabel="queries per example", ylabel=label)
                ax.grid(alpha=0.3)
            axes[0].set_ylim(0, 1.02)
            axes[0].legend(fontsize=7)
            fig.suptitle(f"{name} at {q} queries: success {row['success']:.2f}, "
                         f"median distortion {row['distortion']:.3f}", fontsize=9)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"attack": name, "budget": q, **row}

    for w in (att_w, bud_w):
        w.observe(update, "value")
    update()
    return box
