"""Training objectives that change only the loss: adversarial training and distributionally
robust optimisation, each an `Objective` for `robustlab.train.fit`.

Every function here is a factory: it takes the method's hyperparameters (keyword-only, the
paper's defaults where the paper has one), checks them at once, and returns
``objective(model, x, y) -> (loss, logs)``. `loss` is a scalar with gradient to the model's
parameters; `logs` holds detached scalar tensors (``adv_loss``, ``adv_acc``, ...) that `fit`
averages per epoch. Nothing reads a value back to the host, so a GPU is never stalled per batch.

| factory | paper | loss |
| --- | --- | --- |
| `fgsm_at` | Goodfellow et al. 2015 | w CE(x) + (1 - w) CE(x + eps sign grad) |
| `pgd_at` | Madry et al. 2018 | CE(x*), x* from PGD in the eps-ball (Danskin) |
| `fast_at` | Wong et al. 2020 | CE(x*), x* one FGSM step of 1.25 eps from a random start |
| `trades` | Zhang et al. 2019 | CE(f(x), y) + beta KL(f(x) || f(x*)), x* from PGD on the KL |
| `vat` | Miyato et al. 2018 | CE on labelled + weight KL(p(x) || p(x + r_adv)) on all |
| `wrm` | Sinha et al. 2018 | CE(x*), x* = argmax CE(x') - gamma ||x' - x||_2^2 |

The inner maximisation (the attack)
-----------------------------------
It differentiates with respect to the input only (``torch.autograd.grad``, with the
parameters' ``requires_grad`` switched off for its duration and restored after), so the
parameters' ``.grad`` are never touched before the caller's ``backward``; `fit`'s optimiser
sees exactly the gradient of the returned loss (Danskin's theorem: the gradient at the
maximiser, which is held fixed).

In which mode does the model run during the attack? ``attack_mode`` chooses, with each
paper's own choice as default:

- ``"train"`` (fgsm_at, pgd_at, fast_at, vat, wrm): the model as the caller has it, which in
  `fit` is training mode: the attack sees the function being trained, dropout and batch
  statistics included, as Madry et al.'s and Wong et al.'s code run it. Batch-norm running
  statistics are not updated by the attack's forward passes (as Miyato et al.'s VAT code
  does, ``update_batch_stats=False``): only the training forward passes update them.
- ``"eval"`` (trades): every submodule in eval mode during the attack, as the TRADES reference
  code does (``model.eval()`` for the maximisation, ``model.train()`` after).

Either way the mode of every submodule, every ``requires_grad`` flag and every batch-norm
setting is restored afterwards, and the training forward passes run in the mode the caller
left the model in.

Adversarial inputs stay in pixel space [0, 1] (DESIGN.md section 3); randomness (random
starts, VAT's random direction) goes through an optional CPU or CUDA ``generator``.

Learning-rate schedules: `fit` steps its ``scheduler`` once per epoch. `cyclic_lr` builds
Wong et al.'s triangular (cyclic) schedule; with ``per_batch=True`` it steps after every
optimiser step instead (the paper's choice), and must then *not* be given to `fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .._checks import (
    check_choice,
    check_eps,
    check_in_range,
    check_logits,
    check_nonnegative,
    check_norm,
    check_positive,
)
from .._model import eval_mode
from .._random import draw_device
from ..losses import ce_loss, kl_loss
from ..norms import clip_box, finite_direction, flat_norm, per_example, project, random_in_ball, steepest

__all__ = ["ATTACK_MODES", "cyclic_lr", "fast_at", "fgsm_at", "pgd_at", "trades",
           "vat", "vat_direction", "wrm"]

ATTACK_MODES = ("train", "eval")

Logs = dict[str, torch.Tensor]
ObjectiveFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Logs]]


# --------------------------------------------------------------------------- shared machinery

def _check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    return generator


def _check_mode(attack_mode: str) -> str:
    return check_choice(attack_mode, ATTACK_MODES, "attack_mode")


def _check_inner_pgd(eps, alpha, steps, norm, norms=("linf", "l2")) -> tuple[float, str]:
    """The inner PGD's settings: eps >= 0, alpha > 0, steps a positive int, a known norm."""
    check_positive(alpha, "alpha")
    check_positive(steps, "steps", integer=True)
    return check_eps(eps), check_norm(norm, norms)


def _gaussian(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn on the generator's device."""
    return torch.randn(x.shape, generator=generator,
                       device=draw_device(generator, x.device)).to(x)


@contextmanager
def _running_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Forward passes that leave batch-norm running statistics alone: norm layers in training
    mode keep normalising with batch statistics but do not update their running ones."""
    norms = [m for m in model.modules()
             if isinstance(m, _NormBase) and m.training and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in norms:
            m.track_running_stats = True


@contextmanager
def _inner(model: nn.Module, attack_mode: str) -> Iterator[nn.Module]:
    """The model as the inner maximisation sees it: parameters frozen (their ``.grad`` and
    ``requires_grad`` flags are restored as found), gradients on, in eval mode (``"eval"``) or
    as found with batch-norm running statistics not updated (``"train"``)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("adversarial training objectives cannot run inside "
                           "torch.inference_mode(): the inner attack needs input gradients")
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        mode = eval_mode(model) if attack_mode == "eval" else _running_stats_frozen(model)
        with mode, torch.enable_grad():
            yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _input_grad(model: nn.Module, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Gradient wrt `x` of the summed per-example ``loss_fn(logits)``; may hold inf or NaN
    (`steepest` makes it finite; a caller that uses it raw applies `finite_direction`)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model(x)).sum(), x)
    return g


def _ascend(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, loss_fn, *, eps: float,
            alpha: float, steps: int, norm: str) -> torch.Tensor:
    """Projected steepest ascent of ``loss_fn`` from ``x + delta`` in the `norm` ball of
    radius `eps` intersected with [0, 1]; returns the adversarial input (detached)."""
    for _ in range(steps):
        x_adv = x + delta
        g = _input_grad(model, x_adv, loss_fn)
        delta = delta + alpha * steepest(g, norm, x_adv)
        delta = clip_box(x, project(delta, eps, norm))
    return (x + delta).detach()


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the model on `x` (a training forward pass) and the logits."""
    z = check_logits(model(x), len(x))
    return F.cross_entropy(z, y), z


def _acc(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (z.detach().argmax(1) == y).float().mean()


# --------------------------------------------------------------------------- adversarial training

def fgsm_at(*, eps: float, clean_weight: float = 0.5, norm: str = "linf",
            attack_mode: str = "train") -> ObjectiveFn:
    """FGSM adversarial training, Goodfellow, Shlens and Szegedy (ICLR 2015), eq. 6:

        J~(theta, x, y) = w J(theta, x, y) + (1 - w) J(theta, x + eps sign(grad_x J), y)

    with the paper's mix weight ``w = clean_weight = 0.5`` (their alpha). ``norm="l2"`` takes
    the normalised-gradient step (FGM) instead of the sign. The adversarial input is clipped to
    [0, 1]. Logs: ``clean_loss``, ``clean_acc``, ``adv_loss``, ``adv_acc``.
    """
    eps = check_eps(eps)
    clean_weight = float(check_in_range(clean_weight, "clean_weight", 0.0, 1.0))
    norm = check_norm(norm)
    attack_mode = _check_mode(attack_mode)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        with _inner(model, attack_mode):
            g = _input_grad(model, x, lambda z: ce_loss(z, y))
        x_adv = (x + clip_box(x, eps * steepest(g, norm))).detach()
        clean_loss, z = _ce(model, x, y)
        adv_loss, z_adv = _ce(model, x_adv, y)
        loss = clean_weight * clean_loss + (1 - clean_weight) * adv_loss
        return loss, {"clean_loss": clean_loss.detach(), "clean_acc": _acc(z, y),
                      "adv_loss": adv_loss.detach(), "adv_acc": _acc(z_adv, y)}

    return objective


def pgd_at(*, eps: float, alpha: float, steps: int, norm: str = "linf",
           random_start: bool = True, attack_mode: str = "train",
           generator: torch.Generator | None = None) -> ObjectiveFn:
    """PGD adversarial training, Madry et al. (ICLR 2018): the min-max

        min_theta E[ max_{x' in B(x, eps) cap [0,1]^n} CE(f_theta(x'), y) ]

    with the inner max found by PGD (`robustlab.attacks.pgd`'s iteration: `steps` steps of
    size `alpha` from a uniform random start in the ball) and the outer gradient taken at the
    maximiser (Danskin's theorem). Madry et al.'s MNIST setting is eps=0.3, alpha=0.01,
    steps=40; CIFAR-10 eps=8/255, alpha=2/255, steps=7. The attack runs on the model as it is
    being trained (``attack_mode="train"``, as their code does). Logs: ``adv_loss``, ``adv_acc``
    (on the training batch's adversarial examples, free from the training forward pass).
    """
    eps, norm = _check_inner_pgd(eps, alpha, steps, norm, ("linf", "l2", "l1"))
    attack_mode = _check_mode(attack_mode)
    generator = _check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        delta = torch.zeros_like(x)
        if random_start:
            delta = clip_box(x, random_in_ball(x, eps, norm, generator))
        with _inner(model, attack_mode):
            x_adv = _ascend(model, x, delta, lambda z: ce_loss(z, y), eps=eps, alpha=alpha,
                            steps=steps, norm=norm)
        loss, z = _ce(model, x_adv, y)
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, y)}

    return objective


def fast_at(*, eps: float, alpha: float | None = None, norm: str = "linf",
            attack_mode: str = "train", generator: torch.Generator | None = None) -> ObjectiveFn:
    """Fast adversarial training, Wong, Rice and Kolter, "Fast is better than free" (ICLR 2020):
    one FGSM step of size ``alpha = 1.25 eps`` (the default) from a uniform random start in the
    eps-ball, projected back into the ball and [0, 1], then CE at that point.

    The paper pairs it with a cyclic learning rate: build it with `cyclic_lr` (per batch, as
    the paper, or per epoch through `fit`'s ``scheduler``). Logs: ``adv_loss``, ``adv_acc``.
    """
    eps = check_eps(eps)
    alpha = 1.25 * eps if alpha is None else check_nonnegative(alpha, "alpha")
    norm = check_norm(norm)
    attack_mode = _check_mode(attack_mode)
    generator = _check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        delta = clip_box(x, random_in_ball(x, eps, norm, generator))
        with _inner(model, attack_mode):
            x_adv = _ascend(model, x, delta, lambda z: ce_loss(z, y), eps=eps, alpha=alpha,
                            steps=1, norm=norm)
        loss, z = _ce(model, x_adv, y)
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, y)}

    return objective


def cyclic_lr(optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int = 1,
              max_lr: float, peak: float = 0.4,
              per_batch: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """Wong et al.'s cyclic (triangular) learning rate: 0 up to `max_lr` at fraction `peak` of
    training (their code: 2/5), then linearly down to 0 at the end.

    The schedule has ``epochs * steps_per_epoch`` steps; step k (counted from 0) trains with
    ``max_lr * tri((k + 1) / total)``, so no step uses a learning rate of exactly 0 but the
    last. Sets every parameter group's learning rate to `max_lr` as its base.

    Two ways to step it:

    - per epoch, through `fit` (which steps its ``scheduler`` once per epoch): leave
      ``steps_per_epoch=1`` and pass ``scheduler=cyclic_lr(opt, epochs=E, max_lr=...)`` to
      ``fit(..., epochs=E, optimizer=opt)``;
    - per batch, as the paper: ``per_batch=True`` and ``steps_per_epoch = len(batches)`` (for
      an ``(x, y)`` pair in `fit`, ``ceil(len(x) / batch_size)``). The scheduler then steps
      after every ``optimizer.step()`` (an optimiser step hook; ``scheduler.hook.remove()``
      detaches it). Do *not* also pass it to `fit`.

    Stepping past the end (a schedule that does not fit the epochs, or one stepped both ways)
    raises a ValueError that says so.
    """
    check_positive(epochs, "epochs", integer=True)
    check_positive(steps_per_epoch, "steps_per_epoch", integer=True)
    check_positive(max_lr, "max_lr")
    check_in_range(peak, "peak", 0.0, 1.0, low_open=True, high_open=True)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    total = epochs * steps_per_epoch

    def factor(k: int) -> float:
        if k > total:
            raise ValueError(f"cyclic_lr stepped {k} times but the schedule has epochs * "
                             f"steps_per_epoch = {total} steps: it does not fit the training "
                             f"run, or it is stepped both per batch and by fit")
        t = min(k + 1, total) / total
        return t / peak if t <= peak else (1 - t) / (1 - peak)

    for group in optimizer.param_groups:
        group["lr"] = max_lr
        group.pop("initial_lr", None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if per_batch:
        scheduler.hook = optimizer.register_step_post_hook(lambda *_: scheduler.step())
    return scheduler


# --------------------------------------------------------------------------- distributionally robust

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
    generator = _check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        delta = clip_box(x, project(0.001 * _gaussian(x, generator), eps, norm))
        with _inner(model, attack_mode):
            with torch.no_grad():
                z_ref = model(x)
            x_adv = _ascend(model, x, delta, lambda z: kl_loss(z, z_ref), eps=eps, alpha=alpha,
                            steps=steps, norm=norm)
        clean_loss, z = _ce(model, x, y)
        z_adv = check_logits(model(x_adv), len(x))
        kl = kl_loss(z_adv, z).mean()
        loss = clean_loss + beta * kl
        return loss, {"clean_loss": clean_loss.detach(), "clean_acc": _acc(z, y),
                      "kl": kl.detach(), "adv_acc": _acc(z_adv, y)}

    return objective


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
    d = _gaussian(x, _check_generator(generator))
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
    generator = _check_generator(generator)

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
            x_adv = (x + scale * finite_direction(_input_grad(model, x, lambda z: ce_loss(z, y)))).clamp(0, 1)
            for t in range(steps):
                g = scale * finite_direction(_input_grad(model, x_adv, lambda z: ce_loss(z, y))) - (x_adv - x)
                x_adv = (x_adv + g / (t + 2) ** 0.5).clamp(0, 1)
        x_adv = x_adv.detach()
        loss, z = _ce(model, x_adv, y)
        cost = flat_norm(x_adv - x, "l2").square().mean()
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, y), "cost": cost}

    return objective
