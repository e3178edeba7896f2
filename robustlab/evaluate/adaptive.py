"""Athalye et al.'s table in miniature: input-transformation defences under a naive attack, a
transfer attack and the adaptive attack (BPDA, with EOT for randomised transforms) that breaks them.

Here and not in `defences/` because it runs attacks and prints with `markdown_table`; the
transforms come from `robustlab.defences.transforms`, the wrappers from
`robustlab.attacks.adaptive`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_eps, check_positive
from .._model import check_attack_inputs, correct, eval_mode
from ..attacks import BPDA, EOT, pgd
from ..defences.transforms import Defended, Transform
from ..tables import Tabular, markdown_table
from .accuracy import check_adversarial

__all__ = ["TransformBreak", "break_transforms", "is_random"]


@dataclass
class TransformBreak(Tabular):
    """Accuracy of each defence (a row; ``names[0]`` is the undefended model) on clean inputs
    and under three attacks, as fractions of the N examples; ``adaptive_attack`` names the
    adaptive attack of each row ("BPDA" or "BPDA+EOT")."""

    names: list[str]
    clean: list[float]
    naive: list[float]
    transfer: list[float]
    adaptive: list[float]
    adaptive_attack: list[str]
    eps: float
    norm: str

    def table(self) -> str:
        rows = zip(self.names, self.clean, self.naive, self.transfer, self.adaptive,
                   self.adaptive_attack)
        headers = ["defence", "clean", f"PGD through it (eps={self.eps:g}, {self.norm})",
                   "PGD on the model, transferred", "adaptive PGD (worst of both)",
                   "adaptive attack"]
        return markdown_table(headers, [list(row) for row in rows],
                              decimals=[None, 3, 3, 3, 3, None])


def is_random(transform: Transform, x: torch.Tensor) -> bool:
    """Whether `transform` gives two different outputs on the same input (a randomised defence)."""
    with torch.no_grad():
        return not torch.equal(transform(x), transform(x))


def _hits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """Per example (N,), the fraction of `draws` passes that classify it right (0 or 1 for a
    deterministic model)."""
    return sum(correct(model, x, y).double() for _ in range(draws)) / draws


def break_transforms(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     defences: Mapping[str, Transform], *, eps: float, alpha: float | None = None,
                     steps: int = 20, norm: str = "linf", eot_samples: int = 16, draws: int = 8,
                     generator: torch.Generator | None = None) -> TransformBreak:
    """Each input transformation t of `defences`, deployed as ``model(t(x))``, attacked three ways.

    Athalye, Carlini and Wagner, "Obfuscated gradients give a false sense of security" (ICML
    2018), Table 1, in miniature. For every defence the accuracy of the deployed model on
    clean inputs and on the outputs of PGD (`robustlab.attacks.pgd`, `steps` steps of `alpha`
    in the (`eps`, `norm`) ball) run three ways:

    - naive: PGD on ``Defended(model, t)`` with the gradient autograd finds. A shattered
      gradient (``bit_depth``, ``jpeg``: zero almost everywhere) leaves PGD where its random
      start put it; a randomised t gives it one random draw per step.
    - transfer: PGD on the undefended model, its adversarial inputs then given to
      ``model(t(.))``.
    - adaptive: PGD on ``BPDA(model, t)`` (forward t, backward the identity; their section
      4.1), averaged over `eot_samples` draws with ``EOT`` when t is randomised (section 4.2,
      detected by `is_random`). An example counts as robust only if it survives both this and
      the naive attack: for a differentiable t (a median, TV minimisation) autograd's gradient
      is exact and may beat the identity's, and an evaluation keeps the stronger per example.

    The first row, "none", is the undefended model under PGD (all three columns): the
    adaptive attack brings a transformation that only obfuscates gradients down to about it.
    Accuracy is measured on the attacked inputs; for a randomised t it is the mean over
    `draws` passes. Everything runs in eval mode and the model is left as found.

    Arguments:
        model: the classifier (logits (N, K)); x must be on its device, with its dtype.
        x, y: images (N, C, H, W) in [0, 1] and labels (N,).
        defences: dict of name -> transform (e.g. ``partial(jpeg, quality=75)``); "none" is
            reserved for the undefended row.
        eps, alpha, steps, norm: the PGD attack; alpha defaults to eps / 4.
        eot_samples: draws per EOT gradient for a randomised transform.
        draws: passes averaged when measuring a randomised defence's accuracy.
        generator: the random starts of PGD (and nothing else; a randomised transform draws
            from its own generator).
    Returns a `TransformBreak`; print it for the table.
    """
    x, y, eps, norm = check_attack_inputs(model, x, y, eps=eps, norm=norm)
    if not isinstance(defences, Mapping) or not defences:
        raise ValueError(f"defences must be a non-empty dict of name -> transform, got {defences!r}")
    for name, transform in defences.items():
        if not callable(transform):
            raise TypeError(f"defences[{name!r}] must be callable, got {type(transform).__name__}")
    if "none" in defences:
        raise ValueError("defences may not use the name 'none': it is the undefended row")
    alpha = eps / 4 if alpha is None else check_eps(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    check_positive(eot_samples, "eot_samples", integer=True)
    check_positive(draws, "draws", integer=True)
    attack = dict(eps=eps, alpha=alpha, steps=steps, norm=norm, generator=generator)

    def run(target: nn.Module, who: str) -> torch.Tensor:
        return check_adversarial(x, pgd(target, x, y, **attack), who, eps, norm)

    with eval_mode(model):
        x_base = run(model, "PGD on the undefended model")
        base_clean = _hits(model, x, y, 1).mean().item()
        base_pgd = _hits(model, x_base, y, 1).mean().item()
        result = TransformBreak(["none"], [base_clean], [base_pgd], [base_pgd], [base_pgd],
                                ["PGD"], eps, norm)
        for name, transform in defences.items():
            defended = Defended(model, transform)
            random = is_random(transform, x[:16])
            n = draws if random else 1
            bpda = BPDA(model, transform)
            naive = _hits(defended, run(defended, f"naive PGD on {name!r}"), y, n)
            adaptive = _hits(defended, run(EOT(bpda, samples=eot_samples) if random else bpda,
                                           f"adaptive PGD on {name!r}"), y, n)
            result.names.append(name)
            result.clean.append(_hits(defended, x, y, n).mean().item())
            result.naive.append(naive.mean().item())
            result.transfer.append(_hits(defended, x_base, y, n).mean().item())
            # per example, the worse of the two gradients: the true one (exact for a
            # differentiable t such as a median) and the straight-through one
            result.adaptive.append(torch.minimum(naive, adaptive).mean().item())
            result.adaptive_attack.append("BPDA+EOT" if random else "BPDA")
    return result
