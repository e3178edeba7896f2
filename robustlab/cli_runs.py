"""The reports of ``robustlab evaluate``, ``certify`` and ``verify``: one `Report` each, printed
as a markdown table and written, with the same numbers at full precision, as JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import verify as verifiers
from .cli_inputs import UsageError
from .defences.smoothing import certified_accuracy
from .evaluate import PRESETS, robust_accuracy
from .stats import clever
from .stats.clever import MIN_BATCHES
from .tables import markdown_table


@dataclass
class Report:
    """A table of results (`headers`, `rows`) and what produced them (`about`)."""

    about: dict
    headers: list[str]
    rows: list[list] = field(default_factory=list)

    def table(self) -> str:
        """The rows as markdown, accuracies with three decimals."""
        decimals = [None if h in ("attack", "eps", "radius", "examples") else 3 for h in self.headers]
        return markdown_table(self.headers, self.rows, decimals=decimals)

    def as_dict(self) -> dict:
        """The report as JSON-ready data: `about` and one object per row, keyed by header."""
        return {**self.about, "rows": [dict(zip(self.headers, row)) for row in self.rows]}


def write_json(report: Report, path: str) -> None:
    """Write `report` to `path` atomically: a temporary file beside it, then os.replace."""
    folder = Path(os.path.abspath(path)).parent
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".robustlab-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
            f.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _attack_kwargs(attack: str, norm: str, seed: int, device: torch.device) -> dict:
    """The keyword arguments of a preset: the norm, and a seeded generator where it draws."""
    kwargs = {"norm": norm}
    if attack == "pgd":  # a random start: seeded, so that a run can be repeated
        kwargs["generator"] = torch.Generator(device=device).manual_seed(seed)
    return kwargs


def evaluate_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks: Sequence[str],
                    eps_list: Sequence[float], norm: str, seed: int, about: dict) -> Report:
    """Clean accuracy, then robust accuracy of `model` on (x, y) under each attack at each eps."""
    report = Report({**about, "norm": norm, "seed": seed}, ["attack", "eps", "accuracy"])
    clean = robust_accuracy(model, x, y, PRESETS["fgsm"], eps_list=[0.0], norm=norm)
    report.rows.append(["none (clean)", 0.0, clean.accuracy[0]])
    for attack in attacks:
        curve = robust_accuracy(model, x, y, PRESETS[attack], eps_list=eps_list,
                                **_attack_kwargs(attack, norm, seed, x.device))
        report.rows += [[attack, float(e), a] for e, a in zip(curve.eps, curve.accuracy)]
    return report


def certify_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, n0: int,
                   n: int, alpha: float, radii: Sequence[float], seed: int,
                   about: dict) -> Report:
    """Certified accuracy of the Gaussian-smoothed `model` at each L2 radius."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    result = certified_accuracy(model, x, y, sigma=sigma, radii=list(radii), n0=n0, n=n,
                                alpha=alpha, generator=generator)
    report = Report({**about, "sigma": sigma, "n0": n0, "samples": n, "alpha": alpha,
                     "seed": seed, "abstained": result.abstained},
                    ["radius", "certified accuracy"])
    report.rows += [[float(r), a] for r, a in zip(result.radii, result.accuracy)]
    return report


def clever_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, radius: float,
                  n_batches: int, batch_size: int, seed: int, about: dict) -> Report:
    """CLEVER scores (Weng et al. 2018) of `model` at each example: an estimate of the smallest
    change that alters the prediction, not a bound; with the mean and median over examples."""
    if n_batches < MIN_BATCHES:
        raise UsageError("--batches", f"a reverse Weibull fit needs at least {MIN_BATCHES} batch "
                                      f"maxima, got {n_batches}")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    result = clever(model, x, norm=norm, radius=radius, n_batches=n_batches,
                    batch_size=batch_size, generator=generator)
    scores = result.score.double()
    correct = (result.prediction.to(y.device) == y).cpu()
    report = Report({**about, "norm": norm, "radius": radius, "n_batches": n_batches,
                     "batch_size": batch_size, "seed": seed,
                     "fallbacks": int(result.fallback.sum())},
                    ["examples", "mean CLEVER score", "median CLEVER score"])
    for name, keep in (("all", torch.ones_like(correct)), ("correctly classified", correct)):
        chosen = scores[keep]
        if len(chosen):
            report.rows.append([name, chosen.mean().item(), chosen.median().item()])
    return report


def check_readable(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse a model that the verifiers cannot read as a chain of layers."""
    try:
        verifiers.read_network(model, x.shape[1:], like=x)
    except ValueError as err:
        raise UsageError("--model", "verify reads a zoo model or another chain of standard "
                         "layers, not a TorchScript or exported graph: " + str(err)) from None


def _bound_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                    method: str) -> float:
    """The fraction of examples whose margins z_y - z_j have lower bounds > 0 over the ball."""
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    spec = verifiers.margin_spec(y, k)
    bound = verifiers.interval if method == "interval" else verifiers.crown
    lower = bound(model, x, eps=eps, norm=norm, C=spec).lower
    return (lower > 0).all(dim=1).double().mean().item()


def _milp_fractions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                    time_limit: float) -> list[float]:
    """The fractions of examples that MILP verifies, falsifies, and leaves unknown."""
    verdicts = verifiers.milp(model, x, y, eps=eps, norm=norm, time_limit=time_limit)
    statuses = [v.status for v in verdicts]
    return [statuses.count(s) / len(statuses) for s in ("verified", "falsified", "unknown")]


def verify_report(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_list: Sequence[float],
                  norm: str, method: str, time_limit: float, about: dict) -> Report:
    """Verified accuracy at each eps: from interval or CROWN bounds, or MILP verdicts."""
    check_readable(model, x)
    if method == "milp":
        report = Report({**about, "norm": norm, "method": method, "time_limit": time_limit},
                        ["eps", "verified accuracy", "falsified", "unknown"])
        report.rows += [[float(e), *_milp_fractions(model, x, y, e, norm, time_limit)]
                        for e in eps_list]
        return report
    report = Report({**about, "norm": norm, "method": method}, ["eps", "verified accuracy"])
    report.rows += [[float(e), _bound_accuracy(model, x, y, e, norm, method)] for e in eps_list]
    return report
