"""Widgets of the defence lessons: robust-accuracy curves per defence, certified radii per sigma."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from ..evaluate import PRESETS, robust_accuracy
from .figures import grid_step, one_at_a_time


def defence_curves(defended: dict, x: torch.Tensor, y: torch.Tensor, *,
                   attack: Callable | None = None, eps_max: float = 0.3, points: int = 7,
                   norm: str = "linf", show: Sequence[str] | None = None) -> W.VBox:
    """Pick defended models and see their robust accuracy against eps, one curve each.

    `defended` maps a name to a trained model. `attack(model, x, y, eps=..., norm=...)` defaults to the
    "pgd" preset (40 steps of eps / 8). Each model's curve on ``(x, y)`` is computed once per
    grid and cached, so switching between defences is instant. `show` names the defences drawn
    first (default: the first two). Controls: ``.defences``
    (multiple choice) and ``.eps_max``; ``.state["curves"]`` maps each chosen name to its list
    of (eps, robust accuracy).
    """
    if not isinstance(defended, dict) or not defended:
        raise ValueError("defended must be a non-empty dict of name -> model")
    attack = attack or PRESETS["pgd"]
    names = list(defended)
    show = names[:2] if show is None else list(show)
    if not set(show) <= set(names):
        raise ValueError(f"show must name defences of `defended`, got {sorted(set(show) - set(names))}")
    sel_w = W.SelectMultiple(options=names, value=show, description="defences",
                             rows=min(6, len(names)))
    top = max(0.5, 2 * eps_max)
    max_w = W.FloatSlider(value=eps_max, min=0.0, max=top, step=grid_step((eps_max,), top, steps=20),
                          description="max ε", continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([sel_w, max_w]), out])
    box.defences, box.eps_max, box.out, box.state = sel_w, max_w, out, {}
    cache: dict = {}

    def curve(name: str, grid: tuple) -> list:
        if (name, grid) not in cache:
            c = robust_accuracy(defended[name], x, y, attack, eps_list=list(grid), norm=norm)
            cache[name, grid] = list(zip(c.eps, c.accuracy))
        return cache[name, grid]

    @one_at_a_time
    def update(_=None):
        grid = tuple(np.linspace(0, max_w.value, points).round(6).tolist())
        curves = {name: curve(name, grid) for name in sel_w.value}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 3))
            for name, c in curves.items():
                ax.plot(*zip(*c), marker="o", label=name)
            ax.set(xlabel=f"ε ({'L∞' if norm == 'linf' else norm.upper()})",
                   ylabel="robust accuracy", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            if curves:
                ax.legend(fontsize=8)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"curves": curves}

    for w in (sel_w, max_w):
        w.observe(update, "value")
    update()
    return box


def smoothing_radii(model: nn.Module | Mapping[float, nn.Module], x: torch.Tensor, y: torch.Tensor,
                    *, sigmas: Sequence[float] = (0.12, 0.25, 0.5), n0: int = 100, n: int = 1000,
                    alpha: float = 0.001, seed: int = 0, bins: int = 20) -> W.VBox:
    """A σ slider over randomized smoothing: the histogram of CERTIFY's certified L2 radii.

    Cohen et al. (ICML 2019): CERTIFY (`robustlab.defences.smoothing.certify`) on every example
    of ``(x, y)`` at the chosen sigma, with `n0` selection and `n` estimation samples at level
    `alpha`, each from ``robustlab.generator(seed)``. The histogram shows the radii of the
    examples certified with the right class; the dashed line is the largest radius `n` samples
    can certify, sigma * Phi^-1(alpha^(1/n)) (all n samples in the top class). `model` is one
    base classifier smoothed at every sigma, or a dict sigma -> base classifier trained at
    that sigma. Results are cached per sigma. Controls: ``.sigma``; ``.state`` holds
    ``sigma``, ``radii`` (certified radii of the correct examples), ``certified_accuracy``
    (fraction certified correct, at radius 0), ``abstained`` and ``max_radius``.
    """
    from scipy import stats

    from ..defences import smoothing
    from ..utils import generator

    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise ValueError("sigmas must hold at least one sigma")
    if isinstance(model, Mapping):
        chosen = {float(s): m for s, m in model.items()}
        if not set(sigmas) <= set(chosen):
            raise ValueError(f"model has no classifier for sigmas {sorted(set(sigmas) - set(chosen))}")
    else:
        chosen = {s: model for s in sigmas}
    sigma_w = W.SelectionSlider(options=sigmas, value=sigmas[len(sigmas) // 2], description="σ",
                                continuous_update=False)
    out = W.Output()
    box = W.VBox([sigma_w, out])
    box.sigma, box.out, box.state = sigma_w, out, {}
    cache: dict = {}

    def result(sigma: float) -> smoothing.CertifiedAccuracy:
        if sigma not in cache:
            cache[sigma] = smoothing.certified_accuracy(chosen[sigma], x, y, sigma=sigma, radii=[0.0],
                                                        n0=n0, n=n, alpha=alpha,
                                                        generator=generator(seed))
        return cache[sigma]

    @one_at_a_time
    def update(_=None):
        sigma = sigma_w.value
        r = result(sigma)
        radii = r.radius[r.correct].tolist()
        cap = sigma * float(stats.norm.ppf(alpha ** (1 / n)))
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 3))
            # the bins end at the cap, which no radius exceeds: radii at the cap fill the last
            # bar, left of the dashed line, not a bar straddling it
            ax.hist([min(r_, cap) for r_ in radii], bins=bins, range=(0, cap), color="C0")
            ax.set_xlim(0, cap * 1.05)
            ax.axvline(cap, color="gray", ls="--", lw=1, label=f"largest certifiable ({cap:.2f})")
            ax.set(xlabel="certified L2 radius (correct examples)", ylabel="examples",
                   title=f"σ = {sigma:g}: {r.accuracy[0]:.0%} certified correct, "
                         f"{r.abstained:.0%} abstained")
            ax.legend(fontsize=8)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"sigma": sigma, "radii": radii, "certified_accuracy": r.accuracy[0],
                     "abstained": r.abstained, "max_radius": cap}

    sigma_w.observe(update, "value")
    update()
    return box
