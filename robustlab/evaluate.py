"""Measuring attacks and robustness: robust-accuracy curves, an AutoAttack-style ensemble,
distortion and query statistics, and one comparison table of many attacks.

Everything here is a plain function over pixel-space batches ``(x, y)`` and returns a small
result object with a ``.table()`` (markdown text) so a lesson can print it as it is.

An attack given to these functions is a callable. `robust_accuracy` calls
``attack(model, x, y, eps=eps, **attack_kwargs)`` for each budget; `worst_case` and
`compare_attacks` call ``attack(model, x, y)`` (bind the budget with a lambda or
``functools.partial``); `compare_attacks` also accepts attacks that return
``(x_adv, queries)``, as black-box attacks do with ``return_queries=True``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import check_eps, check_norm, check_positive, model_device
from .attacks._base import check_attack_inputs, flat_norm
from .train import predict

__all__ = ["Comparison", "RobustCurve", "WorstCase", "compare_attacks", "default_attacks",
           "distortion_stats", "query_stats", "robust_accuracy", "worst_case"]

Attack = Callable[..., torch.Tensor]

# An attack's output may overshoot its ball by float rounding only.
BALL_RTOL, BALL_ATOL = 1e-5, 1e-6


def _check_callable(attack, name: str = "attack") -> None:
    if not callable(attack):
        raise TypeError(f"{name} must be callable, got {type(attack).__name__}")


def _check_attacks(attacks, name: str = "attacks") -> dict[str, Attack]:
    if not isinstance(attacks, Mapping) or not attacks:
        raise ValueError(f"{name} must be a non-empty dict of name -> attack, got {attacks!r}")
    for key, fn in attacks.items():
        _check_callable(fn, f"{name}[{key!r}]")
    return dict(attacks)


def _markdown(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; floats get 4 significant digits, NaN and None print as '-'."""
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    return predict(model, x, batch_size=batch_size).argmax(1) == y


def _sync(device: torch.device | None) -> None:
    # CUDA kernels run asynchronously: wait for them, or a timer measures only the launch
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_in_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, who: str) -> None:
    """An attack that leaves its ball would make robustness look worse than it is: refuse it."""
    if x_adv.shape != x.shape:
        raise ValueError(f"{who} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    if x_adv.min() < 0 or x_adv.max() > 1:
        raise ValueError(f"{who} returned points outside [0, 1]")
    dist = flat_norm(x_adv - x, norm).max().item()
    if dist > eps * (1 + BALL_RTOL) + BALL_ATOL:
        raise ValueError(f"{who} returned a point at {norm} distance {dist:.4g} > eps = {eps:.4g}")


# --------------------------------------------------------------------------- robust accuracy


@dataclass
class RobustCurve:
    """Robust accuracy of one attack at several budgets; ``robust[i]`` is the per-example mask."""

    eps: list[float]
    accuracy: list[float]
    robust: torch.Tensor
    norm: str = "linf"
    attack: str = "attack"

    def table(self) -> str:
        return _markdown(["eps", f"robust accuracy ({self.attack}, {self.norm})"],
                         list(zip(self.eps, self.accuracy)))

    def plot(self, ax=None, **plot_kwargs):
        """Robust accuracy against eps on `ax` (a new figure if None); returns the axes."""
        if ax is None:
            import matplotlib.pyplot as plt
            _, ax = plt.subplots(figsize=(4, 3))
        plot_kwargs.setdefault("label", self.attack)
        plot_kwargs.setdefault("marker", "o")
        ax.plot(self.eps, self.accuracy, **plot_kwargs)
        ax.set_xlabel(f"eps ({self.norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        return ax

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:
        return self.table()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *,
                    eps_list: Sequence[float], batch_size: int = 500, check_ball: bool = True,
                    **attack_kwargs) -> RobustCurve:
    """Robust accuracy of `model` on ``(x, y)`` under `attack` at each budget in `eps_list`.

    Madry et al., "Towards deep learning models resistant to adversarial attacks" (ICLR 2018):
    the fraction of examples that are classified correctly and still are after the attack,
    ``mean_i [f(x_i) = y_i and f(attack(x_i)) = y_i]``. At eps = 0 this is clean accuracy and
    no attack runs; for eps > 0 the attack runs only on the correctly classified examples
    (the others count as not robust anyway), in batches of `batch_size`.

    Arguments:
        attack: called as ``attack(model, x, y, eps=eps, **attack_kwargs)``; to make a step
            size follow eps, pass e.g. ``lambda m, x, y, eps: pgd(m, x, y, eps=eps,
            alpha=eps / 4, steps=20)``.
        eps_list: the budgets, each a finite number >= 0.
        check_ball: refuse an attack whose output leaves the ``attack_kwargs["norm"]`` ball
            (L-inf by default) or [0, 1], since that would understate robustness.
    Returns a `RobustCurve` with ``.eps``, ``.accuracy``, ``.robust`` (len(eps), N), ``.table()``
    and ``.plot(ax)``.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    _check_callable(attack)
    try:
        eps_list = list(eps_list)
    except TypeError:  # a bare number (or 0-d tensor) where a list was meant
        eps_list = []
    if not eps_list:
        raise ValueError("eps_list must be a non-empty list of budgets")
    eps_list = [check_eps(e, f"eps_list[{i}]") for i, e in enumerate(eps_list)]
    norm = check_norm(attack_kwargs.get("norm", "linf"), ("linf", "l2", "l1", "l0"))
    correct = _correct(model, x, y, batch_size)
    idx = correct.nonzero()[:, 0]
    rows = []
    for eps in eps_list:
        robust = correct.clone()
        if eps > 0:
            for chunk in idx.split(batch_size):
                x_adv = attack(model, x[chunk], y[chunk], eps=eps, **attack_kwargs)
                if check_ball:
                    _check_in_ball(x[chunk], x_adv, eps, norm, "attack")
                robust[chunk] = _correct(model, x_adv.detach(), y[chunk], batch_size)
        rows.append(robust)
    robust = torch.stack(rows)
    name = getattr(attack, "__name__", type(attack).__name__)
    return RobustCurve(eps_list, robust.float().mean(1).tolist(), robust.cpu(), norm, name)


# --------------------------------------------------------------------------- worst case


def _targeted_top_k(eps: float, norm: str, steps: int, alpha: float, top_k: int,
                    generator: torch.Generator | None) -> Attack:
    """Targeted PGD on the margin towards each of the top-k other classes in turn."""
    from .attacks import pgd

    def attack(model, x, y):
        z = predict(model, x)
        k = min(top_k, z.shape[1] - 1)
        targets = z.scatter(1, y[:, None], -torch.inf).topk(k, dim=1).indices
        x_adv, open_ = x.clone(), torch.ones(len(x), dtype=torch.bool, device=x.device)
        for j in range(k):
            i = open_.nonzero()[:, 0]
            if len(i) == 0:
                break
            xa = pgd(model, x[i], targets[i, j], eps=eps, alpha=alpha, steps=steps, norm=norm,
                     targeted=True, loss="margin", generator=generator)
            broken = predict(model, xa).argmax(1) != y[i]
            x_adv[i[broken]] = xa[broken]
            open_[i[broken]] = False
        return x_adv
    return attack


def default_attacks(*, eps: float, norm: str = "linf", steps: int = 50, top_k: int = 3,
                    square_queries: int = 5000,
                    generator: torch.Generator | None = None) -> dict[str, Attack]:
    """The ordered members of the `worst_case` ensemble, each ``attack(model, x, y) -> x_adv``.

    After AutoAttack (Croce and Hein, ICML 2020), with PGD standing in for APGD:
    "pgd-ce" (untargeted PGD on cross-entropy, random start), "pgd-dlr" (PGD on the
    scale-invariant difference-of-logits ratio), "pgd-targeted" (targeted PGD on the margin
    towards each of the `top_k` most likely wrong classes), and "square" (the score-based
    Square attack, `square_queries` queries; L-inf and L2 only).

    Arguments:
        steps: PGD iterations; the step is 2.5 * eps / steps (Madry et al.).
        generator: seeds every random start and Square's sampling, so results repeat.
    """
    from .attacks import pgd

    eps = check_eps(eps)
    norm = check_norm(norm, ("linf", "l2", "l1"))
    for value, name in ((steps, "steps"), (top_k, "top_k"), (square_queries, "square_queries")):
        check_positive(value, name, integer=True)
    alpha = 2.5 * eps / steps if eps > 0 else 1.0

    def pgd_ce(model, x, y):
        return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, generator=generator)

    def pgd_dlr(model, x, y):
        # DLR divides by z_pi1 - z_pi3, which needs three classes; the margin is its 2-class form
        loss = "dlr" if predict(model, x[:1]).shape[1] >= 3 else "margin"
        return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, loss=loss,
                   generator=generator)

    members = {"pgd-ce": pgd_ce, "pgd-dlr": pgd_dlr,
               "pgd-targeted": _targeted_top_k(eps, norm, steps, alpha, top_k, generator)}
    if norm in ("linf", "l2"):
        try:
            from .attacks.blackbox import square
        except ImportError as e:  # say so rather than evaluate silently with a weaker ensemble
            warnings.warn(f"worst_case runs without the Square attack ({e})", stacklevel=2)
        else:
            members["square"] = functools.partial(square, eps=eps, norm=norm,
                                                  max_queries=square_queries, generator=generator)
    return members


@dataclass
class WorstCase:
    """The result of `worst_case`: adversarial examples, the robust mask, a per-stage report."""

    x_adv: torch.Tensor
    robust: torch.Tensor
    clean_accuracy: float
    stages: list[dict] = field(default_factory=list)

    @property
    def robust_accuracy(self) -> float:
        return self.robust.float().mean().item()

    def table(self) -> str:
        rows = [("clean", self.clean_accuracy, "-", "-")]
        rows += [(s["attack"], s["robust_accuracy"], s["broken"], s["seconds"]) for s in self.stages]
        return _markdown(["after", "robust accuracy", "newly broken", "seconds"], rows)

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:
        return self.table()


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               norm: str = "linf", attacks: Mapping[str, Attack] | None = None,
               generator: torch.Generator | None = None) -> WorstCase:
    """Per-example worst case over an ordered ensemble of attacks, AutoAttack style.

    Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks" (ICML 2020). The attacks run in order; each later one runs only
    on the examples that are still robust (correct and not yet broken), and an example counts
    as broken by the first attack that makes the model misclassify it inside the ball. An
    example that any member breaks is therefore broken here too: the ensemble is never weaker
    than a member (exactly so for members whose result on an example does not depend on the
    rest of the batch or on random draws; with random starts, as strong in distribution).

    Arguments:
        eps, norm: the threat model; every member's output is checked to lie in this ball.
        attacks: ordered dict of name -> ``attack(model, x, y) -> x_adv`` (or ``(x_adv,
            queries)``); by default ``default_attacks(eps=eps, norm=norm, generator=generator)``.
        generator: seeds the default members.
    Returns a `WorstCase`: ``x_adv`` (the breaking example where one was found, else x),
    ``robust`` (N,) bool, ``clean_accuracy``, ``robust_accuracy`` and ``stages``, one dict per
    attack with the robust accuracy after it; ``.table()`` prints them.
    """
    x, y, eps, norm = check_attack_inputs(model, x, y, eps=eps, norm=norm, norms=("linf", "l2", "l1"))
    attacks = default_attacks(eps=eps, norm=norm, generator=generator) if attacks is None \
        else _check_attacks(attacks)
    device = model_device(model) or x.device
    robust = _correct(model, x, y, 512)
    clean = robust.float().mean().item()
    x_adv = x.clone()
    stages = []
    for name, attack in attacks.items():
        i = robust.nonzero()[:, 0]
        start = time.perf_counter()
        broken = torch.zeros(0, dtype=torch.bool, device=x.device)
        if len(i):
            xa = attack(model, x[i], y[i])
            xa = (xa[0] if isinstance(xa, tuple) else xa).detach()  # black-box: (x_adv, queries)
            _check_in_ball(x[i], xa, eps, norm, f"attacks[{name!r}]")
            broken = ~_correct(model, xa, y[i], 512)
            x_adv[i[broken]] = xa[broken]
            robust[i[broken]] = False
        _sync(device)
        stages.append({"attack": name, "robust_accuracy": robust.float().mean().item(),
                       "broken": int(broken.sum()), "seconds": time.perf_counter() - start})
    return WorstCase(x_adv, robust, clean, stages)


# --------------------------------------------------------------------------- statistics


def _check_success(success, n: int) -> torch.Tensor:
    if not isinstance(success, torch.Tensor) or success.dtype != torch.bool:
        raise TypeError(f"success must be a bool tensor, got "
                        f"{getattr(success, 'dtype', type(success).__name__)}")
    if success.shape != (n,):
        raise ValueError(f"success must have shape ({n},), got {tuple(success.shape)}")
    return success


def _mean_median(v: torch.Tensor) -> tuple[float, float]:
    if v.numel() == 0:
        return math.nan, math.nan
    v = v.double()
    # quantile interpolates: the median of [1, 4] is 2.5 (torch.median would say 1)
    return v.mean().item(), v.quantile(0.5).item()


def distortion_stats(x: torch.Tensor, x_adv: torch.Tensor, success: torch.Tensor, *,
                     l0_tol: float = 1e-6) -> dict[str, float]:
    """Success rate and L0/L1/L2/L-inf size of the successful perturbations x_adv - x.

    The statistics of minimum-norm attacks (Carlini and Wagner, IEEE S&P 2017, Tables IV-VI;
    Moosavi-Dezfooli et al., DeepFool, CVPR 2016): how far an attack had to go, over the
    examples it broke. L0 counts changed pixels (a pixel changed in any channel counts once,
    as in C&W and the one-pixel attack), ignoring changes below `l0_tol` (float round-off of
    attacks that work in another space, such as C&W's tanh).

    Arguments:
        x, x_adv: (N, C, H, W) originals and attacked images.
        success: (N,) bool, which examples the attack broke.
    Returns a dict: ``success_rate``, ``n_success`` and ``{l0,l1,l2,linf}_{mean,median}``
    (NaN when nothing succeeded).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor):
        raise TypeError("x and x_adv must be tensors")
    if x.shape != x_adv.shape or x.dim() != 4:
        raise ValueError(f"x and x_adv must have the same shape (N, C, H, W), got "
                         f"{tuple(x.shape)} and {tuple(x_adv.shape)}")
    success = _check_success(success, len(x)).to(x.device)
    delta = (x_adv - x)[success].double()
    out = {"success_rate": success.float().mean().item() if len(x) else math.nan,
           "n_success": int(success.sum())}
    changed = (delta.abs() > l0_tol).any(1).flatten(1).sum(1)
    for norm, v in [("l0", changed), ("l1", flat_norm(delta, "l1")), ("l2", flat_norm(delta, "l2")),
                    ("linf", flat_norm(delta, "linf"))]:
        out[f"{norm}_mean"], out[f"{norm}_median"] = _mean_median(v)
    return out


def query_stats(queries: torch.Tensor, success: torch.Tensor) -> dict[str, float]:
    """Success rate and the number of model queries the successful examples took.

    The statistics of query-based black-box attacks (Andriushchenko et al., Square attack,
    ECCV 2020, Table 1; Chen et al., HopSkipJump, IEEE S&P 2020): mean and median queries
    over the examples broken, since failures just exhaust the budget.

    Arguments:
        queries: (N,) queries spent per example (as ``return_queries=True`` gives).
        success: (N,) bool, which examples the attack broke.
    Returns a dict: ``success_rate``, ``n_success``, ``queries_mean``, ``queries_median``.
    """
    queries = torch.as_tensor(queries)
    if queries.dim() != 1 or queries.is_complex() or queries.dtype == torch.bool:
        raise ValueError(f"queries must be a 1-D tensor of counts, got shape {tuple(queries.shape)} "
                         f"and dtype {queries.dtype}")
    if (queries < 0).any():
        raise ValueError("queries must be >= 0")
    success = _check_success(success, len(queries)).to(queries.device)
    mean, median = _mean_median(queries[success])
    return {"success_rate": success.float().mean().item() if len(queries) else math.nan,
            "n_success": int(success.sum()), "queries_mean": mean, "queries_median": median}


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """One row per attack: success rate, mean distortions, seconds, mean queries."""

    rows: list[dict]

    COLUMNS = (("attack", "attack"), ("success_rate", "success rate"), ("l0_mean", "mean L0"),
               ("l2_mean", "mean L2"), ("linf_mean", "mean Linf"), ("seconds", "seconds"),
               ("queries_mean", "mean queries"))

    def table(self) -> str:
        return _markdown([title for _, title in self.COLUMNS],
                         [[row.get(key) for key, _ in self.COLUMNS] for row in self.rows])

    def __str__(self) -> str:
        return self.table()

    def _repr_markdown_(self) -> str:
        return self.table()


def compare_attacks(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    attacks: Mapping[str, Attack], *, targeted: bool = False) -> Comparison:
    """Run several attacks on the same examples and put the results in one table.

    The comparison of Carlini and Wagner (IEEE S&P 2017, Table IV) and of the tutorial's
    attack chapter: for each attack, the success rate over the examples the model classifies
    correctly (the only ones an untargeted attack can break), the mean L0, L2 and L-inf
    distortion of its successful examples (`distortion_stats`), wall-clock seconds and, for
    attacks that return ``(x_adv, queries)``, the mean queries of successful examples.

    Arguments:
        attacks: dict of name -> ``attack(model, x, y)`` returning x_adv or (x_adv, queries).
        targeted: `y` holds target classes; success means reaching them, over all examples.
    Returns a `Comparison` with ``.rows`` (dicts) and ``.table()``.
    """
    x, y, _, _ = check_attack_inputs(model, x, y)
    attacks = _check_attacks(attacks)
    device = model_device(model) or x.device
    if not targeted:  # a misclassified example is "broken" before any attack: leave it out
        keep = _correct(model, x, y, 512)
        if not keep.any():
            raise ValueError("the model misclassifies every example of x: nothing to attack")
        x, y = x[keep], y[keep]
    rows = []
    for name, attack in attacks.items():
        _sync(device)
        start = time.perf_counter()
        out = attack(model, x, y)
        _sync(device)
        seconds = time.perf_counter() - start
        queries = None
        if isinstance(out, tuple):
            out, queries = out
        pred = predict(model, out.detach()).argmax(1)
        success = pred == y if targeted else pred != y
        row = {"attack": name, **distortion_stats(x, out.detach(), success), "seconds": seconds}
        if queries is not None:
            row.update(query_stats(torch.as_tensor(queries).to(success.device), success))
        rows.append(row)
    return Comparison(rows)
