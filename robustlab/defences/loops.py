"""Defences that change the training loop itself: Free-AT, YOPO and AWP.

An `Objective` returns one loss per batch, and `fit` runs one backward pass and one optimiser
step on it. The defences here cannot be written that way (each docstring says why): they run
several optimiser steps per batch (Free-AT), accumulate the weight gradients of several
backward passes that also steer the attack (YOPO), or move the weights themselves before the
backward pass (AWP). Each is still `fit`: it hands `fit` a training ``step(model, x, y,
optimizer)`` that does its own backward passes and steps, so data iteration, devices, logging
(the mean ``loss`` and ``adv_acc`` per epoch), ``eval_data``, schedulers, checkpoints and
``after_epoch`` callbacks work as they do there. Extra keyword arguments go to `fit`
(``optimizer``, ``lr``, ``batch_size``, ``eval_data``, ``seed``, ``progress``, ...).

| function | paper | per batch |
| --- | --- | --- |
| `free_at` | Shafahi et al. 2019 | m replays; each one backward for weights and input |
| `yopo` | Zhang et al. 2019 | m full passes, each followed by n first-layer-only updates |
| `awp` | Wu et al. 2020 | PGD-AT / TRADES gradient taken at weights w + v, applied at w |

The attacks run on the model in training mode as the papers' code does (TRADES-based AWP: in
eval mode); adversarial inputs stay in [0, 1]; random starts draw from an optional
``generator``. Nothing is read back to the host per batch.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_generator, check_nonnegative, check_norm, check_positive
from ..norms import clip_box, project, random_in_ball, steepest
from ..train import fit
from ._inner import (
    _acc,
    _ce,
    _check_mode,
    _inner,
    _pgd_point,
    _running_stats_frozen,
)
from .dro import _trades_loss, _trades_point

__all__ = ["awp", "free_at", "yopo"]

AWP_BASES = ("pgd_at", "trades")


def _check_budget(eps, alpha, norm, norms=("linf", "l2")) -> tuple[float, float | None, str]:
    """A training budget: eps > 0 and finite (eps = 0 is plain training: use `fit`), a step
    size > 0 when given, a known norm."""
    check_positive(eps, "eps")
    if alpha is not None:
        check_positive(alpha, "alpha")
    return float(eps), alpha, check_norm(norm, norms)


def free_at(model: nn.Module, data, *, eps: float, epochs: int, replays: int = 4,
            alpha: float | None = None, norm: str = "linf", **fit_options) -> list[dict]:
    """Free adversarial training, Shafahi et al., "Adversarial training for free!" (NeurIPS
    2019), Algorithm 1: each minibatch is replayed `replays` (m) times in a row; every replay
    is one forward and one backward pass at ``x + delta`` that gives both the weights' gradient
    (one optimiser step) and the input gradient g, which updates the perturbation

        delta <- proj_eps(delta + alpha * sign(g))      (L2: alpha g / ||g||)

    ``alpha = eps`` by default (the paper's step). delta starts at 0 and is carried across
    replays *and* on to the next minibatch (cut to its size; reset when the shape changes).
    To keep the number of gradient computations of `epochs` natural epochs, the data is
    passed over ``epochs / replays`` times: `epochs` must be a multiple of `replays`, and a
    scheduler given to `fit` steps once per pass.

    Why not an Objective: it makes m optimiser steps per batch, and the perturbation comes from
    the very backward pass that trains the weights (an Objective's attack may not touch them).

    Returns `fit`'s history, one row per pass: ``loss`` and ``adv_acc`` are means over the
    replays (the accuracy on the perturbed batch before each step). delta is not checkpointed:
    a resumed run restarts it at 0.
    """
    eps, alpha, norm = _check_budget(eps, alpha, norm)
    check_positive(replays, "replays", integer=True)
    check_positive(epochs, "epochs", integer=True)
    if epochs % replays:
        raise ValueError(f"epochs must be a multiple of replays: Free-AT passes over the data "
                         f"epochs / replays times, got epochs={epochs}, replays={replays}")
    alpha = eps if alpha is None else alpha
    carried: dict[str, torch.Tensor] = {}

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer):
        delta = carried.get("delta")
        if (delta is None or delta.shape[1:] != x.shape[1:] or len(delta) < len(x)
                or delta.device != x.device or delta.dtype != x.dtype):
            delta = carried["delta"] = torch.zeros_like(x)
        n = len(x)
        losses, hits = [], []
        for _ in range(replays):
            x_adv = (x + clip_box(x, delta[:n])).detach().requires_grad_(True)
            loss, z = _ce(model, x_adv, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # the one backward: parameters' .grad and x_adv.grad together
            optimizer.step()
            with torch.no_grad():
                delta[:n] = project(delta[:n] + alpha * steepest(x_adv.grad, norm, x_adv), eps, norm)
            losses.append(loss.detach())
            hits.append(_acc(z, y))
        return torch.stack(losses).mean(), {"adv_acc": torch.stack(hits).mean()}

    return fit(model, data, epochs=epochs // replays, step=step, **fit_options)


class _Stop(Exception):
    """Raised by YOPO's hook once the first layer has run: the rest of the network is skipped."""


def _first_layer(model: nn.Module) -> nn.Module:
    """The first submodule (in registration order) with parameters of its own."""
    for m in model.modules():
        if any(True for _ in m.parameters(recurse=False)):
            return m
    raise ValueError("first_layer: the model has no layer with parameters")


def yopo(model: nn.Module, data, *, eps: float, alpha: float, epochs: int, m: int = 5,
         n: int = 3, norm: str = "linf", first_layer: nn.Module | None = None,
         generator: torch.Generator | None = None, **fit_options) -> list[dict]:
    """YOPO-m-n, Zhang et al., "You only propagate once: accelerating adversarial training via
    maximal principle" (NeurIPS 2019), Algorithm 1. Write the network as f = g(f_0(x)) with f_0
    its first layer. From a uniform random start eta in the eps-ball, `m` times:

    1. one full forward and backward pass at x + eta: it accumulates the weights' gradient
       (averaged over the m passes, one optimiser step per batch) and gives the adjoint
       p = dLoss / df_0 at the first layer's output;
    2. `n` cheap updates of the perturbation through the first layer only, p held fixed:

        eta <- proj_eps(eta + alpha * sign(grad_eta <p, f_0(x + eta)>))

    `first_layer` defaults to the model's first submodule with parameters; what comes before
    it (Flatten, Normalize) runs too, the rest of the network does not (a forward hook stops
    the pass there). It must run once per forward pass, and the loss must depend on the input
    only through it (a plain chain of layers). The paper's CIFAR-10 setting is YOPO-5-3,
    eps = 8/255, alpha = 2/255.

    Why not an Objective: the weight gradient is the sum of m backward passes that also steer
    the attack (each pass's adjoint p feeds the next n updates), so the backward passes belong
    to the loop, not to `fit`.

    Returns `fit`'s history; ``loss`` and ``adv_acc`` are means over the m passes.
    """
    eps, alpha, norm = _check_budget(eps, alpha, norm)
    check_positive(m, "m", integer=True)
    check_positive(n, "n", integer=True)
    check_positive(epochs, "epochs", integer=True)
    generator = check_generator(generator)
    layer = _first_layer(model) if first_layer is None else first_layer
    if not isinstance(layer, nn.Module) or not any(layer is s for s in model.modules()):
        raise ValueError("first_layer must be a submodule of model")
    seen: dict = {}

    def hook(module, inputs, output):
        seen["out"], seen["calls"] = output, seen.get("calls", 0) + 1
        if seen.get("prefix"):
            raise _Stop
        output.retain_grad()  # the adjoint p is its gradient after the full backward pass

    def first_output(x: torch.Tensor) -> torch.Tensor:
        seen["prefix"] = True
        try:
            model(x)
        except _Stop:
            return seen["out"]
        finally:
            seen["prefix"] = False
        raise ValueError("first_layer did not run in the model's forward pass")

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer):
        eta = clip_box(x, random_in_ball(x, eps, norm, generator))
        losses, hits = [], []
        optimizer.zero_grad(set_to_none=True)
        handle = layer.register_forward_hook(hook)
        try:
            for _ in range(m):
                seen["calls"] = 0
                x_adv = (x + eta).detach().requires_grad_(True)  # so f_0's output has a grad
                loss, z = _ce(model, x_adv, y)
                if seen["calls"] != 1:
                    raise ValueError(f"first_layer ran {seen['calls']} times in one forward "
                                     f"pass: YOPO needs a layer that runs exactly once")
                (loss / m).backward()
                p = seen.pop("out").grad.detach()
                losses.append(loss.detach())
                hits.append(_acc(z, y))
                with _inner(model, "train"):  # parameters frozen: only eta gets a gradient
                    for _ in range(n):
                        xe = (x + eta).requires_grad_(True)
                        (g,) = torch.autograd.grad((first_output(xe) * p).sum(), xe)
                        eta = clip_box(x, project(eta + alpha * steepest(g, norm, xe), eps, norm))
                    seen.pop("out", None)
        finally:
            handle.remove()
        optimizer.step()
        return torch.stack(losses).mean(), {"adv_acc": torch.stack(hits).mean()}

    return fit(model, data, epochs=epochs, step=step, **fit_options)


def awp(model: nn.Module, data, *, eps: float, alpha: float, steps: int, epochs: int,
        gamma: float = 5e-3, base: str = "pgd_at", beta: float = 6.0, norm: str = "linf",
        attack_mode: str | None = None, generator: torch.Generator | None = None,
        **fit_options) -> list[dict]:
    """Adversarial weight perturbation, Wu, Xia and Wang, "Adversarial weight perturbation helps
    robust generalization" (NeurIPS 2020), on top of PGD-AT (``base="pgd_at"``, eq. 6) or
    TRADES (``base="trades"``, with `beta`). Per batch:

    1. x' from the base method's inner PGD at the current weights w (eps, alpha, steps);
    2. one ascent step on the weights, layer-wise (every weight with two or more dimensions;
       biases and norm scales are not perturbed):
       v_l = gamma ||w_l|| g_l / ||g_l||, g_l the base loss's gradient at w;
    3. the base loss's gradient at w + v, then w restored exactly (copied back) and the
       optimiser steps with that gradient: w <- w - lr grad L(w + v).

    ``gamma = 5e-3`` is the paper's choice for PGD-AT (with TRADES too). The weight ascent's
    forward pass leaves batch-norm running statistics alone.

    Why not an Objective: the gradient is taken at perturbed weights and applied at the
    original ones, so the weights must move and come back around the backward pass, inside
    the step.

    Returns `fit`'s history (logs of the base objective at w + v).
    """
    eps, alpha, norm = _check_budget(eps, alpha, norm)
    check_positive(steps, "steps", integer=True)
    check_positive(epochs, "epochs", integer=True)
    gamma = check_nonnegative(gamma, "gamma")
    base = check_choice(base, AWP_BASES, "base")
    beta = check_nonnegative(beta, "beta")
    attack_mode = _check_mode(("train" if base == "pgd_at" else "eval")
                              if attack_mode is None else attack_mode)
    generator = check_generator(generator)

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer):
        if base == "pgd_at":
            x_adv = _pgd_point(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
                               random_start=True, attack_mode=attack_mode, generator=generator)

            def base_loss():
                loss, z = _ce(model, x_adv, y)
                return loss, {"adv_acc": _acc(z, y)}
        else:
            x_adv = _trades_point(model, x, eps=eps, alpha=alpha, steps=steps, norm=norm,
                                  attack_mode=attack_mode, generator=generator)

            def base_loss():
                return _trades_loss(model, x, x_adv, y, beta)

        weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
        with _running_stats_frozen(model):
            ascent, _ = base_loss()
        grads = torch.autograd.grad(ascent, weights, allow_unused=True)
        saved = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for w, g in zip(weights, grads):
                if g is not None:
                    w.add_(gamma * w.norm() / g.norm().clamp_min(torch.finfo(g.dtype).tiny) * g)
        try:
            loss, logs = base_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            with torch.no_grad():
                for w, w0 in zip(weights, saved):
                    w.copy_(w0)
        optimizer.step()
        return loss.detach(), logs

    return fit(model, data, epochs=epochs, step=step, **fit_options)
