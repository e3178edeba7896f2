"""Adversarial training with latent distribution (ATLD): a discriminator game on the latent
space, at the scale of the digits.

Qian, Zhang, Huang, Wang, Zhang and Yi, "Improving model robustness with latent distribution
locally and globally" (ICLR 2021 submission, OpenReview yvuk0RsLoP7; arXiv:2107.04401). The
adversarial examples of PGD-AT are local and supervised: each one climbs its own label's loss
towards the decision boundary. ATLD makes them global and unsupervised: a discriminator D
learns to tell the latent distribution of natural data from that of perturbed data, and the
perturbations (latent manifold adversarial examples, LMAE) are those that make the perturbed
latent distribution most different from the natural one, as D measures it; the ball keeps
them local. The classifier then trains to classify them and to keep the two distributions
together. The latent is the classifier's logits, as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_generator, check_in_range, check_logits, check_nonnegative, check_positive
from .._model import check_model, frozen
from ..norms import clip_box, random_in_ball
from ..train import fit
from ._inner import _acc, _ascend, _check_inner_pgd, _check_mode, _inner

__all__ = ["discriminator_loss", "latent_at", "latent_discriminator", "lmae", "perturbed_log_odds"]


def latent_discriminator(num_classes: int, hidden: int = 64) -> nn.Module:
    """ATLD's discriminator on logits (N, K): an MLP with LeakyReLU returning (N, 1 + K).

    Column 0 is the logit of "natural" (against "perturbed"); columns 1..K are class logits,
    the auxiliary classification head of the authors' discriminator (as in AC-GAN), trained on
    both distributions so that D's features follow the classes.
    """
    check_positive(num_classes, "num_classes", integer=True)
    check_positive(hidden, "hidden", integer=True)
    return nn.Sequential(nn.Linear(num_classes, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, 1 + num_classes))


def perturbed_log_odds(disc: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """log(1 - D(z)) per example, D(z) = sigmoid(column 0): the perturbed side's term of the
    divergence estimate ``E log D(z_nat) + E log(1 - D(z_adv))``; larger = looks less natural."""
    return F.logsigmoid(-disc(z)[:, 0])


def discriminator_loss(disc: nn.Module, z_nat: torch.Tensor, z_adv: torch.Tensor,
                       y: torch.Tensor, smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
    """D's loss: binary cross-entropy of natural (1) against perturbed (0) latents, plus the
    cross-entropy of its class head on both; and its logs ``d_loss``, ``d_acc`` (the fraction
    of the 2N latents it sorts right) and ``divergence`` (the GAN value
    ``mean log D(z_nat) + mean log(1 - D(z_adv))``: -2 log 2 at chance, up to 0)."""
    out_nat, out_adv = disc(z_nat), disc(z_adv)
    value = F.logsigmoid(out_nat[:, 0]).mean() + F.logsigmoid(-out_adv[:, 0]).mean()
    classes = (F.cross_entropy(out_nat[:, 1:], y, label_smoothing=smoothing)
               + F.cross_entropy(out_adv[:, 1:], y, label_smoothing=smoothing))
    loss = -value + classes
    d_acc = ((out_nat[:, 0] > 0).float().mean() + (out_adv[:, 0] < 0).float().mean()) / 2
    return loss, {"d_loss": loss.detach(), "d_acc": d_acc.detach(), "divergence": value.detach()}


def lmae(model: nn.Module, disc: nn.Module, x: torch.Tensor, *, eps: float, alpha: float,
         steps: int = 1, norm: str = "linf", random_start: bool = True,
         attack_mode: str = "eval", generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent manifold adversarial examples: from a uniform random point of the ball (or x),
    `steps` projected steepest-ascent steps on log(1 - D(f(x'))), the perturbed side of the
    divergence estimate, with D and the model fixed (no labels used):

        x' <- Proj_{B(x, eps) cap [0,1]}(x' + alpha * sign(grad_x' log(1 - D(f(x')))))

    The model runs as `attack_mode` says (the authors' code: a copy in eval mode), D in eval
    mode; both are left as found. Returns x' (detached)."""
    check_model(model)
    eps, norm = _check_inner_pgd(eps, alpha, steps, norm)
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)
    x = x.detach()
    delta = clip_box(x, random_in_ball(x, eps, norm, generator)) if random_start \
        else torch.zeros_like(x)
    with _inner(model, attack_mode), frozen(disc):
        return _ascend(model, x, delta, lambda z: perturbed_log_odds(disc, z), eps=eps,
                       alpha=alpha, steps=steps, norm=norm)


def latent_at(model: nn.Module, data, *, eps: float, alpha: float, epochs: int, steps: int = 1,
              beta: float = 0.05, smoothing: float = 0.5, discriminator: nn.Module | None = None,
              d_optimizer: torch.optim.Optimizer | None = None, d_lr: float = 1e-3,
              d_steps: int = 2, norm: str = "linf", attack_mode: str = "eval",
              generator: torch.Generator | None = None, **fit_options) -> list[dict]:
    """ATLD training (Qian et al., module docstring). The game, with f the classifier's logits:

        max_D   V(D) = E log D(f(x)) + E log(1 - D(f(x')))          (+ D's class head)
        x'      = argmax_{x' in B(x, eps)} log(1 - D(f(x')))          (`lmae`, `steps` steps)
        min_f   CE_s(f(x'), y) + beta * ||f(x') - f(x)||^2 / K        (f(x) held fixed)

    Per batch: the natural latents f(x) (in `attack_mode`, no gradient); x' from `lmae`; then
    `d_steps` steps of D's optimiser on `discriminator_loss`; then one step of the classifier's
    optimiser. CE_s is the cross-entropy with label smoothing `smoothing`. The classifier's side
    of the game, keeping the perturbed latent distribution close to the natural one, is taken
    as the authors' code takes it, by pairing each perturbed latent with its natural one (mean
    squared error over the K logits); their code weighs it by a batch-dependent ratio of input
    gradient maxima, here a fixed `beta`. The authors' CIFAR-10 setting is one step with
    alpha = eps = 8/255, two D steps per batch and smoothing 0.5 (their test-time manifold
    transformation, IMT, is not part of training and not included).

    Why not an Objective: a second network, the discriminator, takes its own optimiser steps
    inside each batch, between generating x' and the classifier's step, so the loop is the
    defence's. It is `fit` with a ``step=``; extra keyword arguments go to `fit`. D's state is
    not checkpointed with the model.

    Arguments:
        eps, alpha, steps, norm: the ball and the ascent of `lmae` (L-inf or L2).
        beta: weight of the latent pairing term (>= 0). The default 0.05 is measured on the
            digits with an MLP; beta = 1 made the logits run away there.
        smoothing: label smoothing in [0, 1) (the authors' 0.5 by default).
        discriminator: D, mapping logits (N, K) to (N, 1 + K); `latent_discriminator(K)` on
            the first batch if None. d_optimizer: its optimiser (Adam(d_lr) if None).
        d_steps: D's steps per batch. attack_mode: "eval" or "train", as in the defences of
            `robustlab.defences.objectives`. generator: seeds the random starts.
    Returns `fit`'s history; logs ``adv_acc``, ``pairing``, ``d_loss``, ``d_acc``,
    ``divergence`` (see `discriminator_loss`, measured before D's last step).
    """
    check_model(model)
    eps, norm = _check_inner_pgd(eps, alpha, steps, norm)
    check_positive(epochs, "epochs", integer=True)
    beta = check_nonnegative(beta, "beta")
    smoothing = check_in_range(smoothing, "smoothing", 0.0, 1.0, high_open=True)
    check_positive(d_lr, "d_lr")
    check_positive(d_steps, "d_steps", integer=True)
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)
    if discriminator is not None and not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be a torch.nn.Module or None, got "
                        f"{type(discriminator).__name__}")
    if d_optimizer is not None and not isinstance(d_optimizer, torch.optim.Optimizer):
        raise TypeError(f"d_optimizer must be a torch.optim.Optimizer or None, got "
                        f"{type(d_optimizer).__name__}")
    if d_optimizer is not None and discriminator is None:
        raise ValueError("d_optimizer needs its discriminator: pass discriminator= too")
    game = {"D": discriminator, "opt": d_optimizer}

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer):
        x = x.detach()
        with _inner(model, attack_mode), torch.no_grad():
            z_nat = check_logits(model(x), len(x))
        if game["D"] is None:
            game["D"] = latent_discriminator(z_nat.shape[1]).to(z_nat.dtype)
        # D goes where fit put the model; Module.to moves in place, so its optimiser still holds
        # the same parameters
        disc = game["D"].to(z_nat.device)
        if game["opt"] is None:
            game["opt"] = torch.optim.Adam(disc.parameters(), lr=d_lr)
        x_adv = lmae(model, disc, x, eps=eps, alpha=alpha, steps=steps, norm=norm,
                     attack_mode=attack_mode, generator=generator)
        z_adv = check_logits(model(x_adv), len(x))
        for _ in range(d_steps):
            d_loss, d_logs = discriminator_loss(disc, z_nat, z_adv.detach(), y, smoothing)
            game["opt"].zero_grad(set_to_none=True)
            d_loss.backward()
            game["opt"].step()
        pairing = (z_adv - z_nat).pow(2).mean()
        loss = F.cross_entropy(z_adv, y, label_smoothing=smoothing) + beta * pairing
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), {"adv_acc": _acc(z_adv, y), "pairing": pairing.detach(), **d_logs}

    return fit(model, data, epochs=epochs, step=step, **fit_options)
