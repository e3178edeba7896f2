"""Training objectives that change only the loss: adversarial training here, distributionally
robust optimisation (TRADES, VAT, WRM) in `robustlab.defences.dro`; each an `Objective` for
`robustlab.train.fit`. The rules below hold for both modules (their shared machinery is
`robustlab.defences._inner`).

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
| `dro.trades` | Zhang et al. 2019 | CE(f(x), y) + beta KL(f(x) || f(x*)), x* from PGD on the KL |
| `dro.vat` | Miyato et al. 2018 | CE on labelled + weight KL(p(x) || p(x + r_adv)) on all |
| `dro.wrm` | Sinha et al. 2018 | CE(x*), x* = argmax CE(x') - gamma ||x' - x||_2^2 |
| `deepfool_at` | Moosavi-Dezfooli et al. 2016 | w CE(x) + (1 - w) CE(x + r), r from DeepFool |
| `smooth_adv` | Salman et al. 2019 | mean_i CE(x* + d_i), x* from PGD on the smoothed softmax |

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

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_bool,
    check_eps,
    check_generator,
    check_in_range,
    check_logits,
    check_nonnegative,
    check_norm,
    check_positive,
)
from ..attacks.deepfool import deepfool
from ..losses import ce_loss
from ..norms import clip_box, random_in_ball, steepest
from ._inner import (
    ATTACK_MODES,
    ObjectiveFn,
    _acc,
    _ascend,
    _ce,
    _check_inner_pgd,
    _check_mode,
    _gaussian,
    _inner,
    _input_grad,
    _pgd_point,
)

__all__ = ["ATTACK_MODES", "cyclic_lr", "deepfool_at", "fast_at", "fgsm_at", "pgd_at",
           "smooth_adv"]


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
    random_start = check_bool(random_start, "random_start")
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x_adv = _pgd_point(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
                           random_start=random_start, attack_mode=attack_mode,
                           generator=generator)
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
    generator = check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        delta = clip_box(x, random_in_ball(x, eps, norm, generator))
        with _inner(model, attack_mode):
            x_adv = _ascend(model, x, delta, lambda z: ce_loss(z, y), eps=eps, alpha=alpha,
                            steps=1, norm=norm)
        loss, z = _ce(model, x_adv, y)
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, y)}

    return objective


def deepfool_at(*, clean_weight: float = 0.5, norm: str = "l2", steps: int = 50,
                overshoot: float = 0.02) -> ObjectiveFn:
    """DeepFool adversarial training, Moosavi-Dezfooli, Fawzi and Frossard (CVPR 2016),
    section 4.3: train on the minimal perturbations DeepFool finds, mixed with the clean batch
    as in Goodfellow et al.'s eq. 6,

        J~(theta, x, y) = w CE(f(x), y) + (1 - w) CE(f(x + r(x)), y),
        r(x) = DeepFool's (1 + overshoot) r_tot, clipped to [0, 1]

    (`robustlab.attacks.deepfool`, its defaults: 50 steps, overshoot 0.02, L2). Unlike FGSM's
    fixed eps, each example moves just past its own nearest boundary, so the training pushes
    that boundary out. The attack runs on the model in eval mode (as every attack of
    `robustlab.attacks`): DeepFool linearises one fixed function, which dropout would change
    between its steps; the parameters are frozen and restored. DeepFool checks on the host
    whether every example is fooled, every steps // 10 steps, so a step reads the host a few
    times. Logs: ``clean_loss``, ``clean_acc``, ``adv_loss``, ``adv_acc``, ``adv_dist`` (the mean
    norm of r).
    """
    clean_weight = float(check_in_range(clean_weight, "clean_weight", 0.0, 1.0))
    norm = check_norm(norm)
    check_positive(steps, "steps", integer=True)
    overshoot = check_nonnegative(overshoot, "overshoot")

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        with _inner(model, "eval"):
            x_adv = deepfool(model, x, y, norm=norm, steps=steps, overshoot=overshoot)
        clean_loss, z = _ce(model, x, y)
        adv_loss, z_adv = _ce(model, x_adv, y)
        loss = clean_weight * clean_loss + (1 - clean_weight) * adv_loss
        dist = (x_adv - x).flatten(1).norm(p=2 if norm == "l2" else float("inf"), dim=1)
        return loss, {"clean_loss": clean_loss.detach(), "clean_acc": _acc(z, y),
                      "adv_loss": adv_loss.detach(), "adv_acc": _acc(z_adv, y),
                      "adv_dist": dist.mean()}

    return objective


def smooth_adv(*, sigma: float, eps: float, steps: int = 1, alpha: float | None = None,
               samples: int = 1, attack_mode: str = "eval",
               generator: torch.Generator | None = None) -> ObjectiveFn:
    """SmoothAdv training, Salman et al., "Provably robust deep learning via adversarially
    trained smoothed classifiers" (NeurIPS 2019), SmoothAdv_PGD with m = `samples` noise draws:
    attack the smoothed soft classifier G(x) = E_d[softmax(f(x + d))], d ~ N(0, sigma^2 I),
    through its Monte Carlo estimate (their eq. 6 with the draws d_1..d_m fixed for the attack),

        x* = argmax_{||x' - x||_2 <= eps} -log( (1/m) sum_i softmax(f(x' + d_i))_y ),

    by `steps` L2 PGD steps of size ``alpha = 2 eps / steps`` (their code's default) from x,
    then train the base classifier on the same noisy copies of x*:

        loss = (1/m) sum_i CE(f(x* + d_i), y)

    With ``eps=0`` (or x* = x) this is `smoothing.gaussian_noise` with m draws. The paper's
    grid is steps in {1, 2, 4, 8, 10}, m in {1, 2, 4, 8}; the defaults are its cheapest
    setting. x* stays in [0, 1]; the noisy copies are not clipped (as in the paper). The
    attack runs in eval mode by default, as the authors' code does. Draws come from
    `generator` (on its device). Logs: ``adv_loss``, ``adv_acc`` (of the noisy copies of x*).
    """
    sigma = check_positive(sigma, "sigma")
    eps = check_eps(eps)
    check_positive(steps, "steps", integer=True)
    alpha = 2 * eps / steps if alpha is None else check_positive(alpha, "alpha")
    check_positive(samples, "samples", integer=True)
    attack_mode = _check_mode(attack_mode)
    generator = check_generator(generator)

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        noise = sigma * _gaussian(x.expand(samples, *x.shape), generator)  # (m, N, ...)

        def smoothed_log_probs(x_adv: torch.Tensor) -> torch.Tensor:
            """log of the Monte Carlo smoothed softmax, (N, K): the attack's target."""
            z = check_logits(model((x_adv + noise).flatten(0, 1)), samples * len(x))
            log_p = z.log_softmax(1).view(samples, len(x), -1)
            return log_p.logsumexp(0) - math.log(samples)  # log mean_i p_i, stably

        if eps > 0:
            with _inner(model, attack_mode):
                x_adv = _ascend(smoothed_log_probs, x, torch.zeros_like(x),
                                lambda log_p: F.nll_loss(log_p, y, reduction="none"),
                                eps=eps, alpha=alpha, steps=steps, norm="l2")
        else:
            x_adv = x
        z = check_logits(model((x_adv + noise).flatten(0, 1)), samples * len(x))
        ys = y.repeat(samples)
        loss = F.cross_entropy(z, ys)
        return loss, {"adv_loss": loss.detach(), "adv_acc": _acc(z, ys)}

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
    check_bool(per_batch, "per_batch")
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
