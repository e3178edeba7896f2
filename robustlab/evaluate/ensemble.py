"""The worst case over an ordered ensemble of attacks, AutoAttack style."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_eps, check_norm, check_positive
from .._model import check_attack_inputs, correct, eval_mode, model_device, predict
from ..attacks import pgd, square
from ..tables import Tabular, markdown_table, timing_table
from .accuracy import Attack, check_adversarial, check_callable, split_queries


def check_attacks(attacks, name: str = "attacks") -> dict[str, Attack]:
    if not isinstance(attacks, Mapping) or not attacks:
        raise ValueError(f"{name} must be a non-empty dict of name -> attack, got {attacks!r}")
    for key, fn in attacks.items():
        check_callable(fn, f"{name}[{key!r}]")
    return dict(attacks)


def sync(device: torch.device | None) -> None:
    """Wait for CUDA kernels, which run asynchronously: else a timer measures only the launch."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _targeted_top_k(eps: float, norm: str, steps: int, alpha: float, top_k: int,
                    generator: torch.Generator | None) -> Attack:
    """Targeted PGD on the margin towards each of the top-k other classes in turn."""

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
    """The ordered members of the `worst_case` ensemble, each ``attack(model, x, y)``.

    After AutoAttack (Croce and Hein, ICML 2020), with PGD standing in for APGD:
    "pgd-ce" (untargeted PGD on cross-entropy, random start), "pgd-dlr" (PGD on the
    scale-invariant difference-of-logits ratio), "pgd-targeted" (targeted PGD on the margin
    towards each of the `top_k` most likely wrong classes), and "square" (the score-based
    Square attack, `square_queries` queries; L-inf and L2 only). The PGD members return x_adv;
    "square", like every black-box attack, returns ``(x_adv, queries)``.

    Arguments:
        steps: PGD iterations; the step is 2.5 * eps / steps (a common rule of thumb;
            Madry et al. fixed the step).
        generator: seeds every random start and Square's sampling, so results repeat.
    """
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
        members["square"] = functools.partial(square, eps=eps, norm=norm,
                                              max_queries=square_queries, generator=generator)
    return members


@dataclass
class WorstCase(Tabular):
    """The result of `worst_case`: adversarial examples, the robust mask, a per-stage report."""

    x_adv: torch.Tensor
    robust: torch.Tensor
    clean_accuracy: float
    stages: list[dict] = field(default_factory=list)

    @property
    def robust_accuracy(self) -> float:
        return self.robust.float().mean().item()

    def table(self) -> str:
        rows = [("clean", self.clean_accuracy, "-")]
        rows += [(s["attack"], s["robust_accuracy"], s["broken"]) for s in self.stages]
        return markdown_table(["after", "robust accuracy", "newly broken"], rows,
                              decimals=[None, 3, None])

    def timings(self) -> str:
        """Wall-clock seconds of each stage (machine-dependent, unlike ``table()``)."""
        return timing_table([s["attack"] for s in self.stages], [s["seconds"] for s in self.stages])


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
    The model runs in eval mode; every submodule's mode is restored afterwards.

    Arguments:
        eps, norm: the threat model; every member's output is checked to lie in this ball.
        attacks: ordered dict of name -> ``attack(model, x, y)`` returning x_adv or, as
            black-box members do, ``(x_adv, queries)``; by default
            ``default_attacks(eps=eps, norm=norm, generator=generator)``.
        generator: seeds the default members.
    Returns a `WorstCase`: ``x_adv`` (the breaking example where one was found, else x),
    ``robust`` (N,) bool, ``clean_accuracy``, ``robust_accuracy`` and ``stages``, one dict per
    attack with the robust accuracy after it; ``.table()`` prints them.
    """
    x, y, eps, norm = check_attack_inputs(model, x, y, eps=eps, norm=norm, norms=("linf", "l2", "l1"))
    attacks = default_attacks(eps=eps, norm=norm, generator=generator) if attacks is None \
        else check_attacks(attacks)
    device = model_device(model) or x.device
    with eval_mode(model):
        robust = correct(model, x, y)
        clean = robust.float().mean().item()
        x_adv = x.clone()
        stages = []
        for name, attack in attacks.items():
            i = robust.nonzero()[:, 0]
            start = time.perf_counter()
            broken = torch.zeros(0, dtype=torch.bool, device=x.device)
            if len(i):
                xa, _ = split_queries(attack(model, x[i], y[i]))
                xa = check_adversarial(x[i], xa, f"attacks[{name!r}]", eps, norm)
                broken = ~correct(model, xa, y[i])
                x_adv[i[broken]] = xa[broken]
                robust[i[broken]] = False
            sync(device)
            stages.append({"attack": name, "robust_accuracy": robust.float().mean().item(),
                           "broken": int(broken.sum()), "seconds": time.perf_counter() - start})
    return WorstCase(x_adv, robust, clean, stages)


def budget_results(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                   eps_list, attack, members, norm: str = "linf") -> dict:
    """Clean, single-attack and worst-case accuracy of each model at each budget, as a nested
    dict ``{name: {eps: {"clean": .., "pgd": .., "worst": ..}}}`` (what
    `robustlab.widgets.defence_budgets` browses).

    `attack(model, x, y, eps=eps)` is the single attack (e.g. PGD) and `members(eps)` returns
    the ordered ensemble for `worst_case` at that budget (e.g. ``lambda e: default_attacks(
    eps=e, steps=20, generator=...)``; built anew per model and budget, so a seeded generator
    made inside it gives every model the same draws). At budget 0 all three are the clean
    accuracy, and no attack runs.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict of name -> model")
    check_callable(attack, "attack")
    check_callable(members, "members")
    eps_list = [check_eps(e, "eps_list") for e in eps_list]
    if not eps_list:
        raise ValueError("eps_list must hold at least one budget")
    out: dict = {}
    for name, model in models.items():
        with eval_mode(model):
            clean = correct(model, x, y).float().mean().item()
            out[name] = {}
            for eps in eps_list:
                if eps == 0:
                    out[name][eps] = {"clean": clean, "pgd": clean, "worst": clean}
                    continue
                xa, _ = split_queries(attack(model, x, y, eps=eps))
                xa = check_adversarial(x, xa, "attack", eps, norm)
                single = correct(model, xa, y).float().mean().item()
                worst = worst_case(model, x, y, eps=eps, norm=norm, attacks=members(eps))
                out[name][eps] = {"clean": clean, "pgd": single, "worst": worst.robust_accuracy}
    return out
