"""Distortion and query statistics of an attack's successful examples."""

from __future__ import annotations

import math

import torch

from ..norms import flat_norm


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
        queries: (N,) queries spent per example, the second item of what every black-box
            attack returns, ``(x_adv, queries)``.
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
