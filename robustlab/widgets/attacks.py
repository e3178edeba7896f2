"""Widgets of the attack lessons: the epsilon and attack explorers, the robust-accuracy sweep."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .. import attacks
from .._model import predict
from ..evaluate import PRESETS, robust_accuracy
from ..utils import generator
from .figures import adversarial_figure, grid_step, one_at_a_time


def _redraw(out: W.Output, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
            class_names: Sequence[str] | None, y: torch.Tensor) -> dict:
    """Replace `out`'s content by `adversarial_figure` of one image (1, C, H, W) and its attack;
    return the figure's predictions with the perturbation's L2 and L-inf norms."""
    with out:
        out.clear_output(wait=True)
        fig, state = adversarial_figure(model, x[0], x_adv[0], class_names, int(y))
        plt.show()
        plt.close(fig)
    d = (x_adv - x).flatten()
    return {**state, "l2": d.norm().item(), "linf": d.abs().max().item()}


def epsilon_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     attack: Callable | None = None, eps_max: float = 0.5, eps: float = 0.1,
                     class_names: Sequence[str] | None = None) -> W.VBox:
    """An eps slider and an image picker showing image, perturbation, prediction, confidence.

    `attack(model, x, y, eps=...)` defaults to FGSM (L-inf). Controls: ``.eps`` and ``.index``;
    the latest prediction is in ``.state`` (keys pred, conf, pred_adv, conf_adv, fooled,
    l2, linf).
    """
    attack = attack or attacks.fgsm
    eps_w = W.FloatSlider(value=eps, min=0.0, max=eps_max, step=grid_step((eps,), eps_max), description="ε",
                          continuous_update=False, readout_format=".3f")
    idx_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                        continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([eps_w, idx_w]), out])
    box.eps, box.index, box.out, box.state = eps_w, idx_w, out, {}

    @one_at_a_time
    def update(_=None):
        i = idx_w.value
        xi, yi = x[i:i + 1], y[i:i + 1]
        x_adv = attack(model, xi, yi, eps=eps_w.value)
        state = _redraw(out, model, xi, x_adv, class_names, yi)
        box.state = {**state, "eps": eps_w.value, "index": i}

    eps_w.observe(update, "value")
    idx_w.observe(update, "value")
    update()
    return box


# (initial eps, slider maximum) per norm: on 8 x 8 digits an L-inf change of 0.15 already fools
# most models while an L2 ball needs a radius near 1 (the L2 diameter of the image cube is 16)
EPS_RANGES = {"linf": (0.15, 0.5), "l2": (1.0, 4.0)}
SWEEP_MAX = {"linf": 0.4, "l2": 3.0}
UNTARGETED = "untargeted"  # the target dropdown's value for an untargeted attack


def explorer_attacks(*, generator: torch.Generator | None = None) -> dict:
    """The attacks of the explorers: name -> ``fn(model, x, y, eps, norm, targeted) -> x_adv``.

    FGSM / FGM and PGD spend the budget eps in the chosen norm (`robustlab.evaluate.PRESETS`).
    C&W and DeepFool are minimum-norm attacks: they ignore eps and minimise the chosen norm
    (C&W L2 or L-inf; DeepFool is untargeted and starts from the model's own prediction). Each
    of these carries ``fn.min_norm = True``, which the explorer reads to disable its eps slider.
    """
    def budgeted(preset):
        return lambda m, x, y, eps, norm, t: preset(m, x, y, eps=eps, norm=norm, targeted=t)

    def carlini_wagner(m, x, y, eps, norm, t):
        settings = {"binary_steps": 5} if norm == "l2" else {"steps": 100}
        return attacks.cw(m, x, y, norm=norm, targeted=t, **settings)

    def deep_fool(m, x, y, eps, norm, t):
        return attacks.deepfool(m, x, predict(m, x).argmax(1), norm=norm)

    carlini_wagner.min_norm = deep_fool.min_norm = True
    pgd = PRESETS["pgd"]
    return {"FGSM / FGM": budgeted(PRESETS["fgsm"]),
            "PGD": lambda m, x, y, eps, norm, t: pgd(m, x, y, eps=eps, norm=norm, targeted=t,
                                                     generator=generator),
            "C&W": carlini_wagner, "DeepFool": deep_fool}


def _ranges(table: Mapping, defaults: Mapping, name: str) -> dict:
    if not isinstance(table, Mapping) or set(table) - set(defaults):
        raise ValueError(f"{name} must be a dict with keys among {sorted(defaults)}, got {table!r}")
    return {**defaults, **table}


def attack_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                    attack_fns: dict | None = None, eps_ranges: Mapping | None = None,
                    class_names: Sequence[str] | None = None) -> W.VBox:
    """Pick an attack, eps, norm, target and image; see the adversarial image, the perturbation
    heat map and the class probabilities.

    `attack_fns` maps a name to ``fn(model, x, y, eps, norm, targeted) -> x_adv`` (default:
    `explorer_attacks()`; a function with ``fn.min_norm = True`` ignores eps, and the slider is
    disabled while it is chosen). `eps_ranges` maps a norm to (initial eps, slider maximum)
    (default `EPS_RANGES`): changing the norm resets the slider to that norm's range. Controls:
    ``.attack``, ``.eps``, ``.norm``, ``.target`` (`UNTARGETED` or a class index) and ``.index``; the
    latest result is in ``.state``.
    """
    fns = attack_fns or explorer_attacks()
    ranges = _ranges(eps_ranges or {}, EPS_RANGES, "eps_ranges")
    k = predict(model, x[:1]).shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    atk_w = W.Dropdown(options=list(fns), description="attack")
    eps0, top = ranges["linf"]
    eps_w = W.FloatSlider(value=eps0, min=0.0, max=top, step=grid_step((eps0,), top), description="ε",
                          continuous_update=False, readout_format=".3f")
    norm_w = W.Dropdown(options=[("L∞", "linf"), ("L2", "l2")], description="norm")
    # "untargeted" needs a real value: ipywidgets shows an option whose value is None as nothing
    # selected, and the dropdown went blank after a target was chosen and then untargeted
    tgt_w = W.Dropdown(options=[("untargeted", UNTARGETED)] + [(n, i) for i, n in enumerate(names)],
                       description="target")
    idx_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                        continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([atk_w, norm_w, tgt_w]), W.HBox([eps_w, idx_w]), out])
    box.attack, box.eps, box.norm, box.target, box.index = atk_w, eps_w, norm_w, tgt_w, idx_w
    box.out, box.state = out, {}
    quiet = []  # non-empty while the norm observer moves the slider: one redraw, not three

    @one_at_a_time
    def update(_=None):
        if quiet:
            return
        i, t = idx_w.value, (None if tgt_w.value == UNTARGETED else tgt_w.value)
        fn = fns[atk_w.value]
        eps_w.disabled = getattr(fn, "min_norm", False)
        xi, yi = x[i:i + 1], y[i:i + 1]
        label = yi if t is None else torch.full_like(yi, t)
        x_adv = fn(model, xi, label, eps_w.value, norm_w.value, t is not None)
        state = _redraw(out, model, xi, x_adv, names, yi)
        box.state = {**state, "attack": atk_w.value, "eps": eps_w.value, "norm": norm_w.value,
                     "target": t, "index": i, "reached_target": t is not None and
                     state["pred_adv"] == t}

    def change_norm(_=None):
        value, top = ranges[norm_w.value]
        quiet.append(True)
        try:
            eps_w.max = max(top, eps_w.value)  # never below the value while it moves
            eps_w.value, eps_w.max, eps_w.step = value, top, grid_step((value,), top)
        finally:
            quiet.clear()
        update()

    norm_w.observe(change_norm, "value")
    for w in (atk_w, eps_w, tgt_w, idx_w):
        w.observe(update, "value")
    update()
    return box


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              attack_fns: dict | None = None, eps_max: Mapping | None = None,
              points: int = 9) -> W.VBox:
    """Robust accuracy against eps for the chosen attacks and norm, redrawn on every change.

    `attack_fns` as in `attack_explorer` (default: the attacks of `explorer_attacks()` that
    spend a budget; minimum-norm ones have no eps to sweep). `eps_max` maps a norm to the
    initial largest eps (default `SWEEP_MAX`); changing the norm resets it. Controls:
    ``.attacks`` (multiple choice), ``.norm``, ``.eps_max``; ``.state["curves"]`` maps each
    attack to its list of (eps, robust accuracy).
    """
    fns = attack_fns or {name: fn for name, fn in explorer_attacks().items()
                         if not getattr(fn, "min_norm", False)}
    tops = _ranges(eps_max or {}, SWEEP_MAX, "eps_max")
    sel_w = W.SelectMultiple(options=list(fns), value=list(fns)[:2], description="attacks",
                             rows=min(4, len(fns)))
    norm_w = W.Dropdown(options=[("L∞", "linf"), ("L2", "l2")], description="norm")
    top = 3 * max(tops.values())
    max_w = W.FloatSlider(value=tops["linf"], min=0.0, max=top, step=grid_step(tops.values(), top),
                          description="max ε", continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([sel_w, W.VBox([norm_w, max_w])]), out])
    box.attacks, box.norm, box.eps_max, box.out, box.state = sel_w, norm_w, max_w, out, {}

    @one_at_a_time
    def update(_=None):
        grid = np.linspace(0, max_w.value, points).tolist()
        curves = {}
        for name in sel_w.value:
            def attack(m, xa, ya, eps, norm, fn=fns[name]):
                return fn(m, xa, ya, eps, norm, False)
            curve = robust_accuracy(model, x, y, attack, eps_list=grid, norm=norm_w.value)
            curves[name] = list(zip(curve.eps, curve.accuracy))
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 3))
            for name, c in curves.items():
                ax.plot(*zip(*c), marker="o", label=name)
            ax.set(xlabel=f"ε ({norm_w.label})", ylabel="robust accuracy", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            if curves:  # with no attack chosen there is nothing to label
                ax.legend()
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"curves": curves, "norm": norm_w.value}

    def change_norm(_=None):
        if max_w.value != tops[norm_w.value]:
            max_w.value = tops[norm_w.value]  # redraws through its own observer
        else:
            update()

    norm_w.observe(change_norm, "value")
    for w in (sel_w, max_w):
        w.observe(update, "value")
    update()
    return box


def black_box_attacks(*, seed: int = 0) -> dict:
    """The attacks of `query_explorer`: name -> ``fn(model, x, y, max_queries) -> (x_adv, queries)``.

    Square (L-inf, scores) at two budgets and HopSkipJump (L2, labels only). Every call draws
    from a fresh `robustlab.generator(seed)`, so the same settings always give the same result.
    """
    def square(eps):
        return lambda m, x, y, q: attacks.square(m, x, y, eps=eps, max_queries=q,
                                                 generator=generator(seed))

    def hsj(m, x, y, q):
        return attacks.hop_skip_jump(m, x, y, max_queries=q, generator=generator(seed))

    return {"Square L∞ ε=0.2": square(0.2), "Square L∞ ε=0.1": square(0.1), "HopSkipJump L2": hsj}


def query_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   attack_fns: dict | None = None, budget: int = 200, max_budget: int = 3000,
                   class_names: Sequence[str] | None = None) -> W.VBox:
    """A black-box attack, a query budget and an image: the attack's result within that budget.

    `attack_fns` maps a name to ``fn(model, x, y, max_queries) -> (x_adv, queries used)``
    (default: `black_box_attacks()`). Controls: ``.attack``, ``.budget`` and ``.index``; the
    latest result is in ``.state`` (with ``queries``, the queries the attack really used).
    """
    fns = attack_fns or black_box_attacks()
    if not 1 <= budget <= max_budget:
        raise ValueError(f"budget must be in [1, max_budget={max_budget}], got {budget}")
    atk_w = W.Dropdown(options=list(fns), description="attack")
    budget_w = W.IntSlider(value=budget, min=10, max=max_budget, step=10, description="budget",
                           continuous_update=False)
    idx_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                        continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([atk_w, budget_w, idx_w]), out])
    box.attack, box.budget, box.index, box.out, box.state = atk_w, budget_w, idx_w, out, {}

    @one_at_a_time
    def update(_=None):
        i = idx_w.value
        xi, yi = x[i:i + 1], y[i:i + 1]
        x_adv, used = fns[atk_w.value](model, xi, yi, budget_w.value)
        state = _redraw(out, model, xi, x_adv, class_names, yi)
        with out:
            print(f"{atk_w.value}: {int(used)} of {budget_w.value} queries, fooled: "
                  f"{state['fooled']}, L2 {state['l2']:.3f}, L∞ {state['linf']:.3f}")
        box.state = {**state, "attack": atk_w.value, "budget": budget_w.value, "index": i,
                     "queries": int(used)}

    for w in (atk_w, budget_w, idx_w):
        w.observe(update, "value")
    update()
    return box
