"""Widget of lesson 02d for point clouds: turn a cloud and its adversarial version, with the
points the attack moved, added or dropped in colour, each model's answers and the set distances.

The widget draws what the pure function `cloud_view` computes (with `cloud_changes`: which
points changed), so a test can check the numbers without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .. import attacks
from .._checks import check_in_range, check_labels
from .._model import predict
from ..pointcloud_data import CLASSES as SHAPES
from ..pointcloud_data import check_points
from .figures import one_at_a_time

__all__ = ["cloud_changes", "cloud_view", "point_cloud_viewer"]

ANGLE_STEP = 5  # degrees between two positions of the azimuth and elevation sliders
COLOURS = {"unchanged": "0.65", "moved": "C3", "added": "C2", "dropped": "C0"}


def cloud_changes(clean: torch.Tensor, adversarial: torch.Tensor) -> dict:
    """Which points of one cloud an attack changed, read from the two clouds themselves.

    Same size (`attacks.perturb_points`): a point moved if any coordinate differs. More points
    (`attacks.add_points`): the clean points must come first, unchanged; the rest are added.
    Fewer points (`attacks.drop_points`): the adversarial cloud must be the clean one with some
    points taken out, order kept; those are dropped. Returns ``kind`` ("moved", "added" or
    "dropped"), ``changed`` (P,) bool over the clean points (moved or dropped), ``new`` (Q,)
    bool over the adversarial points (moved or added) and ``shift`` (P,) each clean point's
    move length (0 when it was not moved).

    Args:
        clean: one cloud (P, 3). adversarial: its attacked version (Q, 3).
    """
    a, b = _one_cloud(clean, "clean"), _one_cloud(adversarial, "adversarial")
    p, q = len(a), len(b)
    if q == p:
        changed = (a != b).any(1)
        return {"kind": "moved", "changed": changed, "new": changed.clone(),
                "shift": (b - a).norm(dim=1)}
    shift = torch.zeros(p, dtype=torch.float64)
    if q > p:
        if not torch.equal(b[:p], a):
            raise ValueError(f"adversarial has more points than the clean cloud ({q} > {p}), so it "
                             f"must hold the clean points first, unchanged (add_points' layout)")
        return {"kind": "added", "changed": torch.zeros(p, dtype=torch.bool),
                "new": torch.arange(q) >= p, "shift": shift}
    kept, j, a_np, b_np = torch.zeros(p, dtype=torch.bool), 0, a.numpy(), b.numpy()
    for i in range(p):  # the adversarial points, in order, as a subsequence of the clean ones
        if j < q and (a_np[i] == b_np[j]).all():
            kept[i], j = True, j + 1
    if j < q:
        raise ValueError(f"adversarial has fewer points than the clean cloud ({q} < {p}), so it must "
                         f"be the clean cloud with points taken out, order kept (drop_points' layout)")
    return {"kind": "dropped", "changed": ~kept, "new": torch.zeros(q, dtype=torch.bool), "shift": shift}


def _one_cloud(points, name: str) -> torch.Tensor:
    """One cloud (P, 3), checked, as float64 on the CPU (float32 -> float64 is exact)."""
    if not isinstance(points, torch.Tensor) or points.dim() != 2:
        got = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{name} must be one cloud, a tensor (P, 3), got {got}")
    return check_points(points[None], name)[0].detach().cpu().double()


def class_name(names: Sequence[str], k: int) -> str:
    """The name of class `k`, or the number itself past the names given."""
    return names[k] if 0 <= k < len(names) else str(k)


def answers_of(model: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str]) -> list:
    """The model's class, its name and its probability, on each single input."""
    out = []
    for x in inputs:
        p = predict(model, x[None]).softmax(1)[0]
        k = int(p.argmax())
        out.append((k, class_name(names, k), float(p[k])))
    return out


def cloud_view(clean: torch.Tensor, adversarial: torch.Tensor, *,
               models: Mapping[str, nn.Module] | None = None, label: int | None = None,
               class_names: Sequence[str] = SHAPES) -> dict:
    """What the point-cloud viewer draws for one cloud: both clouds (numpy), `cloud_changes`,
    each model's answer on both, and the set distances of `attacks.chamfer_distance` and
    `attacks.hausdorff_distance` (Chamfer: the mean nearest-point distance, both ways, halved;
    Hausdorff: the farthest any point is from the other cloud).

    ``predictions[name]`` is ``{"clean", "adversarial"}``, each ``(class, name, probability)``.
    """
    changes = cloud_changes(clean, adversarial)
    a, b = clean.detach().double().cpu()[None], adversarial.detach().double().cpu()[None]
    answers = {name: dict(zip(("clean", "adversarial"), answers_of(m, (clean, adversarial), class_names)))
               for name, m in (models or {}).items()}
    return {**changes, "clean": a[0].numpy(), "adversarial": b[0].numpy(), "predictions": answers,
            "chamfer": float(attacks.chamfer_distance(b, a)[0]),
            "hausdorff": float(attacks.hausdorff_distance(b, a)[0]),
            "label": None if label is None else class_name(class_names, label)}


def _draw_cloud(view: dict, attack: str, *, azimuth: int, elevation: int):
    """Clean and adversarial cloud side by side, turned alike, the changed points in colour."""
    fig = plt.figure(figsize=(9, 4.6))
    highlight = view["kind"]
    panels = [(view["clean"], view["changed"], "clean"), (view["adversarial"], view["new"], attack)]
    top = max(np.abs(view["clean"]).max(), np.abs(view["adversarial"]).max())
    for j, (pts, mask, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, j + 1, projection="3d")
        mask = mask.numpy()
        ax.scatter(*pts[~mask].T, s=5, color=COLOURS["unchanged"], label=f"unchanged ({(~mask).sum()})")
        if mask.any():
            where = " (before)" if highlight == "moved" and j == 0 else ""
            ax.scatter(*pts[mask].T, s=16, color=COLOURS[highlight], depthshade=False,
                       label=f"{highlight}{where} ({mask.sum()})")
        answers = [f"{name}: {v['clean'][1]} {v['clean'][2]:.0%}" if j == 0 else
                   f"{name}: {v['adversarial'][1]} {v['adversarial'][2]:.0%}"
                   + (" (changed)" if v["adversarial"][0] != v["clean"][0] else "")
                   for name, v in view["predictions"].items()]
        head = title + (f" (true: {view['label']})" if j == 0 and view["label"] else "")
        ax.set_title("\n".join([head, *answers]), fontsize=8)
        ax.set(xlim=(-top, top), ylim=(-top, top), zlim=(-top, top))
        ax.set_box_aspect((1, 1, 1), zoom=1.3)  # the default leaves a wide empty margin
        ax.view_init(elev=elevation, azim=azimuth)
        ax.set_axis_off()
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Chamfer {view['chamfer']:.3f} · Hausdorff {view['hausdorff']:.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def _angle(value, name: str, top: int) -> int:
    check_in_range(value, name, -top, top, integer=True)
    if value % ANGLE_STEP:
        raise ValueError(f"{name} must be a multiple of {ANGLE_STEP} degrees (the slider's grid), "
                         f"got {value}")
    return value


def _clouds_of(adversarial, clouds: torch.Tensor) -> dict[str, torch.Tensor]:
    """`adversarial` as name -> (N, Q, 3) clouds, each checked against `clouds`."""
    if not isinstance(adversarial, Mapping):
        adversarial = {getattr(adversarial, "attack", "adversarial"): adversarial}
    if not adversarial:
        raise ValueError("adversarial must not be empty")
    out = {}
    for name, item in adversarial.items():
        where = f"adversarial[{name!r}]"
        if isinstance(item, attacks.PointAttackResult):
            if item.original.shape != clouds.shape or not torch.equal(item.original.to(clouds), clouds):
                raise ValueError(f"{where} is an attack on other clouds than `clouds`")
            item = item.adversarial
        check_points(item, where)
        if len(item) != len(clouds):
            raise ValueError(f"{where} holds {len(item)} clouds, clouds {len(clouds)}")
        out[str(name)] = item
    return out


def point_cloud_viewer(clouds: torch.Tensor, adversarial, *,
                       models: nn.Module | Mapping[str, nn.Module] | None = None,
                       labels: torch.Tensor | None = None, class_names: Sequence[str] = SHAPES,
                       index: int = 0, azimuth: int = -60, elevation: int = 30) -> W.VBox:
    """Turn a point cloud and its adversarial version (sliders for azimuth and elevation, in
    steps of 5 degrees, and for the cloud), with the points the attack moved (red), added
    (green) or dropped (blue) highlighted, each model's answer and probability on both clouds,
    and their Chamfer and Hausdorff distances (`cloud_view`).

    Args:
        clouds: the clean clouds (N, P, 3).
        adversarial: a `PointAttackResult` of `attacks.perturb_points`, `add_points` or
            `drop_points` on `clouds`, or their adversarial clouds (N, Q, 3), or a dict of
            several by name (then ``.attack`` picks one).
        models: a model, or a dict name -> model, whose answers the titles give.
        labels: the true classes (N,), shown beside the clean cloud.
    Controls: ``.attack``, ``.index``, ``.azimuth``, ``.elevation``. ``.state`` holds `cloud_view`'s
    entries for the cloud shown, with ``attack``, ``index``, ``azimuth``, ``elevation`` and
    ``drawn_view`` (the (elevation, azimuth) the figure's axes were drawn at).
    """
    check_points(clouds, "clouds")
    named = _clouds_of(adversarial, clouds)
    if isinstance(models, nn.Module):
        models = {type(models).__name__: models}
    models = dict(models or {})
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{name!r}] must be a torch.nn.Module, got {type(m).__name__}")
    if labels is not None:
        labels = check_labels(labels, clouds, name="labels")
    check_in_range(index, "index", 0, len(clouds) - 1, integer=True)
    _angle(azimuth, "azimuth", 180)
    _angle(elevation, "elevation", 90)
    for name, adv in named.items():  # refuse a layout cloud_changes cannot read now, not mid-lesson
        for i in range(len(clouds)):
            try:
                cloud_changes(clouds[i], adv[i])
            except ValueError as e:
                raise ValueError(f"adversarial[{name!r}], cloud {i}: {e}") from None

    attack_w = W.Dropdown(options=list(named), description="attack")
    index_w = W.IntSlider(value=index, min=0, max=len(clouds) - 1, description="cloud",
                          continuous_update=False)
    azim_w = W.IntSlider(value=azimuth, min=-180, max=180, step=ANGLE_STEP, description="azimuth",
                         continuous_update=False)
    elev_w = W.IntSlider(value=elevation, min=-90, max=90, step=ANGLE_STEP, description="elevation",
                         continuous_update=False)
    out = W.Output()
    box = W.VBox([W.HBox([attack_w, index_w]), W.HBox([azim_w, elev_w]), out])
    box.attack, box.index, box.azimuth, box.elevation, box.out, box.state = (
        attack_w, index_w, azim_w, elev_w, out, {})
    views: dict = {}  # turning the cloud does not re-run the models

    @one_at_a_time
    def update(_=None):
        key = (attack_w.value, index_w.value)
        if key not in views:
            i = index_w.value
            views[key] = cloud_view(clouds[i], named[key[0]][i], models=models, class_names=class_names,
                                    label=None if labels is None else int(labels[i]))
        view = views[key]
        with out:
            out.clear_output(wait=True)
            fig = _draw_cloud(view, key[0], azimuth=azim_w.value, elevation=elev_w.value)
            drawn = [(ax.elev, ax.azim) for ax in fig.axes]
            plt.show()
            plt.close(fig)
        box.state = {**view, "attack": key[0], "index": key[1], "azimuth": azim_w.value,
                     "elevation": elev_w.value, "drawn_view": drawn[0]}

    for w in (attack_w, index_w, azim_w, elev_w):
        w.observe(update, "value")
    update()
    return box
