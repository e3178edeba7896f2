"""Interactive widgets for the lessons (ipywidgets + matplotlib).

Each builder returns an ipywidgets container whose controls are attributes (``.eps``,
``.index``, ...) and whose latest result is in ``.state``, so a test can drive it headless by
setting ``.value`` and reading ``.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from . import attacks
from ._model import predict
from .evaluate import PRESETS, robust_accuracy


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


def epsilon_explorer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                     attack: Callable | None = None, eps_max: float = 0.5, eps: float = 0.1,
                     class_names: Sequence[str] | None = None) -> W.VBox:
    """An eps slider and an image picker showing image, perturbation, prediction, confidence.

    `attack(model, x, y, eps=...)` defaults to FGSM (L-inf). Controls: ``.eps`` and ``.index``;
    the latest prediction is in ``.state`` (keys pred, conf, pred_adv, conf_adv, fooled).
    """
    attack = attack or attacks.fgsm
    eps_w = W.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_max / 50, description="ε",
                          continuous_update=False, readout_format=".3f")
    idx_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                        continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([eps_w, idx_w]), out])
    box.eps, box.index, box.out, box.state = eps_w, idx_w, out, {}

    def update(_=None):
        i = idx_w.value
        xi, yi = x[i:i + 1], y[i:i + 1]
        x_adv = attack(model, xi, yi, eps=eps_w.value)
        with out:
            out.clear_output(wait=True)
            fig, state = adversarial_figure(model, xi[0], x_adv[0], class_names, int(yi))
            plt.show()
            plt.close(fig)
        box.state = {**state, "eps": eps_w.value, "index": i}

    eps_w.observe(update, "value")
    idx_w.observe(update, "value")
    update()
    return box


# (initial eps, slider maximum) per norm: on 8 x 8 digits an L-inf change of 0.15 already fools
# most models while an L2 ball needs a radius near 1 (the L2 diameter of the image cube is 16)
EPS_RANGES = {"linf": (0.15, 0.5), "l2": (1.0, 4.0)}
SWEEP_MAX = {"linf": 0.4, "l2": 3.0}


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
    ``.attack``, ``.eps``, ``.norm``, ``.target`` (None for untargeted) and ``.index``; the
    latest result is in ``.state``.
    """
    fns = attack_fns or explorer_attacks()
    ranges = _ranges(eps_ranges or {}, EPS_RANGES, "eps_ranges")
    k = predict(model, x[:1]).shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    atk_w = W.Dropdown(options=list(fns), description="attack")
    eps0, top = ranges["linf"]
    eps_w = W.FloatSlider(value=eps0, min=0.0, max=top, step=top / 50, description="ε",
                          continuous_update=False, readout_format=".3f")
    norm_w = W.Dropdown(options=[("L∞", "linf"), ("L2", "l2")], description="norm")
    tgt_w = W.Dropdown(options=[("untargeted", None)] + [(n, i) for i, n in enumerate(names)],
                       description="target")
    idx_w = W.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                        continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([atk_w, norm_w, tgt_w]), W.HBox([eps_w, idx_w]), out])
    box.attack, box.eps, box.norm, box.target, box.index = atk_w, eps_w, norm_w, tgt_w, idx_w
    box.out, box.state = out, {}
    quiet = []  # non-empty while the norm observer moves the slider: one redraw, not three

    def update(_=None):
        if quiet:
            return
        i, t = idx_w.value, tgt_w.value
        fn = fns[atk_w.value]
        eps_w.disabled = getattr(fn, "min_norm", False)
        xi, yi = x[i:i + 1], y[i:i + 1]
        label = yi if t is None else torch.full_like(yi, t)
        x_adv = fn(model, xi, label, eps_w.value, norm_w.value, t is not None)
        with out:
            out.clear_output(wait=True)
            fig, state = adversarial_figure(model, xi[0], x_adv[0], names, int(yi))
            plt.show()
            plt.close(fig)
        d = (x_adv - xi).flatten()
        box.state = {**state, "attack": atk_w.value, "eps": eps_w.value, "norm": norm_w.value,
                     "target": t, "index": i, "reached_target": t is not None and
                     state["pred_adv"] == t, "linf": d.abs().max().item(), "l2": d.norm().item()}

    def change_norm(_=None):
        value, top = ranges[norm_w.value]
        quiet.append(True)
        try:
            eps_w.max = max(top, eps_w.value)  # never below the value while it moves
            eps_w.value, eps_w.max, eps_w.step = value, top, top / 50
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
    max_w = W.FloatSlider(value=tops["linf"], min=0.05, max=3 * max(tops.values()), step=0.05,
                          description="max ε", continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([sel_w, W.VBox([norm_w, max_w])]), out])
    box.attacks, box.norm, box.eps_max, box.out, box.state = sel_w, norm_w, max_w, out, {}

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
    max_w = W.FloatSlider(value=eps_max, min=0.05, max=max(0.5, 2 * eps_max), step=0.05,
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

    from .defences import smoothing
    from .utils import generator

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

    def update(_=None):
        sigma = sigma_w.value
        r = result(sigma)
        radii = r.radius[r.correct].tolist()
        cap = sigma * float(stats.norm.ppf(alpha ** (1 / n)))
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.hist(radii, bins=bins, range=(0, cap * 1.05), color="C0")
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


def _box_patch(ax, lower, upper, **kw):
    ax.add_patch(plt.Rectangle((float(lower[0]), float(lower[1])), float(upper[0] - lower[0]),
                               float(upper[1] - lower[1]), fill=False, **kw))


def draw_output_bounds(axes, model: nn.Module, x: torch.Tensor, eps: float, *,
                       partitions: int = 8, samples: int = 3000,
                       generator: torch.Generator | None = None) -> dict:
    """Input box and output bounds of a network with two inputs and two outputs, side by side.

    Left: the L-inf box around x (1, C, H, W) (two entries in all), intersected with [0, 1],
    and `samples` uniform points of it. Right: their outputs (a sample of the true reachable
    set) with the boxes of `robustlab.verify.interval` (IBP, which is also Xiang et al.'s
    hyper-rectangle), `robustlab.verify.crown`, and Xiang et al.'s refinement: the output box
    of each of the partitions x partitions sub-boxes (`robustlab.verify.reach_box`) and their
    bounding box. Returns the bounds as {"interval" | "crown" | "reach": (lower, upper)}, the
    sampled outputs, and whether every sample lies inside each box ("inside").
    """
    from . import verify  # the verifiers sit below the widgets; imported when drawn

    if x.shape[0] != 1 or x[0].numel() != 2:
        raise ValueError(f"x must be one input with two entries, (1, C, H, W), got {tuple(x.shape)}")
    lo, up = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    u = torch.rand(samples, *x.shape[1:], generator=generator, dtype=x.dtype)
    xs = lo + (up - lo) * u.to(x.device)
    zs = predict(model, xs)
    if zs.shape[1] != 2:
        raise ValueError(f"model must have two outputs, got {zs.shape[1]}")
    steps = torch.arange(partitions + 1, dtype=x.dtype, device=x.device) / partitions
    grid = torch.cartesian_prod(steps[:-1], steps[:-1]), torch.cartesian_prod(steps[1:], steps[1:])
    span = (up - lo).flatten()
    sub_lo = (lo.flatten() + grid[0] * span).view(-1, *x.shape[1:])
    sub_up = (lo.flatten() + grid[1] * span).view(-1, *x.shape[1:])
    pieces = verify.reach_box(model, sub_lo, sub_up)
    bounds = {"interval": tuple(verify.interval(model, x, eps=eps)),
              "crown": tuple(verify.crown(model, x, eps=eps)),
              "reach": (pieces.lower.amin(0, keepdim=True), pieces.upper.amax(0, keepdim=True))}
    ax_in, ax_out = axes
    flat = xs.flatten(1).cpu()
    ax_in.scatter(flat[:, 0], flat[:, 1], s=1, c=flat[:, 0], cmap="viridis")  # colour: x_1
    _box_patch(ax_in, lo.flatten().cpu(), up.flatten().cpu(), color="k", lw=1.5)
    ax_in.plot(*x.flatten().cpu().tolist(), "r+", ms=10)
    ax_in.set(xlabel="$x_1$", ylabel="$x_2$", title=f"input box, ε = {eps:.3f}", aspect="equal")
    for lo_i, up_i in zip(pieces.lower.cpu(), pieces.upper.cpu()):
        _box_patch(ax_out, lo_i, up_i, color="C2", lw=0.4, alpha=0.5)
    ax_out.scatter(zs[:, 0].cpu(), zs[:, 1].cpu(), s=1, c=flat[:, 0], cmap="viridis")
    styles = {"interval": ("C0", "interval (IBP) = Xiang, 1 box"), "crown": ("C3", "CROWN"),
              "reach": ("C2", f"Xiang, {partitions}×{partitions} sub-boxes")}
    for name, (color, label) in styles.items():
        b_lo, b_up = (t[0].cpu() for t in bounds[name])
        _box_patch(ax_out, b_lo, b_up, color=color, lw=1.8, label=label)
    b_lo, b_up = bounds["interval"]
    pad = (0.05 * (b_up - b_lo)[0].cpu()).clamp_min(0.02)  # eps = 0: a box of width 0
    ax_out.set(xlim=(float(b_lo[0, 0] - pad[0]), float(b_up[0, 0] + pad[0])),
               ylim=(float(b_lo[0, 1] - pad[1]), float(b_up[0, 1] + pad[1])),
               xlabel="output $z_1$", ylabel="output $z_2$", title="outputs and their bounds")
    ax_out.legend(fontsize=7, loc="upper right")
    inside = {name: bool(verify.Bounds(*[t.expand_as(zs) for t in b]).contains(zs).all())
              for name, b in bounds.items()}
    return {"bounds": bounds, "outputs": zs, "inside": inside}


def reach_explorer(model: nn.Module, x: torch.Tensor, *, eps: float = 0.1, eps_max: float = 0.3,
                   partitions: int = 8, samples: int = 3000, seed: int = 0) -> W.VBox:
    """An eps slider over a network with two inputs and two outputs: `draw_output_bounds` for
    the box of radius eps around x, redrawn on every change.

    Controls: ``.eps`` and ``.partitions`` (sub-boxes per input for Xiang et al.'s refinement).
    ``.state`` holds eps, the widths of each method's box ({"interval" | "crown" | "reach":
    (N, 2) tensor}) and "inside" (every sampled output lies inside every box: soundness).
    Samples are drawn from a generator seeded with `seed` on every redraw.
    """
    eps_w = W.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_max / 60, description="ε",
                          continuous_update=False, readout_format=".3f")
    part_w = W.IntSlider(value=partitions, min=1, max=16, description="sub-boxes",
                         continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([eps_w, part_w]), out])
    box.eps, box.partitions, box.out, box.state = eps_w, part_w, out, {}

    def update(_=None):
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
            drawn = draw_output_bounds(axes, model, x, eps_w.value, partitions=part_w.value,
                                       samples=samples,
                                       generator=torch.Generator().manual_seed(seed))
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"eps": eps_w.value, "partitions": part_w.value, "inside": drawn["inside"],
                     "widths": {k: (b[1] - b[0]) for k, b in drawn["bounds"].items()}}

    eps_w.observe(update, "value")
    part_w.observe(update, "value")
    update()
    return box
