"""Widgets of the verification lessons: output bounds of a two-input network, over eps."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from torch import nn

from .._model import predict
from .figures import grid_step, one_at_a_time


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
    from .. import verify  # the verifiers sit below the widgets; imported when drawn

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
    eps_w = W.FloatSlider(value=eps, min=0.0, max=eps_max, step=grid_step((eps,), eps_max, steps=60),
                          description="ε",
                          continuous_update=False, readout_format=".3f")
    part_w = W.IntSlider(value=partitions, min=1, max=16, description="sub-boxes",
                         continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([eps_w, part_w]), out])
    box.eps, box.partitions, box.out, box.state = eps_w, part_w, out, {}

    @one_at_a_time
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
