"""Widgets of lesson 05c (future directions in verification): verdicts of a property over input
regions of growing size, computed beforehand and browsed without running a solver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from torch import nn

from .._model import predict
from ..verify import Verdict
from .figures import one_at_a_time, show_image, show_perturbation

MARKERS = {"verified": ("C2", "o"), "falsified": ("C3", "x"), "unknown": ("0.5", "s")}


def _checked_verdicts(image: torch.Tensor, verdicts) -> dict[float, Verdict]:
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be one (C, H, W) tensor, got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    if not isinstance(verdicts, Mapping) or not verdicts:
        raise ValueError("verdicts must be a non-empty dict of radius -> Verdict")
    out = {}
    for r, v in verdicts.items():
        if not isinstance(v, Verdict):
            raise ValueError(f"verdicts[{r!r}] must be a Verdict, got {type(v).__name__}")
        if v.status == "falsified" and (v.counterexample is None or v.counterexample.shape != image.shape):
            raise ValueError(f"verdicts[{r!r}] is falsified but has no counterexample of the image's shape")
        out[float(r)] = v
    return out


def region_explorer(image: torch.Tensor, verdicts: Mapping, *, model: nn.Module,
                    names: Sequence[str] | None = None, radius: float | None = None) -> W.VBox:
    """A radius slider over a property verified on the boxes [image - r, image + r] ∩ [0, 1].

    `verdicts` maps each radius r to the Verdict of the property on its box (from
    `robustlab.verify.verify_property`, run beforehand: the widget runs no solver, so it answers
    at once and a saved lesson shows its first frame). The left panel shows the image, the
    middle one the counterexample (with the class `model` gives it) or, when the property is
    verified, the box's half-width as a perturbation, the right one every stored verdict
    against r with the chosen one marked. Control: ``.radius`` (a selection slider over the
    stored radii); ``.state`` holds ``radius``, ``status``, ``seconds``, ``predicted`` (the
    counterexample's class, None unless falsified) and ``distance`` (its L-inf distance from
    the image).
    """
    table = _checked_verdicts(image, verdicts)
    radii = sorted(table)
    radius = radii[0] if radius is None else float(radius)
    if radius not in table:
        raise ValueError(f"radius must be one of the stored radii {radii}, got {radius}")
    k = predict(model, image[None]).shape[1]
    names = [str(i) for i in range(k)] if names is None else list(names)
    if len(names) != k:
        raise ValueError(f"names must hold one name per class ({k}), got {len(names)}")
    r_w = W.SelectionSlider(options=radii, value=radius, description="radius r",
                            continuous_update=False)
    out = W.Output()
    box = W.VBox([r_w, out])
    box.radius, box.out, box.state = r_w, out, {}

    @one_at_a_time
    def update(_=None):
        r = r_w.value
        v = table[r]
        predicted = distance = None
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 3, figsize=(9, 2.8), gridspec_kw={"width_ratios": [1, 1, 2]})
            show_image(axes[0], image, f"centre: {names[int(predict(model, image[None]).argmax())]}")
            if v.status == "falsified":
                p = v.counterexample
                predicted = int(predict(model, p[None]).argmax())
                distance = float((p - image).abs().max())
                show_image(axes[1], p, f"counterexample: {names[predicted]}\nL∞ {distance:.3f}")
            else:
                half = ((image + r).clamp(0, 1) - (image - r).clamp(0, 1)) / 2
                show_perturbation(axes[1], half, f"{v.status}: box half-width")
            for q in radii:
                colour, marker = MARKERS[table[q].status]
                axes[2].plot(q, table[q].seconds, marker, color=colour)
            for status, (colour, marker) in MARKERS.items():
                axes[2].plot([], [], marker, color=colour, label=status)
            axes[2].axvline(r, color="k", ls=":", lw=1)
            axes[2].set(xscale="log", xlabel="radius r of the box", ylabel="seconds",
                        title=f"r = {r:g}: {v.status}")
            axes[2].legend(fontsize=7)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        box.state = {"radius": r, "status": v.status, "seconds": v.seconds, "predicted": predicted,
                     "distance": distance}

    r_w.observe(update, "value")
    update()
    return box
