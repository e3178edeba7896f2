"""Anytime reachability by Lipschitz optimisation (DeepGO, Ruan, Huang and Kwiatkowska 2018): the
min (or max) of an output over a box of a few input features, bracketed by a lower and an upper
bound that close as the search goes on and can be read whenever it is stopped.

The search is sequential by design, and so is its cost on a GPU: each Piyavskii-Shubert step
picks the next point from the values of the points before it, so every evaluation reads its
value back to the host (one sync per evaluation, the only one that grows with the iterations;
tests/attacks/test_host_syncs_blackbox.py holds it to exactly that)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_eps, check_images, check_nonnegative, check_positive
from .._model import check_model, check_model_input, eval_mode, plain
from .._random import draw_device
from .network import Affine, MaxPool
from .reach import propagate
from .rounding import as_float64, read_exact

MAX_FEATURES = 4  # the nested search costs (points per level) ** features evaluations


@dataclass(frozen=True)
class AnytimeBounds:
    """``lower <= min f <= upper`` over the box (or the max, with maximize=True), and how the
    bracket closed.

    Arguments:
        lower, upper: the final bounds; upper (lower, when maximising) is attained at `point`.
        point: (d,) the best point found, in the coordinates of the search.
        history: (T + 1, 3) float64 rows (lower, upper, evaluations), row 0 before the first
            iteration: the bracket never widens from one row to the next.
        lipschitz: (d,) the constant of each coordinate that the search used.
        sound: True when those constants are proven bounds, so `lower` is a proof; False for
            an estimate or constants given by the caller.
        input: for `deepgo`, the input image (1, C, H, W) at `point`; else None.
    """

    lower: float
    upper: float
    point: torch.Tensor
    history: torch.Tensor
    lipschitz: torch.Tensor
    sound: bool
    input: torch.Tensor | None = None

    @property
    def gap(self) -> float:
        return self.upper - self.lower

    @property
    def evaluations(self) -> int:
        return int(self.history[-1, 2])


class _Leaf:
    """A point with every coordinate fixed: its value, exact."""

    gap = 0.0

    def __init__(self, search, point: tuple):
        self.point, self.lower = point, search.evaluate(point)
        self.upper = self.lower

    def step(self) -> bool:
        return False


class _Node:
    """The 1-D Piyavskii-Shubert search over coordinate len(prefix), the earlier coordinates
    fixed at `prefix`; each sample point holds the search over the later coordinates (or a leaf).

    g(t) = min over the later coordinates is K-Lipschitz in t when f is, K = sup |df/dt|, so
    g >= l_i - K |t - t_i| around each sample t_i whose inner lower bound is l_i: between two
    neighbours the lower envelope is the higher of two cones, whose minimum is
    max((l_a + l_b - K h) / 2, max(l_a, l_b) - K h) at the point where they cross."""

    def __init__(self, search, prefix: tuple):
        level = len(prefix)
        self.search, self.prefix, self.k = search, prefix, search.lipschitz[level]
        a, b = search.lower[level], search.upper[level]
        self.ts = [a] if a == b else [a, b]
        self.kids = [search.child(prefix + (t,)) for t in self.ts]
        self.lower = -math.inf
        self._update()

    def _envelope(self) -> list[float]:
        """The minimum of the lower envelope on each interval between neighbouring samples."""
        out = []
        for j in range(len(self.ts) - 1):
            la, lb, h = self.kids[j].lower, self.kids[j + 1].lower, self.ts[j + 1] - self.ts[j]
            out.append(max((la + lb - self.k * h) / 2, max(la, lb) - self.k * h))
        return out

    def _update(self):
        best = min(self.kids, key=lambda kid: kid.upper)
        self.upper, self.point = best.upper, best.point
        bound = min(self._envelope()) if len(self.ts) > 1 else self.kids[0].lower
        # each bound is valid, so their running max is too: the bracket never widens
        self.lower = min(max(self.lower, bound), self.upper)
        self.gap = self.upper - self.lower

    def step(self) -> bool:
        """One refinement where the envelope is lowest: sample the cones' crossing, or refine
        an endpoint's inner search when its gap exceeds what sampling could gain (K h / 2).
        False when nothing is left to do here (exact, or no float between the samples)."""
        if len(self.ts) == 1:
            done = self.kids[0].step()
        else:
            z = self._envelope()
            j = min(range(len(z)), key=z.__getitem__)
            a, b = self.kids[j], self.kids[j + 1]
            t0, t1 = self.ts[j], self.ts[j + 1]
            inner = a if a.gap >= b.gap else b
            if self.k > 0:
                t = min(max((t0 + t1) / 2 + (a.lower - b.lower) / (2 * self.k), t0), t1)
            if inner.gap > 0 and (self.k == 0 or inner.gap > self.k * (t1 - t0) / 2 or not t0 < t < t1):
                done = inner.step()
            elif self.k > 0 and t0 < t < t1:
                self.ts.insert(j + 1, t)
                self.kids.insert(j + 1, self.search.child(self.prefix + (t,)))
                done = True
            else:
                done = False
        self._update()
        return done


class _Search:
    def __init__(self, f, lower, upper, lipschitz):
        self.f, self.lower, self.upper, self.lipschitz = f, lower, upper, lipschitz
        self.evaluations = 0

    def evaluate(self, point: tuple) -> float:
        self.evaluations += 1
        # the search is sequential by nature: each point depends on the values before it
        return float(self.f(torch.tensor([point], dtype=torch.float64)).reshape(()))

    def child(self, prefix: tuple):
        return _Leaf(self, prefix) if len(prefix) == len(self.lower) else _Node(self, prefix)


def _check_limits(lower, upper, lipschitz) -> tuple[list, list, list]:
    lower, upper = [float(v) for v in lower], [float(v) for v in upper]
    if not lower or len(lower) != len(upper):
        raise ValueError(f"lower and upper must be non-empty and of one length, got {len(lower)} "
                         f"and {len(upper)}")
    if not all(math.isfinite(a) and math.isfinite(b) and a <= b for a, b in zip(lower, upper)):
        raise ValueError(f"lower and upper must be finite with lower <= upper, got {lower}, {upper}")
    ks = [lipschitz] * len(lower) if isinstance(lipschitz, (int, float)) else list(lipschitz)
    if len(ks) != len(lower):
        raise ValueError(f"lipschitz must be one number or one per coordinate ({len(lower)}), "
                         f"got {len(ks)}")
    return lower, upper, [check_nonnegative(float(k), "lipschitz") for k in ks]


def lipschitz_minimise(f: Callable[[torch.Tensor], torch.Tensor], lower: Sequence[float],
                       upper: Sequence[float], *, lipschitz: float | Sequence[float],
                       iterations: int = 500, tol: float = 1e-4, sound: bool = False) -> AnytimeBounds:
    """The minimum of f over the box [lower, upper] in R^d by nested 1-D Lipschitz optimisation.

    Ruan, Huang and Kwiatkowska, "Reachability analysis of deep neural networks with provable
    guarantees" (IJCAI 2018): min_x f(x) = min_{x1} ... min_{xd} f(x1, ..., xd), each
    level a Piyavskii-Shubert search (Piyavskii 1972, Shubert 1972) on the function of one
    coordinate that the levels below it define, with lower bound min_t max_i (l_i - K |t - t_i|)
    and upper bound the least value sampled. Each iteration refines once where the bound is
    lowest; the bracket is valid after every iteration (anytime) and converges when the
    constants are valid: |f(x) - f(x')| <= K_i |x_i - x'_i| when only coordinate i changes.

    Arguments:
        f: maps points (B, d) float64 to values (B,).
        lower, upper: the box, d numbers each.
        lipschitz: K_i, one number or one per coordinate. Too small a K makes `lower` wrong.
        iterations: most refinements; tol: stop once upper - lower <= tol.
        sound: record whether the caller proved the constants (AnytimeBounds.sound).
    """
    lower, upper, ks = _check_limits(lower, upper, lipschitz)
    check_positive(iterations, "iterations", integer=True)
    check_nonnegative(tol, "tol")
    search = _Search(f, lower, upper, ks)
    root = search.child(())
    history = [(root.lower, root.upper, search.evaluations)]
    for _ in range(iterations):
        if root.gap <= tol or not root.step():
            break
        history.append((root.lower, root.upper, search.evaluations))
    return AnytimeBounds(root.lower, root.upper, torch.tensor(root.point, dtype=torch.float64),
                         torch.tensor(history, dtype=torch.float64),
                         torch.tensor(ks, dtype=torch.float64), bool(sound))


def lipschitz_bound(net, lower: torch.Tensor, upper: torch.Tensor, features: list[int],
                    c: torch.Tensor) -> torch.Tensor:
    """Proven constants K_i >= sup |d (c . f) / d x_i| over the box [lower, upper] (1, *shape),
    one per feature: |c|^T |W_L| D_{L-1} ... D_1 |W_1| e_i, where D_k keeps the ReLUs that
    the box's interval bounds do not prove inactive (their derivative lies in [0, 1]) and a max
    pool passes the largest entry of each window (its derivative picks one of them)."""
    pre, _ = propagate(net, lower, upper)
    v = torch.zeros(len(features), lower[0].numel(), dtype=lower.dtype, device=lower.device)
    v[torch.arange(len(features)), torch.tensor(features)] = 1
    v, k = v.view(len(features), *lower.shape[1:]), 0
    for layer in net.layers:
        if isinstance(layer, Affine):
            v = layer.linear_abs(v)
        elif isinstance(layer, MaxPool):
            v, k = layer(v), k + 1
        else:
            v, k = v * (pre[k].upper > 0), k + 1
    return v @ c.abs()


def deepgo(model: nn.Module, x: torch.Tensor, *, eps: float, features: Sequence[int],
           output: int | torch.Tensor, maximize: bool = False, lipschitz="bound",
           safety: float = 2.0, samples: int = 256, iterations: int = 500, tol: float = 1e-4,
           generator: torch.Generator | None = None) -> AnytimeBounds:
    """Anytime bounds on the min (or max) of one output of `model` when a few pixels of x move.

    Ruan, Huang and Kwiatkowska (IJCAI 2018): the pixels `features` (flat indices into one
    image) range over [max(x_i - eps, 0), min(x_i + eps, 1)], the rest stay as in x, and the
    output ``c . logits`` (c = e_output, or a given vector such as e_y - e_j for a margin) is
    minimised by `lipschitz_minimise`, nested over the features. The model runs in float64 in
    eval mode on a copy (left as found).

    Lipschitz constants, per feature:
        "bound" (default): proven, `lipschitz_bound` (|W| products with the box's interval
            bounds removing inactive ReLUs); then `lower` is a proof.
        "estimate": `safety` times the largest |d output / d x_i| over `samples` uniform points
            of the box (`generator` draws them): often much smaller, so faster, but not a
            proof; the result says sound=False.
        a number or one number per feature: used as given (sound=False).

    Arguments:
        x: one image (1, C, H, W) in [0, 1]; eps >= 0; features: 1 to 4 distinct flat indices.
        output: a class index, or c (K,) for c . logits. maximize: bound the max instead.
        iterations, tol: when to stop (see `lipschitz_minimise`).
    """
    check_model(model)
    x = plain(check_images(x))
    check_model_input(model, x)
    if len(x) != 1:
        raise ValueError(f"x must hold one image (1, C, H, W), got {len(x)}")
    eps, size = check_eps(eps), x[0].numel()
    feats = list(features) if isinstance(features, Sequence) else None
    if (not feats or len(feats) > MAX_FEATURES or len(set(feats)) != len(feats)
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in feats)):
        raise ValueError(f"features must be 1 to {MAX_FEATURES} distinct ints in [0, {size}) (the "
                         f"nested search costs exponentially more per feature), got {features!r}")
    net, _ = read_exact(model, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1))  # what runs, or an error
    net = as_float64(net)
    model64 = copy.deepcopy(model).to(torch.float64).eval()
    x64 = x.double()
    k_out = net.out_shape[0]
    if isinstance(output, torch.Tensor):
        if output.shape != (k_out,) or not torch.isfinite(output).all():
            raise ValueError(f"output must be a class index or a finite vector of shape ({k_out},), "
                             f"got shape {tuple(output.shape)}")
        c = output.to(x64)
    elif isinstance(output, int) and not isinstance(output, bool) and 0 <= output < k_out:
        c = torch.eye(k_out, dtype=torch.float64, device=x.device)[output]
    else:
        raise ValueError(f"output must be a class index in [0, {k_out}) or a tensor ({k_out},), "
                         f"got {output!r}")
    c = -c if maximize else c
    idx = torch.tensor(feats, device=x.device)
    flat = x64.flatten()
    lo, up = (flat[idx] - eps).clamp(0, 1), (flat[idx] + eps).clamp(0, 1)

    def images(points: torch.Tensor) -> torch.Tensor:
        out = flat.repeat(len(points), 1)
        out[:, idx] = points.to(out)
        return out.view(len(points), *x.shape[1:])

    def f(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model64(images(points)) @ c

    if isinstance(lipschitz, str):
        check_choice(lipschitz, ("bound", "estimate"), "lipschitz")
        if lipschitz == "bound":
            box_lo, box_up = images(lo[None]), images(up[None])
            with torch.no_grad():
                ks = lipschitz_bound(net, box_lo, box_up, feats, c)
        else:
            check_positive(samples, "samples", integer=True)
            check_positive(safety, "safety")
            u = torch.rand(samples, len(feats), generator=generator, dtype=torch.float64,
                           device=draw_device(generator, x.device)).to(x.device)
            pts = (lo + (up - lo) * u).requires_grad_(True)
            with torch.enable_grad(), eval_mode(model64):
                (g,) = torch.autograd.grad((model64(images(pts)) @ c).sum(), pts)
            ks = safety * g.abs().amax(0)
        ks = ks.tolist()
    else:
        ks = lipschitz
    res = lipschitz_minimise(f, lo.tolist(), up.tolist(), lipschitz=ks, iterations=iterations,
                             tol=tol, sound=lipschitz == "bound")
    best = images(res.point[None].to(x.device)).to(x.dtype)
    if not maximize:
        return AnytimeBounds(res.lower, res.upper, res.point, res.history, res.lipschitz, res.sound, best)
    hist = res.history.clone()
    hist[:, :2] = -res.history[:, [1, 0]]
    return AnytimeBounds(-res.upper, -res.lower, res.point, hist, res.lipschitz, res.sound, best)
