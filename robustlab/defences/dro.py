"""Distributionally robust training objectives: TRADES, VAT and WRM, each an `Objective` for
`robustlab.train.fit` (a factory of keyword-only hyperparameters, checked at once, returning
``objective(model, x, y) -> (loss, logs)``).

They replace the worst case over an eps-ball of the label loss (adversarial training,
`robustlab.defences.objectives`) by a worst case over nearby *distributions*: TRADES and VAT
penalise the divergence between the predictions at x and at a perturbed x' (no label needed at
x'), WRM the loss under a Wasserstein-penalised shift of the data. The inner maximisation keeps
the rules of `robustlab.defences.objectives` (input gradients only, ``attack_mode``, the model
left as found) through the same machinery, `robustlab.defences._inner`.

| factory | paper | loss |
| --- | --- | --- |
| `trades` | Zhang et al. 2019 | CE(f(x), y) + beta KL(f(x) || f(x*)), x* from PGD on the KL |
| `vat` | Miyato et al. 2018 | CE on labelled + weight KL(p(x) || p(x + r_adv)) on all |
| `wrm` | Sinha et al. 2018 | CE(x*), x* = argmax CE(x') - gamma ||x' - x||_2^2 |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_eps, check_generator, check_logits, check_nonnegative, check_positive
from ..losses import ce_loss, kl_loss
from ..norms import clip_box, finite_direction, flat_norm, per_example, project
from ._inner import (
    ObjectiveFn,
    _acc,
    _ascend,
    _ce,
    _check_inner_pgd,
    _check_mode,
    _gaussian,
    _inner,
    _input_grad,
    _running_stats_frozen,
)

__all__ = ["trades", "vat", "vat_direction", "wrm", "wrm_surrogate"]


def trades(*, eps: float, alpha: float, steps: int, beta: float = 6.0, norm: str = "linf",
           attack_mode: str = "eval", generator: torch.Generator | None = None) -> ObjectiveFn:
    """TRADES, Zhang et al., "Theoretically principled trade-off between robustness and accuracy"
    (ICML 2019):

        CE(f(x), y) + beta * max_{x' in B(x, eps)} KL(f(x) || f(x'))

    The inner max is PGD on the KL (f(x) held fixed) from ``x + 0.001 N(0, I)``, as in the
    reference code, which runs it with the model in eval mode (``attack_mode="eval"``). The
    outer loss differentiates through both f(x) and f(x'). ``beta=6`` (1/lambda) is the paper's
    choice; its MNIST setting is eps=0.1, alpha=0.01, steps=40, CIFAR-10 eps=0.031,
    alpha=0.007, steps=10. ``beta=0`` is plain cross-entropy. Logs: ``clean_loss``,
    ``clean_acc``, ``kl``, ``adv_acc``.
    """
    eps, norm = _check_inner_pgd(eps, alpha, steps, norm)
    beta = check_nonnegative(beta, "beta")
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x_adv = _trades_point(model, x, eps=eps, alpha=alpha, steps=steps, norm=norm,
                              attack_mode=attack_mode, generator=generator)
        return _trades_loss(model, x.detach(), x_adv, y, beta)

    return objective


def _trades_point(model: nn.Module, x: torch.Tensor, *, eps: float, alpha: float, steps: int,
                  norm: str, attack_mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """TRADES' inner maximiser: PGD on KL(f(x) || f(x')) (f(x) held fixed) from
    ``x + 0.001 N(0, I)``; the adversarial input."""
    x = x.detach()
    delta = clip_box(x, project(0.001 * _gaussian(x, generator), eps, norm))
    with _inner(model, attack_mode):
        with torch.no_grad():
            z_ref = model(x)
        return _ascend(model, x, delta, lambda z: kl_loss(z, z_ref), eps=eps, alpha=alpha,
                       steps=steps, norm=norm)


def _trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                 beta: float) -> tuple[torch.Tensor, dict]:
    """TRADES' outer loss CE(f(x), y) + beta KL(f(x) || f(x_adv)) (two training forward passes,
    differentiated through both) and its logs."""
    clean_loss, z = _ce(model, x, y)
    z_adv = check_logits(model(x_adv), len(x))
    kl = kl_loss(z_adv, z).mean()
    loss = clean_loss + beta * kl
    return loss, {"clean_loss": clean_loss.detach(), "clean_acc": _acc(z, y),
                  "kl": kl.detach(), "adv_acc": _acc(z_adv, y)}


def vat_direction(model: nn.Module, x: torch.Tensor, *, xi: float = 1e-6,
                  power_iterations: int = 1, logits: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The virtual adversarial direction of Miyato et al. (TPAMI 2018), unit L2 norm per example.

    Power iteration on the Hessian H of d -> KL(p(x) || p(x + d)) at d = 0: from a random unit
    d, repeat ``d <- normalise(grad_d KL(p(x) || p(x + xi d)))`` (= H d up to O(xi)), so d
    tends to H's dominant eigenvector. `logits` are the model's logits at `x` (computed here
    when None). Runs the model as found; call it inside the caller's chosen mode.
    """
    check_positive(xi, "xi")
    check_positive(power_iterations, "power_iterations", integer=True)
    x = x.detach()
    if logits is None:
        with torch.no_grad():
            logits = model(x)
    logits = logits.detach()
    d = _gaussian(x, check_generator(generator))
    for _ in range(power_iterations):
        d = _unit(d)
        d = d.requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(kl_loss(model(x + xi * d), logits).sum(), d)
        d = finite_direction(g)
    return _unit(d)


def _unit(d: torch.Tensor) -> torch.Tensor:
    """`d` scaled to unit L2 norm per example. The power iteration's gradient is O(xi^2)
    (1e-12 and less with the paper's xi): only an exact zero is left as zero."""
    return d / per_example(flat_norm(d, "l2").clamp_min(torch.finfo(d.dtype).tiny), d)


def vat(*, eps: float, xi: float = 1e-6, power_iterations: int = 1, weight: float = 1.0,
        attack_mode: str = "train", generator: torch.Generator | None = None) -> ObjectiveFn:
    """Virtual adversarial training, Miyato, Maeda, Koyama and Ishii (TPAMI 2018):

        mean_{labelled} CE(x, y) + weight * mean_{all} KL(p(.|x; theta^) || p(.|x + r_vadv; theta))

    with ``r_vadv = eps * vat_direction(...)`` (L2 radius `eps`, ``xi=1e-6`` and one power
    iteration as in the paper) and p(.|x; theta^) the current prediction held constant.
    ``weight`` is the paper's alpha (1 in all their experiments); eps is per dataset (their
    MNIST: 2.0). Semi-supervised: labels equal to -1 mark unlabelled examples, which enter only
    the KL term (the CE is averaged over the labelled ones; 0 when a batch has none). x + r_vadv
    is clipped to [0, 1]. Logs: ``clean_loss``, ``clean_acc`` (labelled examples), ``lds``.
    """
    eps = check_eps(eps)
    check_positive(xi, "xi")
    check_positive(power_iterations, "power_iterations", integer=True)
    weight = check_nonnegative(weight, "weight")
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        z = check_logits(model(x), len(x))
        labelled = y != -1
        count = labelled.sum().clamp_min(1)
        ce = F.cross_entropy(z, torch.where(labelled, y, 0), reduction="none")
        clean_loss = (ce * labelled).sum() / count
        with _inner(model, attack_mode):
            d = vat_direction(model, x, xi=xi, power_iterations=power_iterations, logits=z,
                              generator=generator)
            x_adv = (x + clip_box(x, eps * d)).detach()
        if attack_mode == "train":  # as in Miyato et al.'s code, the LDS forward pass
            with _running_stats_frozen(model):  # leaves the running statistics alone too
                z_adv = check_logits(model(x_adv), len(x))
        else:
            z_adv = check_logits(model(x_adv), len(x))
        lds = kl_loss(z_adv, z.detach()).mean()
        loss = clean_loss + weight * lds
        hits = ((z.detach().argmax(1) == y) & labelled).sum() / count
        return loss, {"clean_loss": clean_loss.detach(), "clean_acc": hits.float(),
                      "lds": lds.detach()}

    return objective


def wrm(*, gamma: float = 0.385, steps: int = 15, attack_mode: str = "train") -> ObjectiveFn:
    """WRM, Sinha, Namkoong and Duchi, "Certifying some distributional robustness with principled
    adversarial training" (ICLR 2018): the Lagrangian relaxation of a Wasserstein ball,

        min_theta E[ max_{x'} CE(f(x'), y) - gamma ||x' - x||_2^2 ],

    with the inner problem (strongly concave once gamma exceeds the loss's smoothness) solved
    as in the reference code: start at ``x + grad CE(x) / (2 gamma)``, then `steps` steps of
    gradient ascent on ``CE(x') / (2 gamma) - ||x' - x||^2 / 2`` with step size 1/sqrt(t + 2),
    here projected on [0, 1]. The outer gradient is taken at the maximiser (Danskin).
    ``gamma=0.385`` and 15 steps are the reference code's MNIST setting (its ``eps = 0.5 /
    gamma = 1.3``); a huge gamma gives plain cross-entropy. Logs: ``adv_loss``, ``adv_acc``,
    ``cost`` (mean ||x' - x||_2^2, the transport cost).
    """
    gamma = check_positive(gamma, "gamma")
    check_positive(steps, "steps", integer=True)
    attack_mode = _check_mode(attack_mode)
    scale = 0.5 / gamma

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        with _inner(model, attack_mode):
            x_adv = _wrm_point(model, x, y, scale, steps)
        loss, z = _ce(model, x_adv, y)
        cost = flat_norm(x_adv - x, "l2").square().mean()
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, y), "cost": cost}

    return objective


def _wrm_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float,
               steps: int) -> torch.Tensor:
    """WRM's inner ascent on CE(x') / (2 gamma) - ||x' - x||^2 / 2 (``scale = 1 / (2 gamma)``),
    from ``x + scale grad CE(x)``, step 1/sqrt(t + 2), in [0, 1]; detached."""
    x_adv = (x + scale * finite_direction(_input_grad(model, x, lambda z: ce_loss(z, y)))).clamp(0, 1)
    for t in range(steps):
        g = scale * finite_direction(_input_grad(model, x_adv, lambda z: ce_loss(z, y))) - (x_adv - x)
        x_adv = (x_adv + g / (t + 2) ** 0.5).clamp(0, 1)
    return x_adv.detach()


def wrm_surrogate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, gamma: float,
                  steps: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    """Sinha et al.'s robust surrogate per example, ``phi_gamma(x, y) = max_{x'} CE(f(x'), y) -
    gamma ||x' - x||_2^2`` (x' in [0, 1]), estimated by WRM's own inner ascent (`wrm`, `steps`
    steps); returns ``(phi, x_star)``, phi of shape (N,) and the maximiser found.

    Their certificate (Proposition 1 by duality): for every distribution P within Wasserstein
    distance rho of the data's (transport cost ||x' - x||_2^2, labels fixed),
    ``E_P[CE] <= gamma * rho + E[phi_gamma]``. It needs the exact maximum; the ascent finds it
    when gamma exceeds the loss's smoothness (a strongly concave inner problem) and otherwise
    gives a lower estimate, so check it against attacks of known transport cost. The model runs
    in eval mode without parameter gradients and is left as found.
    """
    gamma = check_positive(gamma, "gamma")
    check_positive(steps, "steps", integer=True)
    x = x.detach()
    with _inner(model, "eval"):
        x_star = _wrm_point(model, x, y, 0.5 / gamma, steps)
        with torch.no_grad():
            loss = F.cross_entropy(check_logits(model(x_star), len(x)), y, reduction="none")
    phi = loss - gamma * flat_norm(x_star - x, "l2").square()
    return phi.detach(), x_star
