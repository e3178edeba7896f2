"""Attacks on point-cloud classifiers (`robustlab.pointcloud_models`, or any model mapping
points (N, P, 3) to logits (N, K)): shift the points, add points, or drop points.

- `perturb`: PGD on per-point shifts, each shift bounded (Liu, Yu and Su, ICIP 2019;
  optionally with Xiang, Qi and Li's Chamfer penalty, CVPR 2019);
- `add_points`: Xiang et al.'s point adding, each new point within eps of the original cloud;
- `drop_points`: Zheng, Chen, Yuan, Li and Ren's saliency-map point dropping (ICCV 2019);
- `critical_points`: PointNet's critical set, the points that attain its max-pool;
- `chamfer_distance`, `hausdorff_distance`: how far two clouds are apart, batched.

Every attack leaves the model and its input as found, enforces its constraint, and returns a
`PointAttackResult` that reports per example the constraint measured and whether it holds,
with the Chamfer and Hausdorff distances to the original. The loops read nothing back to the
host: the best cloud so far is kept per example with `torch.where`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._checks import (
    check_bool,
    check_choice,
    check_eps,
    check_in_range,
    check_labels,
    check_nonnegative,
    check_positive,
)
from .._model import check_model, check_model_input, correct, eval_mode, frozen, logits_of, plain, predict
from ..losses import LOSSES, is_fooled
from ..norms import project, steepest
from ..pointcloud_data import check_points
from ..tables import Tabular, markdown_table

__all__ = ["PointAttackResult", "add_points", "chamfer_distance", "critical_points", "drop_points",
           "hausdorff_distance", "perturb", "pointcloud_transfer"]

TOLERANCE = 1e-5  # relative slack of the bound checks: a projection rounds to the last bit


def _squared_nn(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance from each point of a to its nearest point of b (N, P), and from each
    point of b to its nearest point of a (N, Q). Differences, not cdist's expansion
    |a|^2 - 2ab + |b|^2, so that a point on top of another is at distance exactly 0."""
    d2 = (a[:, :, None] - b[:, None]).square().sum(3)  # (N, P, Q)
    return d2.amin(2), d2.amin(1)


def _root(d2: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at 0 (where it is 0, the gradient of a point on another)."""
    return torch.where(d2 > 0, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), 0.0)


def _pair(a, b) -> None:
    check_points(a, "a")
    check_points(b, "b")
    if len(a) != len(b) or a.device != b.device or a.dtype != b.dtype:
        raise ValueError(f"a and b must hold as many clouds on one device with one dtype, got "
                         f"{len(a)} on {a.device} ({a.dtype}) and {len(b)} on {b.device} ({b.dtype})")


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, *, squared: bool = False) -> torch.Tensor:
    """Symmetric Chamfer distance per cloud pair (N,), differentiable:

        C(A, B) = 1/2 [ mean_{a in A} min_{b in B} d(a, b) + mean_{b in B} min_{a in A} d(a, b) ]

    with d the Euclidean distance, or its square if `squared` (Xiang et al., CVPR 2019, eq. 6
    use the squared form, one direction, as a penalty). A and B (N, P, 3), (N, Q, 3) may differ
    in size. Plain form: if every point moves by at most eps, C <= eps (each point's old
    position's nearest neighbour is at most as far as its new position).
    """
    _pair(a, b)
    return _chamfer(a, b, squared)


def _chamfer(a: torch.Tensor, b: torch.Tensor, squared: bool) -> torch.Tensor:
    """`chamfer_distance` without the checks (which read back to the host): for loops."""
    da, db = _squared_nn(a, b)
    if squared:
        return (da.mean(1) + db.mean(1)) / 2
    return (_root(da).mean(1) + _root(db).mean(1)) / 2


def hausdorff_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric Hausdorff distance per cloud pair (N,), differentiable almost everywhere:

        H(A, B) = max( max_{a in A} min_{b in B} |a - b|, max_{b in B} min_{a in A} |a - b| ),

    the farthest any point of either cloud is from the other cloud. Per-point shifts of
    Euclidean length <= eps give H <= eps.
    """
    _pair(a, b)
    da, db = _squared_nn(a, b)
    return _root(torch.maximum(da.amax(1), db.amax(1)))


@dataclass
class PointAttackResult(Tabular):
    """What a point-cloud attack found, per example (tensors on the input's device).

    ``success[i]``: untargeted, the model classified ``original[i]`` right and
    ``adversarial[i]`` wrong; targeted, it classifies ``adversarial[i]`` as the target.
    ``measured[i]`` is the constrained quantity (largest point shift, largest distance of an
    added point to the original cloud, points dropped) and ``within[i]`` says it is at most
    ``limit``; ``chamfer`` and ``hausdorff`` are distances from the original (plain form)."""

    attack: str
    constraint: str
    limit: float
    original: torch.Tensor
    adversarial: torch.Tensor
    targeted: bool
    clean: torch.Tensor
    success: torch.Tensor
    measured: torch.Tensor
    within: torch.Tensor
    chamfer: torch.Tensor
    hausdorff: torch.Tensor
    added: int = 0
    dropped: int = 0

    @property
    def success_rate(self) -> float:
        """Successes among the examples counted: those classified right (untargeted), all
        (targeted); NaN if none."""
        n = len(self.success) if self.targeted else int(self.clean.sum())
        return float("nan") if n == 0 else int(self.success.sum()) / n

    def summary(self) -> dict:
        """Success rate, mean and max Chamfer and Hausdorff over all examples, points added
        and dropped, and the share of outputs within the bound."""
        return {"success rate": self.success_rate, "mean chamfer": self.chamfer.mean().item(),
                "max chamfer": self.chamfer.amax().item(),
                "mean hausdorff": self.hausdorff.mean().item(),
                "max hausdorff": self.hausdorff.amax().item(), "added": self.added,
                "dropped": self.dropped, "within bound": self.within.float().mean().item()}

    def table(self) -> str:
        s = self.summary()
        return markdown_table(["attack", "constraint", *s], [[self.attack, self.constraint, *s.values()]],
                              decimals=[None, None, 3, 4, 4, 4, 4, None, None, 3])


def _inputs(model, points, y, targeted) -> tuple[torch.Tensor, torch.Tensor]:
    check_model(model)
    points = plain(check_points(points))
    check_model_input(model, points, "points")
    check_bool(targeted, "targeted")
    return points, check_labels(y, points)


def _result(attack, constraint, limit, model, x0, adv, y, targeted, measured, **counts):
    clean = correct(model, x0, y)  # both in eval mode, without gradients
    fooled = is_fooled(predict(model, adv).argmax(1), y, targeted)
    with torch.no_grad():
        within = measured <= limit * (1 + TOLERANCE) + TOLERANCE * 1e-2
        return PointAttackResult(attack, constraint, limit, x0, adv, targeted, clean,
                                 fooled & (True if targeted else clean), measured, within,
                                 chamfer_distance(adv, x0), hausdorff_distance(adv, x0), **counts)


def _per_point(g: torch.Tensor) -> torch.Tensor:
    """Each point's own unit gradient direction (rows of (N, P, 3)), never NaN."""
    return steepest(g.reshape(-1, 3), "l2").view_as(g)


def _ascend(model, x0, y, var, *, cloud, direction, project_var, steps, alpha, loss, targeted,
            chamfer_weight):
    """PGD ascent of loss(model(cloud(var))) - chamfer_weight * C^2(cloud(var), x0) over `var`,
    each step ``var <- project_var(var + alpha * direction(gradient))``. Keeps per example the cloud
    that fools the model with the smallest Chamfer distance, or the last one until one fools
    it. Run inside `frozen`."""
    loss_fn = LOSSES[loss]
    best = cloud(var).detach()
    best_fooled = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    best_dist = torch.full((len(x0),), torch.inf, dtype=x0.dtype, device=x0.device)
    for step in range(steps + 1):
        var = var.detach().requires_grad_(True)
        x = cloud(var)
        z = logits_of(model, x, y) if step == 0 else model(x)  # the label check syncs: once
        dist = _chamfer(x, x0, squared=True)
        fooled = is_fooled(z.argmax(1), y, targeted)
        better = fooled & (~best_fooled | (dist < best_dist)) | (~fooled & ~best_fooled)
        best = torch.where(better[:, None, None], x.detach(), best)
        best_dist = torch.where(better, dist.detach(), best_dist)
        best_fooled = best_fooled | fooled
        if step == steps:
            return best
        penalty = chamfer_weight * dist if chamfer_weight else 0.0  # no backward through 0 * C
        objective = loss_fn(z, y, targeted) - penalty
        (g,) = torch.autograd.grad(objective.sum(), var)
        var = project_var(var.detach() + alpha * direction(g))


def perturb(model: nn.Module, points: torch.Tensor, y: torch.Tensor, *, eps: float,
            steps: int = 50, alpha: float | None = None, bound: str = "l2", targeted: bool = False,
            loss: str = "ce", chamfer_weight: float = 0.0) -> PointAttackResult:
    """PGD on per-point shifts under a hard bound (Liu, Yu and Su, "Extending adversarial
    attacks and defenses to deep 3D point cloud classifiers", ICIP 2019; Madry et al.'s PGD):

        x_{t+1} = x + Proj_S(x_t - x + alpha * d_t),   S = {delta : |delta_i| <= eps for all i}

    with, for `bound` = "l2", |delta_i| the Euclidean length of point i's shift and d_t each
    point's unit gradient direction; for "linf", the largest coordinate and d_t = sign(grad).
    Per-point L2 shifts <= eps imply Hausdorff <= eps and Chamfer <= eps to the original
    (L-inf: sqrt(3) eps). `chamfer_weight` lambda > 0 subtracts lambda * C^2(x_t, x) from the
    loss, Xiang, Qi and Li's Chamfer penalty (CVPR 2019, eq. 2 and 6), inside the hard bound.
    The cloud kept per example is the one that fools the model with the least Chamfer distance
    among the steps (the last one if none does); its bound is checked and reported.

    Arguments:
        eps: the bound on every point's shift (in the unit ball's units; 0.05 moves a point by
            5% of the cloud's radius).
        steps: gradient steps; alpha: step length, 2.5 * eps / steps by default.
        targeted: y holds target classes. loss: "ce", "margin" or "dlr".
    """
    x0, y = _inputs(model, points, y, targeted)
    eps = check_eps(eps)
    check_positive(steps, "steps", integer=True)
    alpha = 2.5 * eps / steps if alpha is None else check_positive(alpha, "alpha")
    check_choice(bound, ("l2", "linf"), "bound")
    check_choice(loss, tuple(LOSSES), "loss")
    check_nonnegative(chamfer_weight, "chamfer_weight")

    def project_var(x):
        if bound == "l2":  # each point's shift is its own "example" of the L2 projection
            return x0 + project((x - x0).reshape(-1, 3), eps, "l2").view_as(x)
        return x0 + project(x - x0, eps, "linf")

    with frozen(model):
        adv = _ascend(model, x0, y, x0, cloud=lambda v: v, project_var=project_var,
                      direction=_per_point if bound == "l2" else lambda g: steepest(g, "linf"),
                      steps=steps, alpha=alpha, loss=loss, targeted=targeted,
                      chamfer_weight=chamfer_weight)
    shift = (adv - x0).norm(dim=2) if bound == "l2" else (adv - x0).abs()
    return _result("perturb", f"per-point {bound} shift <= {eps:g}", eps, model, x0, adv, y, targeted,
                   shift.flatten(1).amax(1))


def _nearest(p: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The point of x0 (N, P, 3) nearest to each point of p (N, M, 3), as (N, M, 3)."""
    idx = (p[:, :, None] - x0[:, None]).square().sum(3).argmin(2)
    return x0.gather(1, idx[..., None].expand(-1, -1, 3))


def add_points(model: nn.Module, points: torch.Tensor, y: torch.Tensor, *, n_add: int, eps: float,
               steps: int = 50, alpha: float | None = None, targeted: bool = False, loss: str = "ce",
               chamfer_weight: float = 0.0) -> PointAttackResult:
    """Xiang, Qi and Li's adversarial point adding ("Generating 3D adversarial point clouds",
    CVPR 2019, sec. 4.2), under a hard bound: `n_add` new points, each within distance `eps`
    of the original cloud X, found by PGD on the new points alone:

        maximise  L(f(X u Z))  over Z = {z_1..z_k},   subject to  min_{x in X} |z_j - x| <= eps,

    the original points unchanged, so H(X u Z, X) <= eps. Projection onto the union of the
    balls B(x, eps): onto the ball of the nearest original point (the nearest point of the
    union). The new points start at the `n_add` original points of largest loss gradient
    (where a moved copy changes the loss most; Xiang et al. start from critical points), one
    step along that gradient, so that a copy does not tie with its original in a max-pool.
    `chamfer_weight` adds Xiang et al.'s Chamfer penalty as in `perturb`.

    Arguments:
        n_add: points to add (>= 1); eps: how far from the cloud a new point may lie.
        steps, alpha (2.5 * eps / steps by default), targeted, loss: as in `perturb`.
    Returns a `PointAttackResult` with clouds of P + n_add points (the new ones last).
    """
    x0, y = _inputs(model, points, y, targeted)
    check_positive(n_add, "n_add", integer=True)
    eps = check_eps(eps)
    check_positive(steps, "steps", integer=True)
    alpha = 2.5 * eps / steps if alpha is None else check_positive(alpha, "alpha")
    check_choice(loss, tuple(LOSSES), "loss")
    check_nonnegative(chamfer_weight, "chamfer_weight")
    if n_add > x0.shape[1]:
        raise ValueError(f"n_add ({n_add}) may not exceed the points per cloud ({x0.shape[1]})")

    def project_var(z):
        centre = _nearest(z, x0)
        return centre + project((z - centre).reshape(-1, 3), eps, "l2").view_as(z)

    with frozen(model):
        xg = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(LOSSES[loss](logits_of(model, xg, y), y, targeted).sum(), xg)
        idx = g.norm(dim=2).topk(n_add, dim=1).indices[..., None].expand(-1, -1, 3)
        start = project_var(x0.gather(1, idx) + min(alpha, eps) * _per_point(g.gather(1, idx)))
        adv = _ascend(model, x0, y, start, cloud=lambda z: torch.cat([x0, z], 1), direction=_per_point,
                      project_var=project_var, steps=steps, alpha=alpha, loss=loss,
                      targeted=targeted, chamfer_weight=chamfer_weight)
    new = adv[:, x0.shape[1]:]
    away = _root((new - _nearest(new, x0)).square().sum(2)).amax(1)
    return _result("add_points", f"{n_add} points within {eps:g} of the cloud", eps, model, x0, adv, y,
                   targeted, away, added=n_add)


def drop_points(model: nn.Module, points: torch.Tensor, y: torch.Tensor, *, n_drop: int,
                rounds: int | None = None, power: float = 1.0, targeted: bool = False,
                loss: str = "ce") -> PointAttackResult:
    """Point dropping by saliency (Zheng, Chen, Yuan, Li and Ren, "PointCloud saliency maps",
    ICCV 2019, eq. 3-5): dropping a point is approximated by moving it to the cloud's centre c
    (the coordinate-wise median), along the radius r_i = |x_i - c|, so its effect on the loss
    L is about -dL/dr_i * r_i; with the paper's rescaling r^power, the saliency is

        s_i = -(dL/dr_i) r_i^(1 + power),   dL/dr_i = grad_{x_i} L . (x_i - c) / r_i,

    and the `n_drop` points of highest saliency are dropped, in `rounds` rounds (default
    min(n_drop, 10)) with the gradients recomputed on the remaining points after each round.
    Every example loses exactly `n_drop` points (the measured constraint). The remaining points
    keep their order; the result's clouds have P - n_drop points.
    """
    x, y = _inputs(model, points, y, targeted)
    check_in_range(n_drop, "n_drop", 1, x.shape[1] - 1, integer=True)
    rounds = min(n_drop, 10) if rounds is None else check_in_range(rounds, "rounds", 1, n_drop,
                                                                   integer=True)
    check_nonnegative(power, "power")
    check_choice(loss, tuple(LOSSES), "loss")
    x0 = x
    with frozen(model):
        for r in range(rounds):
            m = n_drop // rounds + (r < n_drop % rounds)  # points dropped this round
            x = x.detach().requires_grad_(True)
            z = logits_of(model, x, y) if r == 0 else model(x)  # the label check syncs: once
            (g,) = torch.autograd.grad(LOSSES[loss](z, y, targeted).sum(), x)
            x = x.detach()
            radial = x - x.median(1, keepdim=True).values
            saliency = -(g * radial).sum(2) * radial.norm(dim=2) ** power  # = -dL/dr r^(1+power)
            keep = saliency.topk(x.shape[1] - m, dim=1, largest=False).indices.sort(1).values
            x = x.gather(1, keep[..., None].expand(-1, -1, 3))
    dropped = torch.full((len(x0),), float(n_drop), dtype=x0.dtype, device=x0.device)
    return _result("drop_points", f"{n_drop} points dropped", float(n_drop), model, x0, x, y,
                   targeted, dropped, dropped=n_drop)


def critical_points(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """PointNet's critical set (Qi et al., CVPR 2017, sec. 4.3, Theorem 2): the points whose
    feature attains the max-pool in at least one channel, as a mask (N, P). The pooled vector,
    hence the prediction, depends on these points alone: the cloud reduced to them is
    classified exactly as the whole. `model` must have ``features(points) -> (N, P, C)``
    whose max over points it pools (`robustlab.pointcloud_models.PointNet`).
    """
    check_model(model)
    points = plain(check_points(points))
    check_model_input(model, points, "points")
    if not callable(getattr(model, "features", None)):
        raise TypeError(f"model must have a features(points) -> (N, P, C) method, pooled by a max "
                        f"over points (a PointNet); {type(model).__name__} has none")
    with torch.no_grad(), eval_mode(model):
        h = model.features(points)
    winners = h.argmax(1)  # (N, C): the point attaining each channel's max
    mask = torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    return mask.scatter(1, winners, True)


def pointcloud_transfer(result: PointAttackResult, model: nn.Module, y: torch.Tensor) -> float:
    """Transfer rate of a point-cloud attack to another `model` (AdvPC's question, Hamdi et al.,
    ECCV 2020): among the examples `result` fooled whose original `model` classifies right
    (untargeted; all of its successes if targeted), the share whose adversarial cloud `model`
    misclassifies (classifies as the target); NaN when there is none."""
    if not isinstance(result, PointAttackResult):
        raise TypeError(f"result must be a PointAttackResult, got {type(result).__name__}")
    _, y = _inputs(model, result.original, y, result.targeted)
    counted = result.success & (True if result.targeted else correct(model, result.original, y))
    fooled = is_fooled(predict(model, result.adversarial).argmax(1), y, result.targeted)
    n = int(counted.sum())
    return float("nan") if n == 0 else int((fooled & counted).sum()) / n
